import datetime as dt

from aimass.clickhouse.schema import COLUMNS
from aimass.contracts import DeadLetter, DetectedObject, Detections, SensorReading, Violation
from aimass_sink import rows as R

T = 1_795_000_000_123.5  # 2026-11-18 ...


def _det(objects=()):
    return Detections(site_id="s", camera_id="c", seq=9, captured_ms=T, width=640, height=480, jpeg_bytes=1234,
                      model_name="m", model_version="2", objects=list(objects), batch_size=3,
                      stamps={"sent": T + 1, "detector_in": T + 2, "decoded": T + 3, "inferred": T + 4, "detector_out": T + 5})


def test_frame_row_maps_stamps_and_sizes():
    row = dict(zip(COLUMNS["frames"], R.frame_row(_det([DetectedObject("person", 0, .9, 0, 0, 1, 1)]), T + 6)))
    assert row["date"] == dt.date(2026, 11, 18) and row["captured"] == 1_795_000_000
    assert (row["seq"], row["objects"], row["batch_size"], row["jpeg_bytes"]) == (9, 1, 3, 1234)
    assert [row[k] - T for k in ("sent_ms", "detector_in_ms", "decoded_ms", "inferred_ms", "detector_out_ms", "sink_in_ms")] == [1, 2, 3, 4, 5, 6]


def test_frame_and_detection_rows_follow_the_schema_column_by_column():
    # These two are built as tuples in COLUMNS order (rows.py): every column checked by name.
    d = _det([DetectedObject("car", 2, .7, .1, .2, .3, .4, track_id=5)])
    assert dict(zip(COLUMNS["frames"], R.frame_row(d, T + 6), strict=True)) == {
        "date": dt.date(2026, 11, 18), "captured": 1_795_000_000, "captured_ms": T, "site_id": "s", "camera_id": "c",
        "seq": 9, "width": 640, "height": 480, "jpeg_bytes": 1234, "model_name": "m", "model_version": "2",
        "batch_size": 3, "objects": 1, "sent_ms": T + 1, "detector_in_ms": T + 2, "decoded_ms": T + 3,
        "inferred_ms": T + 4, "detector_out_ms": T + 5, "sink_in_ms": T + 6}
    [row] = R.detection_rows(d)
    assert dict(zip(COLUMNS["detections"], row, strict=True)) == {
        "date": dt.date(2026, 11, 18), "captured": 1_795_000_000, "captured_ms": T, "site_id": "s", "camera_id": "c",
        "seq": 9, "object_index": 0, "label": "car", "class_id": 2, "score": .7, "x1": .1, "y1": .2, "x2": .3,
        "y2": .4, "track_id": 5, "model_name": "m", "model_version": "2"}


def test_one_detection_row_per_object_in_order():
    objs = [DetectedObject("person", 0, .9, .1, .2, .3, .4), DetectedObject("vehicle", 2, .5, .5, .5, .9, .9, track_id=4)]
    rows = [dict(zip(COLUMNS["detections"], r)) for r in R.detection_rows(_det(objs))]
    assert [(r["object_index"], r["label"], r["class_id"], r["track_id"]) for r in rows] == [(0, "person", 0, -1), (1, "vehicle", 2, 4)]
    assert list(R.detection_rows(_det())) == []


def test_violation_reading_and_deadletter_rows():
    v = Violation(violation_id="abc", event="end", site_id="s", rule_id="r", rule_type="zone_intrusion", severity="high",
                  camera_id="c", zone_id="z", started_ms=T, at_ms=T + 1000, stamps={"captured": T + 900, "rules_out": T + 950})
    row = dict(zip(COLUMNS["violations"], R.violation_row(v, T + 990)))
    assert (row["event"], row["at"], row["captured_ms"], row["rules_out_ms"]) == ("end", 1_795_000_001, T + 900, T + 950)
    r = dict(zip(COLUMNS["sensor_readings"], R.reading_row(SensorReading(site_id="s", sensor_id="t", seq=1, captured_ms=T, value=2.5), T)))
    assert (r["sensor_id"], r["value"], r["sent_ms"]) == ("t", 2.5, 0.0)
    big = DeadLetter(source_topic="f", reason="too_large", detail="d", service="x", at_ms=T, original=b"\x00" * 100_000)
    d = dict(zip(COLUMNS["deadletters"], R.deadletter_row(big)))
    assert d["original_bytes"] == 100_000 and len(d["original"]) == R.MAX_DEADLETTER_ORIGINAL
