"""The SQL the demo report and the live table run. Each query works on ClickHouse 18.16 and on a
current server (tests run them on both)."""

from __future__ import annotations

# (stage name, SQL expression over the frames table, in ms)
STAGES = [
    ("gateway→detector", "detector_in_ms - sent_ms"),
    ("decode", "decoded_ms - detector_in_ms"),
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
