"""sensor_rate, sensor_stale and correlation."""

from aimass.contracts import DetectedObject, Detections, SensorReading
from aimass.site import parse_site
from aimass_rules.engine import RuleEngine

SITE = """
site: {id: s}
cameras: [{id: c, zones: [{id: z, polygon: [[0, 0], [1, 0], [1, 1], [0, 1]]}]}]
sensors: [{id: t, kind: temperature}, {id: smoke, kind: smoke}]
rules:
%s
"""
T0 = 1_000_000.0


def _engine(rules: str) -> RuleEngine:
    return RuleEngine(parse_site(SITE % rules), clock=lambda: 0.0)


def _reading(eng, seq, value, sensor="t", dt=1000.0):
    return [(v.rule_id, v.event) for v in eng.on_reading(
        SensorReading(site_id="s", sensor_id=sensor, seq=seq, captured_ms=T0 + seq * dt, value=value))]


RATE = "  - {id: rise, type: sensor_rate, sensor: t, max_per_s: 1.0, window_s: 5, min_readings: 2, clear_readings: 2}"


def test_rate_of_change_over_a_window():
    eng = _engine(RATE)
    values = [20, 20.2, 20.1, 20.3, 23, 26, 29, 32, 32, 32, 32, 32, 32, 32]
    events = [(i, e) for i, v in enumerate(values) for e in _reading(eng, i, v)]
    # Rate against the oldest reading within 5 s: at 4 it is (23-20)/4 s = 0.75/s; at 5, 1.2/s (first
    # fast reading); at 6, 1.76/s (second: min_readings reached). It falls back once the rise leaves the window.
    assert events[0] == (6, ("rise", "start"))
    assert events[1][1] == ("rise", "end") and len(events) == 2


def test_one_noisy_reading_is_not_a_fast_rise():
    eng = _engine(RATE)
    assert [e for i, v in enumerate([20, 20, 25, 20, 20, 20]) for e in _reading(eng, i, v)] == []


STALE = "  - {id: quiet, type: sensor_stale, sensor: t, after_s: 10}"


def test_stale_sensor_starts_on_the_clock_and_ends_with_a_reading():
    eng = _engine(STALE)
    assert _reading(eng, 0, 20.0) == []
    assert eng.on_tick(T0 + 9_000) == []
    [v] = eng.on_tick(T0 + 10_500)
    assert (v.rule_id, v.event, v.sensor_id) == ("quiet", "start", "t") and "10 s" in v.message
    assert eng.on_tick(T0 + 20_000) == []  # one incident, not one per tick
    assert _reading(eng, 30, 20.0) == [("quiet", "end")]


def test_a_sensor_never_heard_from_is_judged_from_the_first_tick():
    eng = _engine(STALE)
    assert eng.on_tick(T0) == []
    assert [v.event for v in eng.on_tick(T0 + 11_000)] == ["start"]


CORR = """  - {id: smoke-high, type: sensor_threshold, sensor: smoke, above: 0.5}
  - {id: person-in, type: zone_intrusion, camera: c, zone: z, min_frames: 1}
  - {id: smoke-and-person, type: correlation, rules: [smoke-high, person-in], within_s: 30, cooldown_s: 300}"""


def _person(eng, seq, at_ms):
    d = Detections(site_id="s", camera_id="c", seq=seq, captured_ms=at_ms, width=1, height=1, model_name="m",
                   model_version="1", objects=[DetectedObject("person", 0, 0.9, 0.4, 0.4, 0.6, 0.8)])
    return [(v.rule_id, v.event) for v in eng.follow(eng.on_detections(d))]


def _fed(eng, events):
    """Events as the violations topic feeds them back: with the correlation events they lead to."""
    return [(v.rule_id, v.event) for v in eng.follow(events)]


