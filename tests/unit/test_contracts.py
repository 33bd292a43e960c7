import math

import msgspec
import pytest

from aimass import contracts
from aimass.contracts import ContractError, DetectedObject, Detections, Frame, SensorReading


def _frame(**kw):
    base = dict(site_id="s", camera_id="cam-1", seq=3, captured_ms=1.7e12, width=64, height=48, jpeg=b"\xff\xd8x")
    return Frame(**{**base, **kw})


def test_round_trip_keeps_every_field():
    f = _frame(stamps={"sent": 1.0})
    assert contracts.decode(contracts.encode(f), Frame) == f
    d = Detections(site_id="s", camera_id="c", seq=1, captured_ms=1.7e12, width=10, height=10, model_name="m",
                   model_version="1", objects=[DetectedObject("person", 0, 0.9, 0.1, 0.2, 0.3, 0.4)])
    assert contracts.decode(contracts.encode(d), Detections).objects[0].label == "person"


@pytest.mark.parametrize("data, reason", [
    (b"", "empty"),
    (None, "empty"),
    (b"\xc1", "bad_encoding"),
    (msgspec.msgpack.encode({"kind": "frame", "camera_id": "c"}), "bad_schema"),
    (msgspec.msgpack.encode([1, 2, 3]), "bad_schema"),
])
def test_bad_bytes_have_reasons(data, reason):
    with pytest.raises(ContractError) as e:
        contracts.decode(data, Frame)
    assert e.value.reason == reason


def test_wrong_kind_is_a_schema_error():
    reading = SensorReading(site_id="s", sensor_id="t", seq=1, captured_ms=1.0, value=2.0)
    with pytest.raises(ContractError) as e:
        contracts.decode(contracts.encode(reading), Frame)
    assert e.value.reason == "bad_schema"


def test_unknown_version_is_refused():
    with pytest.raises(ContractError) as e:
        contracts.decode(contracts.encode(_frame(v=2)), Frame)
    assert e.value.reason == "bad_version" and "version 2" in str(e.value)


def test_oversized_message_is_refused_before_decoding():
    data = b"\x00" * (contracts.MAX_FRAME_MESSAGE_BYTES + 1)
    with pytest.raises(ContractError) as e:
        contracts.decode(data, Frame)
    assert e.value.reason == "too_large"
    with pytest.raises(ContractError) as e:
        contracts.decode(contracts.encode(_frame(jpeg=b"x" * (contracts.MAX_JPEG_BYTES + 1))), Frame)
    assert e.value.reason == "too_large"


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_readings_are_refused(value):
    r = SensorReading(site_id="s", sensor_id="t", seq=1, captured_ms=1.7e12, value=value)
    with pytest.raises(ContractError) as e:
        contracts.decode(contracts.encode(r), SensorReading)
    assert e.value.reason == "bad_value"


@pytest.mark.parametrize("field, value, says", [
    ("x2", math.nan, "x2 is nan"), ("score", math.inf, "score is inf"),
    ("x1", 1e308, "overflow"),  # finite each, but no box corner in 0..1 looks like this
])
def test_non_finite_object_values_are_refused_naming_the_value(field, value, says):
    o = DetectedObject("person", 0, 0.9, 0.1, 0.1, 0.2, 0.2)
    setattr(o, field, value)
    if field == "x1":
        o.y1 = 1e308  # the sum overflows
    d = Detections(site_id="s", camera_id="c", seq=1, captured_ms=1.7e12, width=640, height=480, model_name="m",
                   model_version="1", objects=[DetectedObject("car", 2, 0.5, 0, 0, 1, 1), o])
    with pytest.raises(ContractError, match=says) as e:
        contracts.decode(contracts.encode(d), Detections)
    assert e.value.reason == "bad_value"


@pytest.mark.parametrize("captured_ms, says", [
    (0.0, "before 2000"),                                   # a gateway that booted without a clock
    (math.nan, "finite"),
    (contracts.now_ms() + 3 * 86_400_000, "in the future"),  # three days ahead
])
def test_capture_times_from_a_broken_clock_are_refused(captured_ms, says):
    with pytest.raises(ContractError, match=says) as e:
        contracts.decode(contracts.encode(_frame(captured_ms=captured_ms)), Frame)
    assert e.value.reason in ("bad_time", "bad_value")
    # A backlog from last month is history, not a broken clock.
    month_ago = contracts.now_ms() - 30 * 86_400_000
    assert contracts.decode(contracts.encode(_frame(captured_ms=month_ago)), Frame).captured_ms == month_ago


def test_bad_ids_and_sizes_are_refused():
    for bad in (_frame(camera_id=""), _frame(camera_id="x" * 200), _frame(width=0)):
        with pytest.raises(ContractError) as e:
            contracts.decode(contracts.encode(bad), Frame)
        assert e.value.reason == "bad_value"
