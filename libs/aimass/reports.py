"""The SQL the demo report and the live table run. Each query works on ClickHouse 18.16 and on a
current server (tests run them on both)."""

from __future__ import annotations

# (stage name, SQL expression over the frames table, in ms)
STAGES = [
    ("gateway→detector", "detector_in_ms - sent_ms"),
    ("decode + model wait", "decoded_ms - detector_in_ms"),  # batches overlap: a decoded batch waits its turn
    ("inference", "inferred_ms - decoded_ms"),
    ("publish", "detector_out_ms - inferred_ms"),
    ("detector→sink", "sink_in_ms - detector_out_ms"),
    ("capture→sink (end to end)", "sink_in_ms - captured_ms"),
]


def latency_by_stage(where: str = "1") -> str:
    parts = [
        f"SELECT {i} AS step, '{name}' AS stage, count() AS frames, "
        f"round(quantile(0.5)({expr}), 1) AS p50_ms, round(quantile(0.95)({expr}), 1) AS p95_ms, "
        f"round(quantile(0.99)({expr}), 1) AS p99_ms FROM frames FINAL WHERE {where} AND sent_ms > 0"
        for i, (name, expr) in enumerate(STAGES, 1)
    ]
    parts.append(
        f"SELECT {len(STAGES) + 1} AS step, 'capture→violation (rules)' AS stage, count() AS frames, "
        "round(quantile(0.5)(rules_out_ms - captured_ms), 1) AS p50_ms, "
        "round(quantile(0.95)(rules_out_ms - captured_ms), 1) AS p95_ms, "
        "round(quantile(0.99)(rules_out_ms - captured_ms), 1) AS p99_ms "
        f"FROM violations FINAL WHERE {where.replace('captured_ms', 'at_ms')} AND rules_out_ms > 0"
    )
    return f"SELECT stage, frames, p50_ms, p95_ms, p99_ms FROM ({' UNION ALL '.join(parts)}) ORDER BY step"


VIOLATIONS_BY_RULE_AND_CAMERA = """
SELECT rule_id, rule_type, if(camera_id != '', camera_id, sensor_id) AS source, severity,
       countIf(event = 'start') AS incidents, countIf(event = 'end') AS ended,
       formatDateTime(toDateTime(min(started_ms) / 1000), '%H:%M:%S') AS first_utc
FROM violations FINAL
GROUP BY rule_id, rule_type, source, severity
ORDER BY incidents DESC, rule_id
"""

DETECTIONS_BY_CLASS = """
SELECT label, count() AS detections, uniqExact(camera_id, seq) AS frames_with_label,
       round(avg(score), 3) AS avg_score
FROM detections FINAL
GROUP BY label
ORDER BY detections DESC
"""

FRAMES_BY_CAMERA = """
SELECT camera_id, count() AS frames, sum(objects) AS objects, round(avg(batch_size), 2) AS avg_batch,
       round(sum(jpeg_bytes) / count() / 1024, 1) AS avg_jpeg_kib
FROM frames FINAL
GROUP BY camera_id
ORDER BY camera_id
"""

DEADLETTERS_BY_REASON = """
SELECT service, source_topic, reason, count() AS messages FROM deadletters
GROUP BY service, source_topic, reason ORDER BY messages DESC
"""


def silent_cameras(after_s: float = 60.0, now_ms: float | None = None, lookback_days: int = 7) -> str:
    """Cameras that went silent: no frame for ``after_s`` seconds (the last frame a gateway read from
    the camera, as its heartbeats report, or the last frame in ``frames``), or whose gateway's
    heartbeats stopped that long ago. ``reason``: 'no heartbeat' when the gateway went quiet, else
    'no frames' (the gateway is alive; the camera or its network is not). Cameras seen in the last
    ``lookback_days`` days only. ``now_ms`` (epoch ms) replaces the server's clock, for tests."""
    now = f"{float(now_ms):.3f}" if now_ms is not None else "toFloat64(toUInt32(now())) * 1000"
    cutoff = f"({now} - {float(after_s) * 1000:.3f})"
    return f"""
SELECT site_id, camera_id, gateway_id, status, last_error,
       if(last_heartbeat_ms > 0 AND last_heartbeat_ms < {cutoff}, 'no heartbeat', 'no frames') AS reason,
       round(({now} - last_frame_ms) / 1000, 1) AS silent_s,
       last_frame_ms, last_heartbeat_ms
FROM
(
    SELECT site_id, camera_id, argMax(gw, hb) AS gateway_id, argMax(st, hb) AS status, argMax(err, hb) AS last_error,
           max(hb) AS last_heartbeat_ms, max(fr) AS last_frame_ms
    FROM
    (
        SELECT site_id, camera_id, gateway_id AS gw, status AS st, last_error AS err, at_ms AS hb,
               last_frame_ms AS fr
        FROM heartbeats
        WHERE camera_id != '' AND date >= today() - {int(lookback_days)}
        UNION ALL
        SELECT site_id, camera_id, '' AS gw, '' AS st, '' AS err, toFloat64(0) AS hb, captured_ms AS fr
        FROM frames
        WHERE date >= today() - {int(lookback_days)}
    )
    GROUP BY site_id, camera_id
)
WHERE last_frame_ms < {cutoff} OR (last_heartbeat_ms > 0 AND last_heartbeat_ms < {cutoff})
ORDER BY site_id, camera_id
"""
