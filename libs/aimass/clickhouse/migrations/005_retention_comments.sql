-- requires-server: 23.9
-- Retention (TTL) and comments on every table and column an analyst reads: what a current
-- ClickHouse has and 18.16 lacks (TTL came in 19.6, column comments in 20.x, ALTER TABLE ... MODIFY
-- COMMENT for tables in 23.9). On an older server this file waits, unrecorded, for the upgrade; there
-- `aimass retention` drops old partitions instead (see libs/aimass/clickhouse/retention.py).
--
-- The TTL days here are the defaults of the AIMASS_RETENTION_*_DAYS settings (a unit test keeps the
-- two equal). The settings stay the authority: `aimass retention` drops what is older than they say
-- on any server, and `aimass retention --ttl` rewrites these TTLs to them on a current one.
-- ttl_only_drop_parts: rows expire a whole part at a time (the tables are partitioned by day or month),
-- so expiry drops files instead of rewriting them.

ALTER TABLE {db}.frames MODIFY SETTING ttl_only_drop_parts = 1;
ALTER TABLE {db}.frames MODIFY TTL date + toIntervalDay(30);
ALTER TABLE {db}.detections MODIFY SETTING ttl_only_drop_parts = 1;
ALTER TABLE {db}.detections MODIFY TTL date + toIntervalDay(30);
ALTER TABLE {db}.violations MODIFY SETTING ttl_only_drop_parts = 1;
ALTER TABLE {db}.violations MODIFY TTL date + toIntervalDay(365);
ALTER TABLE {db}.sensor_readings MODIFY SETTING ttl_only_drop_parts = 1;
ALTER TABLE {db}.sensor_readings MODIFY TTL date + toIntervalDay(90);
ALTER TABLE {db}.deadletters MODIFY SETTING ttl_only_drop_parts = 1;
ALTER TABLE {db}.deadletters MODIFY TTL date + toIntervalDay(14);
ALTER TABLE {db}.model_events MODIFY SETTING ttl_only_drop_parts = 1;
ALTER TABLE {db}.model_events MODIFY TTL date + toIntervalDay(365);
ALTER TABLE {db}.shadow_results MODIFY SETTING ttl_only_drop_parts = 1;
ALTER TABLE {db}.shadow_results MODIFY TTL date + toIntervalDay(30);
ALTER TABLE {db}.model_minutes MODIFY TTL minute + toIntervalDay(395);
ALTER TABLE {db}.model_class_minutes MODIFY TTL minute + toIntervalDay(395);
ALTER TABLE {db}.camera_minutes MODIFY TTL minute + toIntervalDay(395);
ALTER TABLE {db}.latency_minutes MODIFY TTL minute + toIntervalDay(395);
ALTER TABLE {db}.class_minutes MODIFY TTL minute + toIntervalDay(395);
ALTER TABLE {db}.violation_minutes MODIFY TTL minute + toIntervalDay(395);
ALTER TABLE {db}.sensor_minutes MODIFY TTL minute + toIntervalDay(395);

ALTER TABLE {db}.frames MODIFY COMMENT 'One row per frame the detector processed, with the time it passed each stage. ReplacingMergeTree: read with FINAL for exact counts. Kept 30 days.';
ALTER TABLE {db}.frames
    COMMENT COLUMN date 'UTC day of captured (the partition key)',
    COMMENT COLUMN captured 'gateway clock at capture, whole seconds (UTC)',
    COMMENT COLUMN captured_ms 'gateway clock at capture, epoch milliseconds',
    COMMENT COLUMN site_id 'site id from the site file',
    COMMENT COLUMN camera_id 'camera id from the site file',
    COMMENT COLUMN seq 'per-camera sequence number from the gateway',
    COMMENT COLUMN width 'frame width in pixels as sent',
    COMMENT COLUMN height 'frame height in pixels as sent',
    COMMENT COLUMN jpeg_bytes 'size of the JPEG the gateway sent',
    COMMENT COLUMN model_name 'detection model that served the frame',
    COMMENT COLUMN model_version 'version of that model',
    COMMENT COLUMN batch_size 'frames in the inference batch this frame was part of',
    COMMENT COLUMN objects 'objects detected in the frame (rows in detections)',
    COMMENT COLUMN sent_ms 'epoch ms when the gateway produced the frame to Kafka (0: not stamped)',
    COMMENT COLUMN detector_in_ms 'epoch ms when the detector took the frame from Kafka',
    COMMENT COLUMN decoded_ms 'epoch ms when the detector had decoded the JPEG',
    COMMENT COLUMN inferred_ms 'epoch ms when the model run of its batch ended',
    COMMENT COLUMN detector_out_ms 'epoch ms when the detector produced the detections to Kafka',
    COMMENT COLUMN sink_in_ms 'epoch ms when the sink took the detections from Kafka',
    COMMENT COLUMN inserted_at 'server clock when the row was inserted';

