-- The core tables: one row per event in what analysts read.
--
-- Works on ClickHouse 18.16 (Debian's package, the local stack) and on a current server. 18.16 has no
-- DateTime64, so each time is a DateTime (seconds, for partitions and ORDER BY) beside a Float64 of
-- epoch milliseconds (the precise value). 18.16 has no column comments either; the columns:
--
-- frames           one row per frame the detector processed.
--   captured/_ms   gateway clock at capture.  seq: per-camera sequence number from the gateway.
--   jpeg_bytes     size of the JPEG the gateway sent.  objects: detections in the frame.
--   *_ms stamps    epoch ms when the frame passed each stage: sent (gateway produce), detector_in,
--                  decoded, inferred, detector_out, sink_in.  Latency of a stage = difference of two.
-- detections       one row per detected object; box corners x1..y2 normalised to [0,1] of the frame;
--                  label is the site class (person, vehicle, ...), class_id the model's own index.
-- violations       one row per incident event (start, update, end); violation_id names the incident.
--                  started_ms: when the incident began; at_ms: this event's time (capture clock).
-- sensor_readings  one row per reading.
-- deadletters      input a worker refused: reason code, detail, and the first 64 KiB of the original.
--
-- Replays after a crash or an outage insert the same rows again: the ReplacingMergeTree tables fold
-- rows with the same ORDER BY key. Read them with FINAL (or argMax) for exact counts.

CREATE TABLE IF NOT EXISTS {db}.frames
(
    date Date,
    captured DateTime,
    captured_ms Float64,
    site_id String,
    camera_id String,
    seq UInt64,
    width UInt16,
    height UInt16,
    jpeg_bytes UInt32,
    model_name String,
    model_version String,
    batch_size UInt16,
    objects UInt16,
    sent_ms Float64,
    detector_in_ms Float64,
    decoded_ms Float64,
    inferred_ms Float64,
    detector_out_ms Float64,
    sink_in_ms Float64,
    inserted_at DateTime DEFAULT now()
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMMDD(date)
ORDER BY (site_id, camera_id, captured, seq);

CREATE TABLE IF NOT EXISTS {db}.detections
(
    date Date,
    captured DateTime,
    captured_ms Float64,
    site_id String,
    camera_id String,
    seq UInt64,
    object_index UInt16,
    label String,
    class_id UInt16,
    score Float32,
    x1 Float32,
    y1 Float32,
    x2 Float32,
    y2 Float32,
    track_id Int64,
    model_name String,
    model_version String
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMMDD(date)
ORDER BY (site_id, camera_id, captured, seq, object_index);

CREATE TABLE IF NOT EXISTS {db}.violations
(
    date Date,
    at DateTime,
    at_ms Float64,
    started_ms Float64,
    violation_id String,
    event Enum8('start' = 1, 'update' = 2, 'end' = 3),
    site_id String,
    rule_id String,
    rule_type String,
    severity String,
    camera_id String,
    zone_id String,
    sensor_id String,
    label String,
    track_id Int64,
    score Float32,
    value Float64,
    source_seq Int64,
    message String,
    captured_ms Float64,
    rules_out_ms Float64,
    sink_in_ms Float64
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMMDD(date)
ORDER BY (site_id, rule_id, at, violation_id, event);

CREATE TABLE IF NOT EXISTS {db}.sensor_readings
(
    date Date,
    captured DateTime,
    captured_ms Float64,
    site_id String,
    sensor_id String,
    seq UInt64,
    value Float64,
    unit String,
    sent_ms Float64,
    sink_in_ms Float64
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMMDD(date)
ORDER BY (site_id, sensor_id, captured, seq);

CREATE TABLE IF NOT EXISTS {db}.deadletters
(
    date Date,
    at DateTime,
    at_ms Float64,
    service String,
    source_topic String,
    partition Int32,
    offset Int64,
    reason String,
    detail String,
    key String,
    original_bytes UInt32,
    original String
)
ENGINE = MergeTree()
PARTITION BY toYYYYMMDD(date)
ORDER BY (at, service, reason);
