"""Contract messages -> ClickHouse rows. Pure functions; column order comes from
aimass.clickhouse.schema, the one place that lists each table's insert columns."""

from __future__ import annotations

import datetime as dt
import functools
import operator

from aimass.clickhouse.schema import COLUMNS
from aimass.contracts import DeadLetter, Detections, Heartbeat, ModelEvent, SensorReading, ShadowResult, Violation

MAX_DEADLETTER_ORIGINAL = 64 * 1024  # the full bytes stay on the Kafka topic
_EPOCH = dt.date(1970, 1, 1)


def _date(ms: float) -> dt.date:
    return _day(int(ms // 86_400_000))


@functools.lru_cache(maxsize=64)
def _day(days: int) -> dt.date:
    return _EPOCH + dt.timedelta(days=days)


def _sec(ms: float) -> int:
    return int(ms // 1000)


_GETTERS = {table: operator.itemgetter(*columns) for table, columns in COLUMNS.items()}


def _ordered(table: str, row: dict) -> tuple:
    """The row's values in the table's insert column order."""
    return _GETTERS[table](row)


# The two tables with a row per frame and per object are written as tuples straight away: building a
# dict per row and ordering it took twice as long (measured 1.4 vs 0.76 us a row), and was most of the
# sink's own work per row. Their order is COLUMNS's; tests/unit/test_sink_rows.py checks every column
# by name. The other tables see few rows and keep the by-name mapping.

def frame_row(d: Detections, sink_in_ms: float) -> tuple:
    s = d.stamps
    return (_date(d.captured_ms), _sec(d.captured_ms), d.captured_ms, d.site_id, d.camera_id, d.seq, d.width, d.height,
            d.jpeg_bytes, d.model_name, d.model_version, d.batch_size, len(d.objects), s.get("sent", 0.0),
            s.get("detector_in", 0.0), s.get("decoded", 0.0), s.get("inferred", 0.0), s.get("detector_out", 0.0),
            sink_in_ms)


def detection_rows(d: Detections) -> list[tuple]:
    date, captured, at = _date(d.captured_ms), _sec(d.captured_ms), d.captured_ms
    site, camera, seq, name, version = d.site_id, d.camera_id, d.seq, d.model_name, d.model_version
    return [(date, captured, at, site, camera, seq, i, o.label, o.class_id, o.score, o.x1, o.y1, o.x2, o.y2, o.track_id,
             name, version) for i, o in enumerate(d.objects)]


def violation_row(v: Violation, sink_in_ms: float) -> tuple:
    return _ordered("violations", {
        "date": _date(v.at_ms), "at": _sec(v.at_ms), "at_ms": v.at_ms, "started_ms": v.started_ms,
        "violation_id": v.violation_id, "event": v.event, "site_id": v.site_id, "rule_id": v.rule_id,
        "rule_type": v.rule_type, "severity": v.severity, "camera_id": v.camera_id, "zone_id": v.zone_id,
        "sensor_id": v.sensor_id, "label": v.label, "track_id": v.track_id, "score": v.score, "value": v.value,
        "source_seq": v.source_seq, "message": v.message, "captured_ms": v.stamps.get("captured", v.at_ms),
        "rules_out_ms": v.stamps.get("rules_out", 0.0), "sink_in_ms": sink_in_ms,
    })


def reading_row(r: SensorReading, sink_in_ms: float) -> tuple:
    return _ordered("sensor_readings", {
        "date": _date(r.captured_ms), "captured": _sec(r.captured_ms), "captured_ms": r.captured_ms,
        "site_id": r.site_id, "sensor_id": r.sensor_id, "seq": r.seq, "value": r.value, "unit": r.unit,
        "sent_ms": r.stamps.get("sent", 0.0), "sink_in_ms": sink_in_ms,
    })


def deadletter_row(m: DeadLetter) -> tuple:
    return _ordered("deadletters", {
        "date": _date(m.at_ms), "at": _sec(m.at_ms), "at_ms": m.at_ms, "service": m.service,
        "source_topic": m.source_topic, "partition": m.partition, "offset": m.offset, "reason": m.reason,
        "detail": m.detail, "key": m.key.decode("utf-8", "replace"), "original_bytes": len(m.original),
        "original": m.original[:MAX_DEADLETTER_ORIGINAL].decode("latin-1"),
    })


def model_event_row(e: ModelEvent) -> tuple:
    return _ordered("model_events", {
        "date": _date(e.at_ms), "at": _sec(e.at_ms), "at_ms": e.at_ms, "event": e.event, "model": e.model,
        "service": e.service, "worker": e.worker, "revision": e.revision, "detail": e.detail, "value": e.value,
    })


def shadow_row(r: ShadowResult) -> tuple:
    return _ordered("shadow_results", {
        "date": _date(r.captured_ms), "captured": _sec(r.captured_ms), "captured_ms": r.captured_ms,
        "site_id": r.site_id, "camera_id": r.camera_id, "seq": r.seq, "model": r.model, "shadow": r.shadow,
        "objects": len(r.objects), "shadow_objects": len(r.shadow_objects), "labels": [o.label for o in r.objects],
        "shadow_labels": [o.label for o in r.shadow_objects], "matched": r.matched, "mean_iou": r.mean_iou,
        "shadow_ms": r.shadow_ms,
    })


_HEARTBEAT_FIELDS = tuple(c for c in COLUMNS["heartbeats"] if c not in ("date", "at", "sink_in_ms"))


def heartbeat_row(h: Heartbeat, sink_in_ms: float) -> tuple:
    return _ordered("heartbeats", {
        "date": _date(h.at_ms), "at": _sec(h.at_ms), "sink_in_ms": sink_in_ms,
        **{f: getattr(h, f) for f in _HEARTBEAT_FIELDS},
    })
