"""Each table's insert columns, in order: the one place the sink's row mapping and the tests read.
A unit test checks these against the tables the migrations create."""

COLUMNS: dict[str, tuple[str, ...]] = {
    "frames": ("date", "captured", "captured_ms", "site_id", "camera_id", "seq", "width", "height", "jpeg_bytes",
               "model_name", "model_version", "batch_size", "objects", "sent_ms", "detector_in_ms", "decoded_ms",
               "inferred_ms", "detector_out_ms", "sink_in_ms"),
    "detections": ("date", "captured", "captured_ms", "site_id", "camera_id", "seq", "object_index", "label",
                   "class_id", "score", "x1", "y1", "x2", "y2", "track_id", "model_name", "model_version"),
    "violations": ("date", "at", "at_ms", "started_ms", "violation_id", "event", "site_id", "rule_id", "rule_type",
                   "severity", "camera_id", "zone_id", "sensor_id", "label", "track_id", "score", "value",
                   "source_seq", "message", "captured_ms", "rules_out_ms", "sink_in_ms"),
    "sensor_readings": ("date", "captured", "captured_ms", "site_id", "sensor_id", "seq", "value", "unit", "sent_ms",
                        "sink_in_ms"),
    "deadletters": ("date", "at", "at_ms", "service", "source_topic", "partition", "offset", "reason", "detail", "key",
                    "original_bytes", "original"),
    "model_events": ("date", "at", "at_ms", "event", "model", "service", "worker", "revision", "detail", "value"),
    "shadow_results": ("date", "captured", "captured_ms", "site_id", "camera_id", "seq", "model", "shadow", "objects",
                       "shadow_objects", "labels", "shadow_labels", "matched", "mean_iou", "shadow_ms"),
    "heartbeats": ("date", "at", "at_ms", "site_id", "gateway_id", "camera_id", "started_ms", "interval_s", "status",
                   "fps", "read_fps", "frames_read", "frames_sent", "frames_skipped", "bytes_sent", "last_frame_ms",
                   "errors", "reconnects", "last_error", "readings_sent", "readings_refused", "send_errors",
                   "spool_messages", "spool_bytes", "spool_dropped", "clock_offset_ms", "clock_rtt_ms", "clock_source",
                   "clock_measured_ms", "sink_in_ms"),
}