ALTER TABLE {db}.detections MODIFY COMMENT 'One row per detected object. ReplacingMergeTree: read with FINAL. Kept 30 days.';
ALTER TABLE {db}.detections
    COMMENT COLUMN date 'UTC day of captured (the partition key)',
    COMMENT COLUMN captured 'capture time of the frame, whole seconds (UTC)',
    COMMENT COLUMN captured_ms 'capture time of the frame, epoch milliseconds',
    COMMENT COLUMN site_id 'site id',
    COMMENT COLUMN camera_id 'camera id',
    COMMENT COLUMN seq 'the frame''s per-camera sequence number (joins frames on camera_id, seq)',
    COMMENT COLUMN object_index 'position of the object in the frame''s detections',
    COMMENT COLUMN label 'site class (person, vehicle, bag, ...)',
    COMMENT COLUMN class_id 'the model''s own class index',
    COMMENT COLUMN score 'detector confidence, 0 to 1',
    COMMENT COLUMN x1 'box left, normalised to [0, 1] of the frame width',
    COMMENT COLUMN y1 'box top, normalised to [0, 1] of the frame height',
    COMMENT COLUMN x2 'box right, normalised',
    COMMENT COLUMN y2 'box bottom, normalised (the object stands at ((x1 + x2) / 2, y2))',
    COMMENT COLUMN track_id 'per-camera track id (0: not tracked)',
    COMMENT COLUMN model_name 'detection model',
    COMMENT COLUMN model_version 'its version';

ALTER TABLE {db}.violations MODIFY COMMENT 'One row per incident event: start, update (while it lasts), end. violation_id names the incident. ReplacingMergeTree: read with FINAL. Kept 365 days.';
ALTER TABLE {db}.violations
    COMMENT COLUMN date 'UTC day of at (the partition key)',
    COMMENT COLUMN at 'time of this event, whole seconds (UTC, capture clock)',
    COMMENT COLUMN at_ms 'time of this event, epoch milliseconds',
    COMMENT COLUMN started_ms 'when the incident began, epoch milliseconds',
    COMMENT COLUMN violation_id 'the incident id, shared by its start, updates and end',
    COMMENT COLUMN event 'start, update or end',
    COMMENT COLUMN site_id 'site id',
    COMMENT COLUMN rule_id 'rule id from the site file',
    COMMENT COLUMN rule_type 'zone_intrusion, line_crossing, dwell, stopped, left_behind, occupancy, sensor_threshold, sensor_rate, sensor_stale, correlation',
    COMMENT COLUMN severity 'low, medium, high or critical',
    COMMENT COLUMN camera_id 'camera of a camera rule, else empty',
    COMMENT COLUMN zone_id 'zone of a zone rule, else empty',
    COMMENT COLUMN sensor_id 'sensor of a sensor rule, else empty',
    COMMENT COLUMN label 'class of the object that caused it',
    COMMENT COLUMN track_id 'track of the object that caused it (0: none)',
    COMMENT COLUMN score 'detector confidence of that object',
    COMMENT COLUMN value 'sensor value, rate or object count that caused it',
    COMMENT COLUMN source_seq 'frame or reading sequence number that caused it',
    COMMENT COLUMN message 'human-readable description',
    COMMENT COLUMN captured_ms 'capture time of the input that caused it, epoch ms',
    COMMENT COLUMN rules_out_ms 'epoch ms when the rules worker produced the event',
    COMMENT COLUMN sink_in_ms 'epoch ms when the sink took the event from Kafka';

ALTER TABLE {db}.sensor_readings MODIFY COMMENT 'One row per sensor reading. ReplacingMergeTree: read with FINAL. Kept 90 days.';
ALTER TABLE {db}.sensor_readings
    COMMENT COLUMN date 'UTC day of captured (the partition key)',
    COMMENT COLUMN captured 'gateway clock at reading, whole seconds (UTC)',
    COMMENT COLUMN captured_ms 'gateway clock at reading, epoch milliseconds',
    COMMENT COLUMN site_id 'site id',
    COMMENT COLUMN sensor_id 'sensor id from the site file',
    COMMENT COLUMN seq 'per-sensor sequence number from the gateway',
    COMMENT COLUMN value 'the reading, in unit',
    COMMENT COLUMN unit 'C, %, ppm, kW, ... (empty for on/off sensors: 0 or 1)',
    COMMENT COLUMN sent_ms 'epoch ms when the gateway produced it to Kafka',
    COMMENT COLUMN sink_in_ms 'epoch ms when the sink took it from Kafka';

