"""A small served history for the registry's monitoring tests (unit on chdb, integration on the real
server): Detections and ModelEvents around a given time, as the sink would insert them.

- det:1, the active model: 60 baseline frames half an hour ago (2 person, 1 vehicle each; a bag on 5),
  and 60 recent frames (1 vehicle each, a person on only 6: persons per frame 2.0 -> 0.1, a drift;
  vehicles unchanged; bags too few to judge). Recent inference 20 ms, batch 4.
- det:2, a canary: 20 recent frames (2 person, 1 vehicle each), inference 40 ms, batch 1; two run
  failures and one load failure.
"""

from __future__ import annotations

import datetime as dt

from aimass.clickhouse.schema import COLUMNS
from aimass.contracts import DetectedObject, Detections, ModelEvent
from aimass_sink.rows import detection_rows, frame_row, model_event_row

SITE = "site-m"


def _frame(model: str, seq: int, at_s: float, labels: list[str], inference_ms: float, batch: int) -> Detections:
    name, version = model.split(":")
    at_ms = at_s * 1000.0
    objects = [DetectedObject(label=lb, class_id=0, score=0.8 if lb == "person" else 0.6, x1=0.1, y1=0.1, x2=0.2, y2=0.3)
               for lb in labels]
    return Detections(site_id=SITE, camera_id=f"cam-{model}", seq=seq, captured_ms=at_ms, width=640, height=480,
                      model_name=name, model_version=version, objects=objects, batch_size=batch,
                      stamps={"decoded": at_ms + 5, "inferred": at_ms + 5 + inference_ms, "detector_out": at_ms + 30})


def messages(now_s: float) -> tuple[list[Detections], list[ModelEvent]]:
    frames = []
    for i in range(60):
        frames.append(_frame("det:1", i, now_s - 1800 - i * 0.5, ["person", "person", "vehicle"] + (["bag"] if i < 5 else []),
                             20.0, 4))
        frames.append(_frame("det:1", 1000 + i, now_s - 10 - i * 0.5, ["vehicle"] + (["person"] if i % 10 == 0 else []),
                             20.0, 4))
    for i in range(20):
        frames.append(_frame("det:2", 2000 + i, now_s - 10 - i * 0.5, ["person", "person", "vehicle"], 40.0, 1))
    events = [ModelEvent(at_ms=(now_s - 20) * 1000, event=e, model=m, service="detector", worker="w:1", detail="t")
              for e, m in (("loaded", "det:1"), ("run_failed", "det:2"), ("run_failed", "det:2"), ("load_failed", "det:2"))]
    return frames, events


def rows(now_s: float) -> dict[str, list[tuple]]:
    """Table -> rows in the sink's column order (aimass.clickhouse.schema.COLUMNS)."""
    frames, events = messages(now_s)
    return {"frames": [frame_row(d, d.captured_ms + 50) for d in frames],
            "detections": [r for d in frames for r in detection_rows(d)],
            "model_events": [model_event_row(e) for e in events]}


def _literal(v) -> str:
    if isinstance(v, str):
        return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(v, dt.date):
        return f"'{v.isoformat()}'"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_literal(x) for x in v) + "]"
    return repr(v)


def insert_sql(table: str, table_rows: list[tuple], database: str = "") -> str:
    """One INSERT ... VALUES statement (for chdb, which has no driver-side inserts)."""
    values = ", ".join("(" + ", ".join(_literal(v) for v in r) + ")" for r in table_rows)
    return f"INSERT INTO {database + '.' if database else ''}{table} ({', '.join(COLUMNS[table])}) VALUES {values}"
