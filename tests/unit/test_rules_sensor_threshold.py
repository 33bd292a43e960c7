"""sensor_threshold through the engine: streaks, hysteresis, both bounds, cooldown, duplicates."""

import pytest

from aimass.contracts import SensorReading
from aimass.site import SiteFileError, parse_site
from aimass_rules.engine import RuleEngine
from aimass_rules.evaluator import violation_id

T0 = 1_700_000_000_000.0
PERIOD_MS = 1000.0


def engine(**rule):
    rule = {"min_readings": 1, "cooldown_s": 0, **rule}
    fields = "\n".join(f"    {k}: {v}" for k, v in rule.items())
    text = f"""
site:
  id: site-1
sensors:
  - id: temp-1
    kind: temperature
    unit: °C
rules:
  - id: r-temp
    type: sensor_threshold
    sensor: temp-1
    severity: high
{fields}
"""
    return RuleEngine(parse_site(text), clock=lambda: 7.0)


def reading(seq, value, t=None):
    return SensorReading(site_id="site-1", sensor_id="temp-1", seq=seq, value=value, unit="°C",
                         captured_ms=T0 + seq * PERIOD_MS if t is None else t, stamps={"gateway_out": 3.0})


def feed(eng, values, start_seq=0):
    """Returns [(event, seq)] for every violation event."""
    return [(v.event, start_seq + i) for i, x in enumerate(values) for v in eng.on_reading(reading(start_seq + i, x))]


def test_min_readings_streak_and_start_fields():
    eng = engine(above=50, min_readings=2)
    assert feed(eng, [51, 49, 51]) == []
    [v] = eng.on_reading(reading(3, 52.5))
    assert v.event == "start"
    assert (v.rule_id, v.rule_type, v.severity, v.sensor_id, v.camera_id) == ("r-temp", "sensor_threshold", "high", "temp-1", "")
    assert (v.value, v.label, v.source_seq) == (52.5, "temperature", 3)
    assert (v.started_ms, v.at_ms) == (T0 + 2 * PERIOD_MS, T0 + 3 * PERIOD_MS)
    assert v.violation_id == violation_id("site-1", "r-temp", "temp-1", "", T0 + 2 * PERIOD_MS, 2)
    assert v.message == "sensor temp-1 (temperature) 52.5 °C above 50 °C for 2 readings"
    assert v.stamps == {"gateway_out": 3.0, "rules_out": 7.0}


def test_default_hysteresis_prevents_flapping():
    eng = engine(above=50)  # default hysteresis: 2 % of 50 = 1
    values = [51, 49.5, 50.5, 49.2, 50.8, 49.01, 51]  # hovering around the threshold
    assert feed(eng, values) == [("start", 0)]
    [end] = eng.on_reading(reading(7, 49.0))  # 1 below the threshold: back inside
    assert end.event == "end" and end.value == 49.0
    assert "peak 51 °C" in end.message


def test_without_hysteresis_the_same_input_would_flap():
    eng = engine(above=50, hysteresis=0)
    assert feed(eng, [51, 49.5, 50.5, 49.2]) == [("start", 0), ("end", 1), ("start", 2), ("end", 3)]


def test_explicit_hysteresis():
    eng = engine(above=50, hysteresis=5)
    assert feed(eng, [60, 46, 45.5, 70]) == [("start", 0)]
    [end] = eng.on_reading(reading(4, 45))
    assert end.event == "end"
    assert end.message == "sensor temp-1 (temperature) back to 45 °C after 4.0 s; peak 70 °C"


def test_below_threshold():
    eng = engine(below=10)  # hysteresis 0.2
    assert feed(eng, [10, 9.9, 10.1, 10.19]) == [("start", 1)]
    [end] = eng.on_reading(reading(4, 10.2))
    assert end.event == "end"
    assert feed(eng, [9.5], start_seq=5) == [("start", 5)]


def test_both_bounds_one_incident_across_sides():
    eng = engine(above=30, below=10)
    assert feed(eng, [20, 35, 5, 29.5, 20, 4]) == [("start", 1), ("end", 4), ("start", 5)]


def test_default_hysteresis_is_capped_inside_a_narrow_band():
    eng = engine(above=100, below=99)  # 2 % would be ~2 on each side; capped at 0.25
    assert feed(eng, [101, 99.5]) == [("start", 0), ("end", 1)]


def test_cooldown_suppresses_then_allows():
    eng = engine(above=50, cooldown_s=10)
    assert feed(eng, [60, 40]) == [("start", 0), ("end", 1)]
    assert feed(eng, [60, 60, 40, 40, 60, 40], start_seq=2) == []  # within 10 s of the end (seq 1)
    assert feed(eng, [40] * 3 + [60], start_seq=8) == [("start", 11)]


def test_duplicate_seq_ignored():
    eng = engine(above=50, min_readings=3)
    assert eng.on_reading(reading(0, 60)) == []
    assert eng.on_reading(reading(1, 60)) == []
    assert eng.on_reading(reading(1, 60)) == []
    assert eng.on_reading(reading(0, 60)) == []
    assert [v.event for v in eng.on_reading(reading(2, 60))] == ["start"]
    assert eng.stats.stale == 2


@pytest.mark.parametrize("rule,complaint", [
    ("above: 10\n    below: 20", "'below' (20.0) must be less than 'above' (10.0)"),
    ("above: 20\n    below: 10\n    hysteresis: 5", "must be less than half the band"),
    ("min_readings: 2", "give 'above', 'below' or both"),
    ("above: 20\n    hysteresis: -1", "rules.0.sensor_threshold.hysteresis"),
])
def test_bad_threshold_rules(rule, complaint):
    text = f"""
site:
  id: s
sensors:
  - id: t
    kind: temperature
rules:
  - id: r
    type: sensor_threshold
    sensor: t
    {rule}
"""
    with pytest.raises(SiteFileError) as exc:
        parse_site(text, "site.yaml")
    assert complaint in str(exc.value)
    assert str(exc.value).startswith("site.yaml:")