ALTER TABLE {db}.deadletters MODIFY COMMENT 'Input a worker refused, with the reason; the full original stays on the deadletter topic. Kept 14 days.';
ALTER TABLE {db}.deadletters
    COMMENT COLUMN date 'UTC day of at (the partition key)',
    COMMENT COLUMN at 'when it was refused, whole seconds (UTC)',
    COMMENT COLUMN at_ms 'when it was refused, epoch milliseconds',
    COMMENT COLUMN service 'the worker that refused it',
    COMMENT COLUMN source_topic 'topic the message came from',
    COMMENT COLUMN partition 'its partition',
    COMMENT COLUMN offset 'its offset',
    COMMENT COLUMN reason 'reason code (bad_encoding, bad_jpeg, empty, unknown_source, ...)',
    COMMENT COLUMN detail 'what exactly was wrong',
    COMMENT COLUMN key 'the message key',
    COMMENT COLUMN original_bytes 'size of the original message',
    COMMENT COLUMN original 'its first 64 KiB, latin-1';

ALTER TABLE {db}.model_events MODIFY COMMENT 'Model versions in the workers: loaded, load_failed, switched, switch_refused, run_failed, rolled_back, drift. Kept 365 days.';
ALTER TABLE {db}.model_events
    COMMENT COLUMN date 'UTC day of at (the partition key)',
    COMMENT COLUMN at 'when it happened, whole seconds (UTC)',
    COMMENT COLUMN at_ms 'when it happened, epoch milliseconds',
    COMMENT COLUMN event 'loaded, load_failed, switched, switch_refused, run_failed, rolled_back or drift',
    COMMENT COLUMN model 'name:version',
    COMMENT COLUMN service 'the service that reported it',
    COMMENT COLUMN worker 'the worker process',
    COMMENT COLUMN revision 'the routing revision concerned',
    COMMENT COLUMN detail 'what happened, in words',
    COMMENT COLUMN value 'load seconds, drift ratio, ...';

ALTER TABLE {db}.shadow_results MODIFY COMMENT 'One row per frame a shadow model also saw: serving and shadow results side by side. Kept 30 days.';
ALTER TABLE {db}.shadow_results
    COMMENT COLUMN date 'UTC day of captured (the partition key)',
    COMMENT COLUMN captured 'capture time of the frame, whole seconds (UTC)',
    COMMENT COLUMN captured_ms 'capture time of the frame, epoch milliseconds',
    COMMENT COLUMN site_id 'site id',
    COMMENT COLUMN camera_id 'camera id',
    COMMENT COLUMN seq 'the frame''s per-camera sequence number',
    COMMENT COLUMN model 'the serving model, name:version',
    COMMENT COLUMN shadow 'the shadow model, name:version',
    COMMENT COLUMN objects 'objects the serving model found',
    COMMENT COLUMN shadow_objects 'objects the shadow found',
    COMMENT COLUMN labels 'labels the serving model found',
    COMMENT COLUMN shadow_labels 'labels the shadow found',
    COMMENT COLUMN matched 'pairs with the same label and IoU >= 0.5',
    COMMENT COLUMN mean_iou 'mean IoU of the matched pairs',
    COMMENT COLUMN shadow_ms 'the shadow''s inference time, ms';

ALTER TABLE {db}.model_minutes MODIFY COMMENT 'Per minute, site and model version (from frames): read with countMerge(frames), sumMerge(objects), quantilesMerge(0.5, 0.95, 0.99)(inference_ms), avgMerge(batch). Kept 395 days.';
ALTER TABLE {db}.model_minutes
    COMMENT COLUMN minute 'start of the minute (UTC)',
    COMMENT COLUMN site_id 'site id',
    COMMENT COLUMN model_name 'detection model',
    COMMENT COLUMN model_version 'its version',
    COMMENT COLUMN frames 'frames served: countMerge(frames)',
    COMMENT COLUMN objects 'objects detected: sumMerge(objects)',
    COMMENT COLUMN inference_ms 'inferred - decoded, ms: quantilesMerge(0.5, 0.95, 0.99)(inference_ms)',
    COMMENT COLUMN batch 'mean batch size: avgMerge(batch)';