def test_correlation_across_a_sensor_and_a_camera_in_either_order():
    eng = _engine(CORR)
    assert _fed(eng, _raw_reading(eng, 0, 1.0)) == [("smoke-high", "start")]
    assert _person(eng, 0, T0 + 20_000) == [("person-in", "start"), ("smoke-and-person", "start")]

    eng = _engine(CORR)  # person first, smoke 40 s later: outside the window
    assert _person(eng, 0, T0) == [("person-in", "start")]
    assert _fed(eng, _raw_reading(eng, 40, 1.0)) == [("smoke-high", "start")]


def test_correlation_reads_only_the_violations_fed_back_and_counts_a_redelivered_start_once():
    eng = _engine(CORR)
    [smoke] = _raw_reading(eng, 0, 1.0)
    d = Detections(site_id="s", camera_id="c", seq=0, captured_ms=T0 + 5_000, width=1, height=1, model_name="m",
                   model_version="1", objects=[DetectedObject("person", 0, 0.9, 0.4, 0.4, 0.6, 0.8)])
    [person] = eng.on_detections(d)  # not fed back: no correlation yet
    assert eng.on_violation(smoke) == [] and eng.on_violation(smoke) == []
    [both] = eng.on_violation(person)
    assert both.rule_id == "smoke-and-person" and both.at_ms == T0 + 5_000
    assert eng.on_violation(person) == []  # the same start redelivered


def _raw_reading(eng, seq, value, sensor="smoke"):
    return eng.on_reading(SensorReading(site_id="s", sensor_id=sensor, seq=seq, captured_ms=T0 + seq * 1000.0,
                                        value=value))


ABSENT = """  - {id: door-open, type: sensor_threshold, sensor: t, above: 0.5, cooldown_s: 0}
  - {id: person-in, type: zone_intrusion, camera: c, zone: z, min_frames: 1, cooldown_s: 0}
  - {id: forced-door, type: correlation, rules: [door-open, person-in], when: first_without_second, within_s: 10,
     cooldown_s: 0}"""


def test_first_without_second_fires_at_the_end_of_the_window_when_the_second_never_came():
    eng = _engine(ABSENT)
    assert _fed(eng, _raw_reading(eng, 0, 1.0, sensor="t")) == [("door-open", "start")]
    assert eng.on_tick(T0 + 9_000) == []
    [v] = eng.on_tick(T0 + 10_500)
    assert (v.rule_id, v.event, v.at_ms, v.sensor_id) == ("forced-door", "start", T0 + 10_000, "t")
    assert "no person-in within 10 s" in v.message
    assert eng.on_tick(T0 + 30_000) == []  # once


def test_first_without_second_stays_quiet_when_the_second_comes_before_or_after():
    eng = _engine(ABSENT)  # door, then a person 6 s later
    _fed(eng, _raw_reading(eng, 0, 1.0, sensor="t"))
    _person(eng, 0, T0 + 6_000)
    assert eng.on_tick(T0 + 20_000) == []
    eng = _engine(ABSENT)  # a person seen 4 s before the door opens (badged in)
    _person(eng, 0, T0 - 4_000)
    _fed(eng, _raw_reading(eng, 0, 1.0, sensor="t"))
    assert eng.on_tick(T0 + 20_000) == []


def test_correlation_loops_and_self_pairs_are_refused():
    import pytest
    from aimass.site import SiteFileError
    loop = """  - {id: a, type: sensor_threshold, sensor: t, above: 1}
  - {id: x, type: correlation, rules: [a, y], within_s: 5}
  - {id: y, type: correlation, rules: [a, x], within_s: 5}"""
    with pytest.raises(SiteFileError, match=r"loop \(x -> y -> x\)"):
        parse_site(SITE % loop)
    with pytest.raises(SiteFileError, match="with itself"):
        parse_site(SITE % "  - {id: a, type: sensor_threshold, sensor: t, above: 1}\n"
                          "  - {id: x, type: correlation, rules: [a, a], within_s: 5}")


def test_correlation_must_name_other_rules():
    import pytest
    from aimass.site import SiteFileError
    with pytest.raises(SiteFileError, match="correlates"):
        parse_site(SITE % "  - {id: x, type: correlation, rules: [x, nope], within_s: 5}")
