-- Per-minute rollups for dashboards and the analyst cookbook (docs/analyst-cookbook.md), fed by
-- materialized views on the base tables of 001: a dashboard over a month reads thousands of rows
-- here instead of millions there. Works on ClickHouse 18.16 and on a current server.
--
-- camera_minutes     per minute, site and camera: frames, objects detected and JPEG bytes received.
--                    SummingMergeTree: read with sum(frames) ... GROUP BY (rows of one minute may
--                    not be merged yet).  frames per second = sum(frames) / seconds.
-- latency_minutes    per minute, site and camera: latency quantiles (p50, p95, p99, in ms) of each
--                    stage of the frames that carry the gateway's stamps (sent_ms > 0):
--                    transport_ms = detector_in - sent, decode_ms = decoded - detector_in,
--                    inference_ms = inferred - decoded, publish_ms = detector_out - inferred,
--                    to_sink_ms = sink_in - detector_out, end_to_end_ms = sink_in - captured.
--                    Read with quantilesMerge(0.5, 0.95, 0.99)(end_to_end_ms).
-- class_minutes      per minute, site, label and camera: detections and the sum of their scores
--                    (mean score = sum(score_sum) / sum(detections)).
-- violation_minutes  per minute, site, zone, rule and source (camera or sensor): incident starts,
--                    updates and ends. zone_id is the rule's zone ('' for sensor and correlation rules).
-- sensor_minutes     per minute, site and sensor: readings and min, max and mean value. Read with
--                    countMerge(readings), minMerge(value_min), maxMerge(value_max), avgMerge(value_avg).
--
-- The views see every insert, so a batch the sink replays after a crash counts twice here (the
-- base tables fold replays with FINAL): rollups are for trends and dashboards, the base tables for
-- exact counts. Rollups are partitioned by month (they are small); the base tables by day.

CREATE TABLE IF NOT EXISTS {db}.camera_minutes
(
    minute DateTime,
    site_id String,
    camera_id String,
    frames UInt64,
    objects UInt64,
    jpeg_bytes UInt64
)
ENGINE = SummingMergeTree()
PARTITION BY toYYYYMM(minute)
ORDER BY (site_id, camera_id, minute);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.camera_minutes_mv TO {db}.camera_minutes AS
SELECT
    toStartOfMinute(captured) AS minute,
    site_id,
    camera_id,
    count() AS frames,
    sum(toUInt64(objects)) AS objects,
    sum(toUInt64(jpeg_bytes)) AS jpeg_bytes
FROM {db}.frames
GROUP BY minute, site_id, camera_id;

CREATE TABLE IF NOT EXISTS {db}.latency_minutes
(
    minute DateTime,
    site_id String,
    camera_id String,
    transport_ms AggregateFunction(quantiles(0.5, 0.95, 0.99), Float64),
    decode_ms AggregateFunction(quantiles(0.5, 0.95, 0.99), Float64),
    inference_ms AggregateFunction(quantiles(0.5, 0.95, 0.99), Float64),
    publish_ms AggregateFunction(quantiles(0.5, 0.95, 0.99), Float64),
    to_sink_ms AggregateFunction(quantiles(0.5, 0.95, 0.99), Float64),
    end_to_end_ms AggregateFunction(quantiles(0.5, 0.95, 0.99), Float64)
)
ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(minute)
ORDER BY (site_id, camera_id, minute);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.latency_minutes_mv TO {db}.latency_minutes AS
SELECT
    toStartOfMinute(captured) AS minute,
    site_id,
    camera_id,
    quantilesState(0.5, 0.95, 0.99)(detector_in_ms - sent_ms) AS transport_ms,
    quantilesState(0.5, 0.95, 0.99)(decoded_ms - detector_in_ms) AS decode_ms,
    quantilesState(0.5, 0.95, 0.99)(inferred_ms - decoded_ms) AS inference_ms,
    quantilesState(0.5, 0.95, 0.99)(detector_out_ms - inferred_ms) AS publish_ms,
    quantilesState(0.5, 0.95, 0.99)(sink_in_ms - detector_out_ms) AS to_sink_ms,
    quantilesState(0.5, 0.95, 0.99)(sink_in_ms - captured_ms) AS end_to_end_ms
FROM {db}.frames
WHERE sent_ms > 0
GROUP BY minute, site_id, camera_id;

CREATE TABLE IF NOT EXISTS {db}.class_minutes
(
    minute DateTime,
    site_id String,
    label String,
    camera_id String,
    detections UInt64,
    score_sum Float64
)
ENGINE = SummingMergeTree()
PARTITION BY toYYYYMM(minute)
ORDER BY (site_id, label, camera_id, minute);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.class_minutes_mv TO {db}.class_minutes AS
SELECT
    toStartOfMinute(captured) AS minute,
    site_id,
    label,
    camera_id,
    count() AS detections,
    sum(toFloat64(score)) AS score_sum
FROM {db}.detections
GROUP BY minute, site_id, label, camera_id;

CREATE TABLE IF NOT EXISTS {db}.violation_minutes
(
    minute DateTime,
    site_id String,
    zone_id String,
    rule_id String,
    rule_type String,
    severity String,
    camera_id String,
    sensor_id String,
    starts UInt64,
    updates UInt64,
    ends UInt64
)
ENGINE = SummingMergeTree()
PARTITION BY toYYYYMM(minute)
ORDER BY (site_id, zone_id, rule_id, minute, camera_id, sensor_id, rule_type, severity);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.violation_minutes_mv TO {db}.violation_minutes AS
SELECT
    toStartOfMinute(at) AS minute,
    site_id,
    zone_id,
    rule_id,
    rule_type,
    severity,
    camera_id,
    sensor_id,
    toUInt64(countIf(event = 'start')) AS starts,
    toUInt64(countIf(event = 'update')) AS updates,
    toUInt64(countIf(event = 'end')) AS ends
FROM {db}.violations
GROUP BY minute, site_id, zone_id, rule_id, rule_type, severity, camera_id, sensor_id;

CREATE TABLE IF NOT EXISTS {db}.sensor_minutes
(
    minute DateTime,
    site_id String,
    sensor_id String,
    unit String,
    readings AggregateFunction(count),
    value_min AggregateFunction(min, Float64),
    value_max AggregateFunction(max, Float64),
    value_avg AggregateFunction(avg, Float64)
)
ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(minute)
ORDER BY (site_id, sensor_id, minute, unit);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.sensor_minutes_mv TO {db}.sensor_minutes AS
SELECT
    toStartOfMinute(captured) AS minute,
    site_id,
    sensor_id,
    unit,
    countState() AS readings,
    minState(value) AS value_min,
    maxState(value) AS value_max,
    avgState(value) AS value_avg
FROM {db}.sensor_readings
GROUP BY minute, site_id, sensor_id, unit;
