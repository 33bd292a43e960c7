"""How each model version does in service, from ClickHouse (migrations 001 and 002): a comparison of
the versions serving now (canary against active), detection-rate drift against a baseline, and the
detectors' model events.

Figures come from the per-minute tables ``model_minutes`` and ``model_class_minutes`` (materialized
views on inserts into ``frames`` and ``detections``), so windows are whole minutes: a window of W
seconds is the last ceil(W / 60) minutes, the current one included. The SQL runs on ClickHouse 18.16
(no DateTime64, no toStartOfInterval, no server-side parameters: times are literal epoch seconds, strings
are quoted here) and on a current ClickHouse. Each function takes a clickhouse-driver ``Client`` (or
anything with its ``execute(sql, with_column_types=True)``) and returns ``(columns, rows)``.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections import defaultdict

from aimass.clickhouse.client import query_rows

MIN_DETECTIONS = 20  # see drift()


def quote(text: str) -> str:
    """A ClickHouse string literal."""
    return "'" + str(text).replace("\\", "\\\\").replace("'", "\\'") + "'"


def minute_window(seconds: float, now_s: float | None = None) -> tuple[int, int]:
    """(since, until) in epoch seconds: the last ceil(seconds / 60) whole minutes up to and including
    the current one."""
    now_s = time.time() if now_s is None else now_s
    until = int(now_s // 60) * 60 + 60
    return until - max(1, math.ceil(seconds / 60)) * 60, until


def _between(column: str, since: int, until: int) -> str:
    return f"{column} >= toDateTime({int(since)}) AND {column} < toDateTime({int(until)})"


def _r(x, digits: int = 3):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), digits)


COMPARE_COLUMNS = ["model", "frames", "objects_per_frame", "p50_ms", "p95_ms", "p99_ms", "mean_batch",
                   "run_failures", "load_failures", "label", "detections_per_frame", "median_score"]


def compare(client, window_s: float, site_id: str | None = None, now_s: float | None = None):
    """Per model version over the window: frames, objects per frame, inference latency p50/p95/p99 (ms,
    per batch run), mean batch size, run failures and load failures (model_events), and per site label
    its detections per frame and median score. One row per (version, label); a version without
    detections has one row with label "". Model events carry no site: with ``site_id`` the failure
    counts are still every site's, and versions that served no frame there are left out. Set side by side, a canary's rows against the active's
    show whether it finds more or fewer of each label, with what confidence, how fast."""
    since, until = minute_window(window_s, now_s)
    site = f" AND site_id = {quote(site_id)}" if site_id else ""
    where = _between("minute", since, until) + site
    _, versions = query_rows(client, f"""
        SELECT concat(model_name, ':', model_version) AS model, countMerge(frames) AS n_frames,
               sumMerge(objects) AS n_objects, quantilesMerge(0.5, 0.95, 0.99)(inference_ms) AS q,
               avgMerge(batch) AS mean_batch
        FROM model_minutes WHERE {where}
        GROUP BY model_name, model_version""")
    _, labels = query_rows(client, f"""
        SELECT concat(model_name, ':', model_version) AS model, label, countMerge(detections) AS n,
               quantilesMerge(0.1, 0.5, 0.9)(score) AS s
        FROM model_class_minutes WHERE {where}
        GROUP BY model_name, model_version, label""")
    _, failures = query_rows(client, f"""
        SELECT model, countIf(event = 'run_failed') AS runs, countIf(event IN ('load_failed', 'switch_refused')) AS loads
        FROM model_events WHERE {_between('at', since, until)}
        GROUP BY model""")
    per_version = {m: (int(n), int(o), list(q), b) for m, n, o, q, b in versions}
    fails = {m: (int(r), int(lo)) for m, r, lo in failures}
    by_label: dict[str, list] = defaultdict(list)
    for m, label, n, s in labels:
        by_label[m].append((label, int(n), list(s)))
    rows = []
    served = set(per_version) | set(by_label)
    for model in sorted(served if site_id else served | set(fails)):
        n, objects, q, batch = per_version.get(model, (0, 0, [None] * 3, None))
        head = (model, n, _r(objects / n) if n else None, _r(q[0], 1), _r(q[1], 1), _r(q[2], 1), _r(batch, 2),
                *fails.get(model, (0, 0)))
        entries = sorted(by_label.get(model, []))
        if not entries:
            rows.append((*head, "", None, None))
        for label, count, s in entries:
            rows.append((*head, label, _r(count / n) if n else None, _r(s[1])))
    return list(COMPARE_COLUMNS), rows


DRIFT_COLUMNS = ["model", "label", "baseline_frames", "baseline_per_frame", "recent_frames", "recent_per_frame",
                 "ratio"]


def drift(client, window_s: float, baseline_s: float, threshold: float, now_s: float | None = None,
          min_detections: int = MIN_DETECTIONS):
    """Versions whose detections per frame of a label changed by more than ``threshold`` (relative:
    0.5 = half as many or 1.5 times as many) in the recent window against the baseline window just
    before it. ``ratio`` is recent / baseline.

    A (version, label) is judged only where both windows can show a change:
    - the version served frames in both windows (one that stopped serving, a canary that ended, is
      not drifting);
    - the baseline has at least ``min_detections`` detections of the label: with n detections the
      baseline rate is known to about 1/sqrt(n) (±22 % at 20), so a thinner baseline would flag noise
      as drift; a label that was (nearly) never seen has no rate to drift from (a label that appears
      from nowhere shows in ``compare``);
    - at the baseline rate the recent window would hold at least ``min_detections`` detections too,
      so a short recent window where a rare label is simply absent is not a drop to zero.
    A label that was seen at the baseline rate and is now gone (ratio 0) is drift: a model that stops
    seeing people is the failure this alert exists for."""
    since_recent, until = minute_window(window_s, now_s)
    since = since_recent - max(1, math.ceil(baseline_s / 60)) * 60
    part = f"if(minute >= toDateTime({since_recent}), 'recent', 'baseline')"
    where = _between("minute", since, until)
    _, frames = query_rows(client, f"""
        SELECT concat(model_name, ':', model_version) AS model, {part} AS part, countMerge(frames) AS n
        FROM model_minutes WHERE {where}
        GROUP BY model_name, model_version, part""")
    _, labels = query_rows(client, f"""
        SELECT concat(model_name, ':', model_version) AS model, label, {part} AS part, countMerge(detections) AS n
        FROM model_class_minutes WHERE {where}
        GROUP BY model_name, model_version, label, part""")
    n_frames: dict[tuple[str, str], int] = {(m, p): int(n) for m, p, n in frames}
    dets: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    for m, label, p, n in labels:
        dets[(m, label)][p] = int(n)
    rows = []
    for (model, label), counts in sorted(dets.items()):
        fb, fr = n_frames.get((model, "baseline"), 0), n_frames.get((model, "recent"), 0)
        db, dr = counts.get("baseline", 0), counts.get("recent", 0)
        if fb == 0 or fr == 0 or db < min_detections:
            continue
        base_rate, recent_rate = db / fb, dr / fr
        if base_rate * fr < min_detections:
            continue
        ratio = recent_rate / base_rate
        if abs(ratio - 1.0) > threshold:
            rows.append((model, label, fb, _r(base_rate, 4), fr, _r(recent_rate, 4), _r(ratio, 4)))
    return list(DRIFT_COLUMNS), rows


EVENT_COLUMNS = ["at", "event", "model", "service", "worker", "revision", "detail", "value"]


def events(client, limit: int = 50, model: str | None = None):
    """The latest model events (loaded, load_failed, switched, switch_refused, run_failed, rolled_back,
    drift), newest first; ``at`` in UTC."""
    where = f"WHERE model = {quote(model)}" if model else ""
    _, rows = query_rows(client, f"""
        SELECT at_ms, event, model, service, worker, revision, detail, value
        FROM model_events {where} ORDER BY at_ms DESC LIMIT {max(1, int(limit))}""")
    out = [(dt.datetime.fromtimestamp(r[0] / 1000.0, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"), *r[1:])
           for r in rows]
    return list(EVENT_COLUMNS), out


def parse_duration(text: str | float | int) -> float:
    """"10m", "1h", "90s", "2d" or a number of seconds -> seconds."""
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        s = str(text).strip().lower()
        units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
        try:
            value = float(s[:-1]) * units[s[-1]] if s and s[-1] in units else float(s)
        except ValueError:
            raise ValueError(f"{text!r} is not a duration; write e.g. 90s, 10m, 1h or 2d") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{text!r} is not a positive duration")
    return value
