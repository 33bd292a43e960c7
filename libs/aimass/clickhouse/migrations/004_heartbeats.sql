-- Gateway health: one row per heartbeat (aimass.contracts.Heartbeat), from each gateway every
-- heartbeat_interval_s for itself (camera_id = '') and for each of its cameras.
--
-- heartbeats       at/_ms: the gateway's clock when it was made; started_ms: when the gateway process
--                  started (counters are cumulative since then).  status: ok, idle, reconnecting,
--                  stopped, spooling.  fps / read_fps: frames sent / read per second over the last
--                  interval.  frames_skipped: read but held back by the motion gate.  bytes_sent: JPEG
--                  bytes sent.  last_frame_ms: capture time of the last frame read from the source
--                  (0: none yet); a camera whose heartbeats go on while last_frame_ms stands still has
--                  a silent source.  spool_*: messages waiting on disk for the broker, and dropped
--                  from a full spool.  clock_offset_ms: reference clock minus gateway clock, measured
--                  against clock_source ('' = not measured) with round trip clock_rtt_ms.
-- A replayed insert folds on (site_id, gateway_id, camera_id, at, at_ms): read with FINAL.

CREATE TABLE IF NOT EXISTS {db}.heartbeats
(
    date Date,
    at DateTime,
    at_ms Float64,
    site_id String,
    gateway_id String,
    camera_id String,
    started_ms Float64,
    interval_s Float32,
    status String,
    fps Float32,
    read_fps Float32,
    frames_read UInt64,
    frames_sent UInt64,
    frames_skipped UInt64,
    bytes_sent UInt64,
    last_frame_ms Float64,
    errors UInt64,
    reconnects UInt64,
    last_error String,
    readings_sent UInt64,
    readings_refused UInt64,
    send_errors UInt64,
    spool_messages UInt64,
    spool_bytes UInt64,
    spool_dropped UInt64,
    clock_offset_ms Float64,
    clock_rtt_ms Float64,
    clock_source String,
    clock_measured_ms Float64,
    sink_in_ms Float64
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMMDD(date)
ORDER BY (site_id, gateway_id, camera_id, at, at_ms);