ALTER TABLE {db}.model_class_minutes MODIFY COMMENT 'Per minute, site, model version and label (from detections): countMerge(detections), quantilesMerge(0.1, 0.5, 0.9)(score). Kept 395 days.';
ALTER TABLE {db}.model_class_minutes
    COMMENT COLUMN minute 'start of the minute (UTC)',
    COMMENT COLUMN site_id 'site id',
    COMMENT COLUMN model_name 'detection model',
    COMMENT COLUMN model_version 'its version',
    COMMENT COLUMN label 'site class',
    COMMENT COLUMN detections 'detections: countMerge(detections)',
    COMMENT COLUMN score 'score quantiles: quantilesMerge(0.1, 0.5, 0.9)(score)';

ALTER TABLE {db}.camera_minutes MODIFY COMMENT 'Per minute, site and camera (from frames): frames, objects and JPEG bytes; read with sum() and GROUP BY. Kept 395 days.';
ALTER TABLE {db}.camera_minutes
    COMMENT COLUMN minute 'start of the minute (UTC)',
    COMMENT COLUMN site_id 'site id',
    COMMENT COLUMN camera_id 'camera id',
    COMMENT COLUMN frames 'frames stored: sum(frames)',
    COMMENT COLUMN objects 'objects detected: sum(objects)',
    COMMENT COLUMN jpeg_bytes 'JPEG bytes received: sum(jpeg_bytes)';

ALTER TABLE {db}.latency_minutes MODIFY COMMENT 'Per minute, site and camera (from frames with stamps): latency quantiles per stage, ms; read with quantilesMerge(0.5, 0.95, 0.99)(column). Kept 395 days.';
ALTER TABLE {db}.latency_minutes
    COMMENT COLUMN minute 'start of the minute (UTC)',
    COMMENT COLUMN site_id 'site id',
    COMMENT COLUMN camera_id 'camera id',
    COMMENT COLUMN transport_ms 'gateway to detector: detector_in - sent',
    COMMENT COLUMN decode_ms 'JPEG decode: decoded - detector_in',
    COMMENT COLUMN inference_ms 'batch wait and model run: inferred - decoded',
    COMMENT COLUMN publish_ms 'post-processing and produce: detector_out - inferred',
    COMMENT COLUMN to_sink_ms 'detector to sink: sink_in - detector_out',
    COMMENT COLUMN end_to_end_ms 'capture to sink: sink_in - captured';

ALTER TABLE {db}.class_minutes MODIFY COMMENT 'Per minute, site, label and camera (from detections): detections and summed score; read with sum() and GROUP BY. Kept 395 days.';
ALTER TABLE {db}.class_minutes
    COMMENT COLUMN minute 'start of the minute (UTC)',
    COMMENT COLUMN site_id 'site id',
    COMMENT COLUMN label 'site class (person, vehicle, ...)',
    COMMENT COLUMN camera_id 'camera id',
    COMMENT COLUMN detections 'detections: sum(detections)',
    COMMENT COLUMN score_sum 'sum of scores: sum(score_sum) / sum(detections) is the mean score';

ALTER TABLE {db}.violation_minutes MODIFY COMMENT 'Per minute, site, zone, rule and source (from violations): incident starts, updates and ends; read with sum() and GROUP BY. Kept 395 days.';
ALTER TABLE {db}.violation_minutes
    COMMENT COLUMN minute 'start of the minute of the event (UTC)',
    COMMENT COLUMN site_id 'site id',
    COMMENT COLUMN rule_id 'rule id from the site file',
    COMMENT COLUMN rule_type 'the rule''s type',
    COMMENT COLUMN severity 'low, medium, high or critical',
    COMMENT COLUMN camera_id 'camera of a camera rule, else empty',
    COMMENT COLUMN sensor_id 'sensor of a sensor rule, else empty',
    COMMENT COLUMN zone_id 'the rule''s zone (empty for sensor and correlation rules)',
    COMMENT COLUMN starts 'incidents started: sum(starts)',
    COMMENT COLUMN updates 'update events: sum(updates)',
    COMMENT COLUMN ends 'incidents ended: sum(ends)';

ALTER TABLE {db}.sensor_minutes MODIFY COMMENT 'Per minute, site and sensor (from sensor_readings): countMerge(readings), minMerge(value_min), maxMerge(value_max), avgMerge(value_avg). Kept 395 days.';
ALTER TABLE {db}.sensor_minutes
    COMMENT COLUMN minute 'start of the minute (UTC)',
    COMMENT COLUMN site_id 'site id',
    COMMENT COLUMN sensor_id 'sensor id',
    COMMENT COLUMN unit 'the sensor''s unit',
    COMMENT COLUMN readings 'readings: countMerge(readings)',
    COMMENT COLUMN value_min 'lowest value: minMerge(value_min)',
    COMMENT COLUMN value_max 'highest value: maxMerge(value_max)',
    COMMENT COLUMN value_avg 'mean value: avgMerge(value_avg)';
