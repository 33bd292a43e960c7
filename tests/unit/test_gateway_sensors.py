"""Sensor readings at the edge: unit conversion, plausible ranges, payload parsing, the gateway file."""

import math

import pytest

from aimass_gateway.config import GatewayConfigError, MqttBinding, SensorConfig, load_gateway_file, parse_gateway_file
from aimass_gateway.sensors import parse_payload, parse_mqtt_url, to_reading
from aimass_gateway.units import BadReading, UnitError, check_value, convert


def test_unit_conversion():
    assert convert(212, "F", "C") == pytest.approx(100)
    assert convert(-40, "°F", "degC") == pytest.approx(-40)
    assert convert(0, "C", "K") == pytest.approx(273.15)
    assert convert(3200, "W", "kW") == pytest.approx(3.2)
    assert convert(1013.25, "hPa", "kPa") == pytest.approx(101.325)
    assert convert(5, "ppm", "ppm") == 5 and convert(5, "", "") == 5
    with pytest.raises(UnitError, match="temperature.*power"):
        convert(1, "C", "kW")
    with pytest.raises(UnitError, match="unknown unit 'furlong'"):
        convert(1, "furlong", "m")


def test_plausible_ranges():
    assert check_value(21.5, "C") == 21.5
    for value, unit, reason in ((float("nan"), "C", "not_finite"), (math.inf, "", "not_finite"),
                                (-300, "C", "out_of_range"), (101, "%", "out_of_range")):
        with pytest.raises(BadReading) as e:
            check_value(value, unit)
        assert e.value.reason == reason
    with pytest.raises(BadReading, match="outside the plausible range 0..50"):
        check_value(60, "C", 0, 50)


def test_a_fahrenheit_thermometer_reads_celsius_within_its_range():
    s = SensorConfig(id="t", unit="C", input_unit="F", min=-20, max=90)
    assert to_reading(s, 98.6) == pytest.approx(37.0)
    assert to_reading(s, 30.0, raw_unit="C") == 30.0  # a payload that names its unit is taken at its word
    with pytest.raises(BadReading) as e:
        to_reading(s, 500.0)  # 260 °C: not this room
    assert e.value.reason == "out_of_range"
    with pytest.raises(BadReading) as e:
        to_reading(s, 1.0, raw_unit="kW")
    assert e.value.reason == "bad_unit"
    adc = SensorConfig(id="a", unit="C", scale=0.1, offset=-40)  # raw ADC counts
    assert to_reading(adc, 655.0) == pytest.approx(25.5)


def test_mqtt_payloads():
    plain = MqttBinding(topic="x")
    assert parse_payload(b" 71.6\n", plain) == (71.6, None)
    assert parse_payload(b"ON", plain) == (1.0, None) and parse_payload(b"closed", plain) == (0.0, None)
    assert parse_payload(b"true", plain) == (1.0, None) and parse_payload(b"42", plain) == (42.0, None)
    nested = MqttBinding(topic="x", field="env.t", unit_field="env.unit")
    assert parse_payload(b'{"env": {"t": 20.5, "unit": "F"}}', nested) == (20.5, "F")
    for payload, binding, match in ((b"hot", plain, "not a number"), (b'{"t": 1}', plain, "needs the sensor's mqtt.field"),
                                    (b'{"x": 1}', nested, "no 'env.t'"), (b"\xff\xfe", plain, "not UTF-8")):
        with pytest.raises(BadReading, match=match):
            parse_payload(payload, binding)


def test_mqtt_url():
    assert parse_mqtt_url("mqtt://gw@broker.local:8883") == ("broker.local", 8883, "gw")
    assert parse_mqtt_url("mqtt://10.0.0.2") == ("10.0.0.2", 1883, None)
    with pytest.raises(ValueError, match="AIMASS_MQTT_PASSWORD"):
        parse_mqtt_url("mqtt://u:secret@h")


GOOD = """\
site_id: hq
cameras:
  - id: cam-a
    source: rtsp://10.0.0.5/s1
    fps: 5
    gating: true
sensors:
  - id: temp
    unit: C
    input_unit: F
    mqtt: {topic: a/temp}
"""


def test_gateway_file_defaults():
    cfg = parse_gateway_file(GOOD, "gw.yaml")
    cam = cfg.cameras[0]
    assert cam.gating is not None and cam.gating.enabled and cam.gating.keepalive_s == 10
    assert cam.reconnect.max_s == 30 and cam.width is None
    assert cfg.sensor("temp").mqtt.topic == "a/temp"


@pytest.mark.parametrize("old,new,where", [
    ("    fps: 5", "    fps: 500", "gw.yaml:5: cameras.0.fps:"),
    ("    source: rtsp://10.0.0.5/s1", "    source: ftp://10.0.0.5/s1", "gw.yaml:4: cameras.0.source:"),
    ("    gating: true", "    gating: {keepalive_s: -1}", "gw.yaml:6: cameras.0.gating.keepalive_s:"),
    ("    input_unit: F", "    input_unit: kW", "gw.yaml:8: sensors.0: cannot convert 'kW'"),
    ("    mqtt: {topic: a/temp}", "    mqtt: {topic: a/+/temp}", "gw.yaml:11: sensors.0.mqtt.topic:"),
    ("    unit: C", "    unit: C\n    colour: red", "gw.yaml:10: sensors.0.colour:"),
])
def test_gateway_file_errors_name_file_line_and_field(old, new, where):
    with pytest.raises(GatewayConfigError) as e:
        parse_gateway_file(GOOD.replace(old, new), "gw.yaml")
    assert where in str(e.value), str(e.value)


def test_gateway_file_duplicates_and_missing_files(tmp_path):
    with pytest.raises(GatewayConfigError, match="duplicate camera id.*: cam-a"):
        parse_gateway_file(GOOD.replace("sensors:", "  - {id: cam-a, source: '0'}\nsensors:"), "gw.yaml")
    with pytest.raises(GatewayConfigError, match="two sensors read the same MQTT topic: a/temp"):
        parse_gateway_file(GOOD + "  - {id: t2, mqtt: {topic: a/temp}}\n", "gw.yaml")
    f = tmp_path / "gw.yaml"
    f.write_text(GOOD.replace("rtsp://10.0.0.5/s1", "clips/missing.mp4"))
    with pytest.raises(GatewayConfigError, match=r"gw.yaml:4: cameras.0.source: camera 'cam-a': 'clips/missing.mp4'"):
        load_gateway_file(f)
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "missing.mp4").write_bytes(b"")
    assert load_gateway_file(f).cameras[0].source == str(tmp_path / "clips" / "missing.mp4")  # next to the file
