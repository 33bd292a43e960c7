"""The engine as a dispatcher: routing, site filtering, stamps, live site replacement, plain state."""

import dataclasses

import msgspec
import yaml

from aimass.contracts import DetectedObject, Detections, SensorReading
from aimass.site import Site
from aimass_rules.engine import EVALUATORS, RuleEngine
from aimass_rules.evaluator import TriggerState

T0 = 1_700_000_000_000.0

BASE = yaml.safe_load("""
site: {id: site-1}
cameras:
  - id: cam-1
    zones:
      - {id: door, polygon: [[0.2, 0.2], [0.6, 0.2], [0.6, 0.8], [0.2, 0.8]]}
      - {id: yard, polygon: [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]}
  - id: cam-2
sensors:
  - {id: temp-1, kind: temperature, unit: °C}
rules:
  - {id: r-door, type: zone_intrusion, camera: cam-1, zone: door, min_frames: 3, clear_frames: 2, cooldown_s: 0}
  - {id: r-yard, type: zone_intrusion, camera: cam-1, zone: yard, min_frames: 1, clear_frames: 1, cooldown_s: 0}
  - {id: r-temp, type: sensor_threshold, sensor: temp-1, above: 50, cooldown_s: 0}
""")


def site(edit=None) -> Site:
    data = yaml.safe_load(yaml.safe_dump(BASE))  # a deep copy
    if edit:
        edit(data)
    return Site.model_validate(data)


def rule(data, rid):
    return next(r for r in data["rules"] if r["id"] == rid)


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        self.t += 1.0
        return self.t


PERSON = DetectedObject("person", 0, 0.9, 0.35, 0.2, 0.45, 0.5)  # bottom centre (0.4, 0.5): in both zones


def frame(seq, *objects, camera="cam-1", site_id="site-1"):
    return Detections(site_id=site_id, camera_id=camera, seq=seq, captured_ms=T0 + seq * 200.0, width=640,
                      height=480, model_name="m", model_version="1", objects=list(objects), stamps={"rules_in": 5.0})


def reading(seq, value):
    return SensorReading(site_id="site-1", sensor_id="temp-1", seq=seq, captured_ms=T0 + seq * 1000.0, value=value)


def events(out):
    return [(v.rule_id, v.event) for v in out]


def test_registry_covers_every_rule_type():
    # Every rule type the site schema accepts has an evaluator, and no evaluator lacks a schema.
    import typing

    from aimass.site import Rule
    schema_types = {typing.get_args(cls.model_fields["type"].annotation)[0]
                    for cls in typing.get_args(typing.get_args(Rule)[0])}
    assert set(EVALUATORS) == schema_types == {"zone_intrusion", "line_crossing", "dwell", "occupancy",
                                               "sensor_threshold", "sensor_rate", "sensor_stale", "correlation",
                                               "stopped", "left_behind"}


def test_routing_by_source():
    eng = RuleEngine(site(), clock=Clock())
    assert events(eng.on_detections(frame(0, PERSON))) == [("r-yard", "start")]
    assert eng.on_detections(frame(0, PERSON, camera="cam-2")) == []  # a camera without rules
    assert events(eng.on_reading(reading(0, 60))) == [("r-temp", "start")]
    assert eng.states["r-door"].streak == 1


def test_other_sites_input_is_ignored():
    eng = RuleEngine(site(), clock=Clock())
    assert eng.on_detections(frame(0, PERSON, site_id="site-2")) == []
    assert eng.stats.foreign == 1
    assert eng.states["r-yard"].incident is None


def test_stamps_are_copied_and_rules_out_added_once_per_call():
    eng = RuleEngine(site(), clock=Clock())
    d = frame(2, PERSON)
    assert events(eng.on_detections(frame(0, PERSON))) == [("r-yard", "start")]  # clock: 101
    out = eng.on_detections(frame(1, PERSON)) + eng.on_detections(d)
    assert events(out) == [("r-door", "start")]
    assert out[0].stamps == {"rules_in": 5.0, "rules_out": 102.0}
    assert d.stamps == {"rules_in": 5.0}  # the input is not modified


def test_disabled_rule_does_nothing():
    eng = RuleEngine(site(lambda d: rule(d, "r-temp").update(enabled=False)), clock=Clock())
    assert eng.on_reading(reading(0, 99)) == []
    assert "r-temp" not in eng.states


def test_replace_site_keeps_state_of_unchanged_rules():
    eng = RuleEngine(site(), clock=Clock())
    eng.on_detections(frame(0, PERSON))
    eng.on_detections(frame(1, PERSON))  # r-door: 2 of 3 frames
    eng.on_reading(reading(0, 60))  # r-temp: incident open
    door_state = eng.states["r-door"]

    # Change only r-temp's threshold: r-door and r-yard keep their state, r-temp's incident is closed.
    out = eng.replace_site(site(lambda d: rule(d, "r-temp").update(above=70)))
    assert events(out) == [("r-temp", "end")]
    assert out[0].at_ms == T0 and "rule changed" in out[0].message and "rules_out" in out[0].stamps
    assert eng.states["r-door"] is door_state
    assert events(eng.on_detections(frame(2, PERSON))) == [("r-door", "start")]  # the streak went on
    assert eng.states["r-temp"] == TriggerState()
    assert eng.on_reading(reading(1, 60)) == []  # 60 is fine under the new threshold


