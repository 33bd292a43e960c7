-- Model versions in service: what happened to them, how shadows compare, and per-minute figures per
-- version for canary comparison and drift alerts (services/registry/monitoring.py reads them).
--
-- model_events        one row per event of a model version in a worker: loaded, load_failed, switched,
--                     switch_refused, run_failed, rolled_back, drift. model is "name:version";
--                     revision: the routing revision concerned; value: load seconds, drift ratio, ...
-- shadow_results      one row per frame a shadow model also saw: what the serving model and the shadow
--                     found (counts and labels), matched pairs (same label, IoU >= 0.5) and their mean IoU.
-- model_minutes       per minute, site and model version: frames, objects, inference latency quantiles
--                     (ms, p50/p95/p99 of inferred - decoded for the frame's batch), mean batch size.
--                     Read with the -Merge combinators: countMerge(frames), quantilesMerge(...)(inference_ms).
-- model_class_minutes per minute, site, model version and label: detections and score quantiles
--                     (p10/p50/p90); detections per frame = detections / frames of model_minutes.
-- The two *_minutes tables are fed by materialized views on inserts into frames and detections, so a
-- replayed insert counts twice there; they are for trends and alerts, the base tables for exact counts.

CREATE TABLE IF NOT EXISTS {db}.model_events
(
    date Date,
    at DateTime,
    at_ms Float64,
    event String,
    model String,
    service String,
    worker String,
    revision Int64,
    detail String,
    value Float64
)
ENGINE = MergeTree()
PARTITION BY toYYYYMM(date)
ORDER BY (at, model, event);

CREATE TABLE IF NOT EXISTS {db}.shadow_results
(
    date Date,
    captured DateTime,
    captured_ms Float64,
    site_id String,
    camera_id String,
    seq UInt64,
    model String,
    shadow String,
    objects UInt16,
    shadow_objects UInt16,
    labels Array(String),
    shadow_labels Array(String),
    matched UInt16,
    mean_iou Float32,
    shadow_ms Float64
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMMDD(date)
ORDER BY (site_id, camera_id, captured, seq, shadow);

CREATE TABLE IF NOT EXISTS {db}.model_minutes
(
    minute DateTime,
    site_id String,
    model_name String,
    model_version String,
    frames AggregateFunction(count),
    objects AggregateFunction(sum, UInt64),
    inference_ms AggregateFunction(quantiles(0.5, 0.95, 0.99), Float64),
    batch AggregateFunction(avg, Float64)
)
ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMMDD(minute)
ORDER BY (site_id, model_name, model_version, minute);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.model_minutes_mv TO {db}.model_minutes AS
SELECT
    toStartOfMinute(captured) AS minute,
    site_id,
    model_name,
    model_version,
    countState() AS frames,
    sumState(toUInt64(objects)) AS objects,
    quantilesState(0.5, 0.95, 0.99)(inferred_ms - decoded_ms) AS inference_ms,
    avgState(toFloat64(batch_size)) AS batch
FROM {db}.frames
GROUP BY minute, site_id, model_name, model_version;

CREATE TABLE IF NOT EXISTS {db}.model_class_minutes
(
    minute DateTime,
    site_id String,
    model_name String,
    model_version String,
    label String,
    detections AggregateFunction(count),
    score AggregateFunction(quantiles(0.1, 0.5, 0.9), Float32)
)
ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMMDD(minute)
ORDER BY (site_id, model_name, model_version, label, minute);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.model_class_minutes_mv TO {db}.model_class_minutes AS
SELECT
    toStartOfMinute(captured) AS minute,
    site_id,
    model_name,
    model_version,
    label,
    countState() AS detections,
    quantilesState(0.1, 0.5, 0.9)(score) AS score
FROM {db}.detections
GROUP BY minute, site_id, model_name, model_version, label;