def test_replace_site_drops_state_of_changed_and_removed_rules():
    eng = RuleEngine(site(), clock=Clock())
    for s in range(3):
        eng.on_detections(frame(s, PERSON))
    assert eng.states["r-door"].incident is not None

    def edit(d):
        rule(d, "r-door")["min_frames"] = 2  # changed
        d["rules"] = [r for r in d["rules"] if r["id"] != "r-yard"]  # removed
    out = eng.replace_site(site(edit))
    assert sorted(events(out)) == [("r-door", "end"), ("r-yard", "end")]
    assert {v.at_ms for v in out} == {T0 + 2 * 200.0}  # the last frame seen from cam-1
    assert set(eng.states) == {"r-door", "r-temp"}
    assert eng.states["r-door"] == TriggerState()
    assert eng.on_detections(frame(3, PERSON)) == []  # a new streak: 1 of 2
    assert events(eng.on_detections(frame(4, PERSON))) == [("r-door", "start")]


def test_replace_site_drops_state_when_the_zone_polygon_changes():
    eng = RuleEngine(site(), clock=Clock())
    eng.on_detections(frame(0, PERSON))
    eng.on_detections(frame(1, PERSON))

    def edit(d):
        d["cameras"][0]["zones"][0]["polygon"] = [[0.1, 0.1], [0.6, 0.1], [0.6, 0.8], [0.1, 0.8]]
    assert eng.replace_site(site(edit)) == []
    assert eng.states["r-door"] == TriggerState()


def test_replace_site_keeps_duplicate_protection():
    eng = RuleEngine(site(), clock=Clock())
    eng.on_detections(frame(5, PERSON))
    eng.replace_site(site(lambda d: rule(d, "r-temp").update(above=70)))
    assert eng.on_detections(frame(5, PERSON)) == []
    assert eng.stats.stale == 1


def test_state_is_plain_data():
    eng = RuleEngine(site(), clock=Clock())
    for s in range(3):
        eng.on_detections(frame(s, PERSON))
    st = eng.states["r-door"]
    assert dataclasses.is_dataclass(st) and st.incident is not None
    data = msgspec.json.encode(st)  # persistable as it is
    assert msgspec.json.decode(data, type=TriggerState) == st


def _through_the_state_topic(eng, source):
    """What a restarted worker gets back: the export, encoded and decoded as aimass.state stores it."""
    from aimass import state
    return state.decode(state.encode(eng.export_state(source)))


def test_a_restarted_engine_resumes_an_open_incident_from_the_stored_state():
    eng = RuleEngine(site(), clock=Clock())
    [start] = [v for s in range(3) for v in eng.on_detections(frame(s, PERSON)) if v.rule_id == "r-door"]
    saved = _through_the_state_topic(eng, ("camera", "cam-1"))

    fresh = RuleEngine(site(), clock=Clock())
    assert fresh.import_state(("camera", "cam-1"), saved) == 2  # r-door and r-yard
    assert fresh.on_detections(frame(2, PERSON)) == []  # already handled before the restart
    assert fresh.on_detections(frame(3, PERSON)) == []  # the intrusion goes on: no second start
    out = fresh.on_detections(frame(4)) + fresh.on_detections(frame(5))
    [end] = [v for v in out if v.rule_id == "r-door"]
    assert end.event == "end" and end.violation_id == start.violation_id


def test_stored_state_of_a_changed_rule_is_not_resumed():
    eng = RuleEngine(site(), clock=Clock())
    for s in range(3):
        eng.on_detections(frame(s, PERSON))
    saved = _through_the_state_topic(eng, ("camera", "cam-1"))
    fresh = RuleEngine(site(lambda d: rule(d, "r-door").update(min_frames=4)), clock=Clock())
    assert fresh.import_state(("camera", "cam-1"), saved) == 1  # r-yard only
    assert fresh.states["r-door"] == TriggerState()


def test_forget_drops_a_source_and_its_rules_only():
    eng = RuleEngine(site(), clock=Clock())
    for s in range(3):
        eng.on_detections(frame(s, PERSON))
    eng.on_reading(reading(0, 60))
    eng.forget(("camera", "cam-1"))
    assert eng.states["r-door"] == TriggerState() and ("camera", "cam-1") not in eng.cursors
    assert eng.states["r-temp"].incident is not None
    assert eng.export_state(("sensor", "temp-1"))["cursor"] == [0, T0, T0]


def test_ticks_judge_only_the_rules_whose_home_this_worker_owns():
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["rules"].append({"id": "quiet", "type": "sensor_stale", "sensor": "temp-1", "after_s": 5})
    eng = RuleEngine(Site.model_validate(data), clock=Clock())
    eng.on_tick(T0)
    assert eng.on_tick(T0 + 10_000, owns=lambda source: source != ("sensor", "temp-1")) == []
    assert events(eng.on_tick(T0 + 10_000, owns=lambda source: True)) == [("quiet", "start")]


def test_known_sources_follow_the_site_file():
    """The worker dead-letters input from a camera or sensor the site file does not define (it looks
    the ids up once a batch through ``known``); a new site file changes them."""
    eng = RuleEngine(site())
    assert eng.known("camera") == {"cam-1", "cam-2"} and eng.known("sensor") == {"temp-1"}
    assert eng.knows(("camera", "cam-2")) and not eng.knows(("camera", "temp-1")) and not eng.knows(("site", "x"))

    def drop_cam_2(data):
        data["cameras"] = [c for c in data["cameras"] if c["id"] != "cam-2"]
    eng.replace_site(site(drop_cam_2))
    assert eng.known("camera") == {"cam-1"} and not eng.knows(("camera", "cam-2"))
