"""stopped and left_behind on scripted detections (5 fps, normalised boxes): start, update, end,
cooldown, jitter within max_move, an owner nearby, a track lost and recovered; state round-trips."""

import json

import msgspec
import pytest

from aimass.contracts import DetectedObject, Detections
from aimass.site import Site, parse_site
from aimass_rules.stationary import LeftBehind, RestState, Stopped

SITE = """
site: {id: s}
cameras:
  - id: c
    zones: [{id: z, polygon: [[0.5, 0.5], [1, 0.5], [1, 1], [0.5, 1]]}]
rules:
  - %s
"""

T0 = 1_000_000.0
DT = 200.0  # 5 fps


def _evaluator(rule: str):
    site: Site = parse_site(SITE % rule)
    r = site.rules[0]
    return (Stopped if r.type == "stopped" else LeftBehind)(r, site)


def _obj(fx, fy, track=1, label="vehicle", score=0.9, w=0.1, h=0.2):
    """An object whose bottom centre is at (fx, fy)."""
    return DetectedObject(label, 0, score, fx - w / 2, fy - h, fx + w / 2, fy, track_id=track)


def _frame(i, objs):
    return Detections(site_id="s", camera_id="c", seq=i, captured_ms=T0 + i * DT, width=640, height=480,
                      model_name="m", model_version="1", objects=objs)


def _feed(ev, frames, state=None):
    """-> [(frame index, event, track id)], and the state."""
    st = state if state is not None else ev.new_state()
    out = []
    for i, objs in enumerate(frames):
        out += [(i, v.event, v.track_id) for v in ev.on_detections(_frame(i, objs), st)]
    return out, st


STOPPED = "{id: np, type: stopped, camera: c, zone: z, seconds: 3, clear_s: 1, cooldown_s: 4, update_s: 2}"


def test_stopped_starts_after_the_limit_updates_and_ends_when_it_drives_off():
    ev = _evaluator(STOPPED)
    approach = [[_obj(0.95 - 0.05 * i, 0.8)] for i in range(5)]  # 0.95 -> 0.75 at 0.25/s: moving
    parked = [[_obj(0.75, 0.8)] for _ in range(30)]  # 6 s still
    leave = [[_obj(0.75 - 0.05 * i, 0.8)] for i in range(1, 6)]
    events, st = _feed(ev, approach + parked + leave)
    # at rest from frame 4 (x=0.75) on; 3 s = 15 frames later, frame 19; updates every 2 s; moved at 35
    assert events == [(19, "start", 1), (29, "update", 1), (35, "end", 1)]
    v = ev.on_detections(_frame(40, []), st)
    assert v == [] and st.cooldown_until_ms  # the track that left is cooling down


def test_stopped_start_event_fields():
    ev = _evaluator(STOPPED)
    st = ev.new_state()
    out = []
    for i in range(16):
        out += ev.on_detections(_frame(i, [_obj(0.7, 0.9, track=7, score=0.6 + i / 100)]), st)
    [v] = out
    assert (v.rule_type, v.camera_id, v.zone_id, v.label, v.track_id, v.event) == \
        ("stopped", "c", "z", "vehicle", 7, "start")
    assert v.started_ms == T0 and v.at_ms == T0 + 15 * DT and v.score == pytest.approx(0.75)
    assert "stopped in zone 'z' for 3.0 s" in v.message


def test_brief_stop_and_slow_drive_through_raise_nothing():
    ev = _evaluator(STOPPED)
    brief = ([[_obj(0.95 - 0.04 * i, 0.8)] for i in range(5)] + [[_obj(0.79, 0.8)] for _ in range(10)]  # 2 s stop
             + [[_obj(0.79 - 0.04 * i, 0.8)] for i in range(1, 8)])
    assert _feed(ev, brief)[0] == []
    slow = [[_obj(0.98 - 0.006 * i, 0.8)] for i in range(80)]  # 0.03 /s across the zone for 16 s
    assert _feed(ev, slow)[0] == []


def test_jitter_within_max_move_keeps_the_rest_and_more_is_motion():
    ev = _evaluator(STOPPED)
    jitter = [[_obj(0.7 + (0.01 if i % 2 else -0.01), 0.8 + (0.008 if i % 3 else -0.008))] for i in range(20)]
    assert _feed(ev, jitter)[0] == [(15, "start", 1)]
    wide = [[_obj(0.7 + (0.04 if i % 2 else -0.04), 0.8)] for i in range(20)]  # 0.08 apart: moving
    assert _feed(ev, wide)[0] == []
    # one bad box at the start of the rest does not end it: the mean soon outweighs it
    outlier = [[_obj(0.725, 0.8)]] + [[_obj(0.7, 0.8)] for _ in range(19)]
    assert _feed(ev, outlier)[0] == [(15, "start", 1)]


def test_at_rest_outside_the_zone_is_nothing_and_other_classes_are_ignored():
    ev = _evaluator(STOPPED)
    assert _feed(ev, [[_obj(0.3, 0.8)] for _ in range(30)])[0] == []
    assert _feed(ev, [[_obj(0.7, 0.8, label="person")] for _ in range(30)])[0] == []
    assert _feed(ev, [[_obj(0.7, 0.8, track=-1)] for _ in range(30)])[0] == []  # untracked: skipped


def test_track_lost_and_recovered_keeps_its_clock_but_gone_ends_it():
    ev = _evaluator(STOPPED)
    # 1.0 s unseen (clear_s is 1: gone only when unseen for *more* than that): the rest goes on
    frames = [[_obj(0.7, 0.8)] for _ in range(8)] + [[] for _ in range(4)] + [[_obj(0.7, 0.8)] for _ in range(10)]
    assert _feed(ev, frames)[0] == [(15, "start", 1)]
    # unseen for 1.2 s: gone, the incident ends and the track is forgotten
    events, st = _feed(ev, [[_obj(0.7, 0.8)] for _ in range(20)] + [[] for _ in range(8)])
    assert events == [(15, "start", 1), (25, "end", 1)]
    assert st.rests == {}
    # a track lost for longer comes back with a new id (the tracker's rule): a new clock
    frames = [[_obj(0.7, 0.8, track=1)] for _ in range(10)] + [[] for _ in range(6)] + \
             [[_obj(0.7, 0.8, track=2)] for _ in range(16)]
    assert _feed(ev, frames)[0] == [(16 + 15, "start", 2)]


def test_cooldown_per_track():
    ev = _evaluator(STOPPED)  # cooldown 4 s
    park = [[_obj(0.7, 0.8)] for _ in range(20)]
    hop = [[_obj(0.8, 0.8)]]  # moved 0.1: ends the incident, a new rest begins at once
    events, _ = _feed(ev, park + hop + [[_obj(0.8, 0.8)] for _ in range(25)])
    # start at 15, end at 20; at rest again from 20: 3 s later (35) it is still cooling down (until 40)
    assert events == [(15, "start", 1), (20, "end", 1), (40, "start", 1)]
    # another track is not held back by track 1's cooldown
    two = park + hop + [[_obj(0.8, 0.8), _obj(0.6, 0.9, track=2)] for _ in range(19)]
    assert _feed(ev, two)[0] == [(15, "start", 1), (20, "end", 1), (36, "start", 2)]


def test_two_vehicles_each_their_own_incident():
    ev = _evaluator(STOPPED)
    frames = [[_obj(0.6, 0.9, track=1), _obj(0.85, 0.7, track=2)] for _ in range(20)]
    assert sorted(_feed(ev, frames)[0]) == [(15, "start", 1), (15, "start", 2)]


def test_close_ends_open_incidents():
    ev = _evaluator(STOPPED)
    _, st = _feed(ev, [[_obj(0.7, 0.8)] for _ in range(20)])
    [v] = ev.close(st, T0 + 5000, "rule changed")
    assert v.event == "end" and "rule changed" in v.message and st.rests == {}


LEFT = ("{id: lb, type: left_behind, camera: c, zone: z, seconds: 3, owner_distance: 0.15, clear_s: 1, "
        "cooldown_s: 4, update_s: 0}")


def _bag(fx=0.7, fy=0.9, track=5):
    return _obj(fx, fy, track=track, label="bag", w=0.06, h=0.08)


def _person(fx, fy=0.9, track=9):
    return _obj(fx, fy, track=track, label="person", w=0.1, h=0.4)


def test_bag_left_when_its_owner_walks_away():
    ev = _evaluator(LEFT)
    with_owner = [[_bag(), _person(0.78)] for _ in range(25)]  # 5 s side by side: attended
    away = [[_bag(), _person(0.78 - 0.05 * i)] for i in range(1, 30)]  # 0.05 per frame to the left
    events, st = _feed(ev, with_owner + away)
    # the owner's x at frame 25 + j is 0.73 - 0.05 j; the bag's is 0.7: within 0.15 up to j = 3, so the
    # bag was last attended at frame 28 and is left behind 3 s (15 frames) later
    assert events == [(28 + 15, "start", 5)]
    [inc] = [r.incident for r in st.rests.values() if r.incident]
    assert inc.started_ms == T0 + 28 * DT


def test_owner_standing_by_keeps_it_from_firing_and_detector_misses_of_the_owner_do_not_add_up():
    ev = _evaluator(LEFT)
    frames = [[_bag(), _person(0.8)] if i % 4 else [_bag()] for i in range(100)]  # owner missed every 4th frame
    assert _feed(ev, frames)[0] == []


def test_bag_alone_fires_and_ends_when_picked_up_or_gone():
    ev = _evaluator(LEFT)
    alone = [[_bag()] for _ in range(20)]
    picked_up = [[_bag(0.7, 0.8), _person(0.72)]]  # lifted: it moved 0.1
    events, st = _feed(ev, alone + picked_up)
    assert events == [(15, "start", 5), (20, "end", 5)]
    events, _ = _feed(ev, alone + [[] for _ in range(7)])
    assert events == [(15, "start", 5), (25, "end", 5)]


def test_people_coming_near_after_it_fired_do_not_end_it():
    ev = _evaluator(LEFT)
    frames = [[_bag()] for _ in range(20)] + [[_bag(), _person(0.72)] for _ in range(10)]
    events, st = _feed(ev, frames)
    assert events == [(15, "start", 5)]
    assert any(r.incident for r in st.rests.values())


def test_a_passer_by_restarts_the_clock_and_a_carried_bag_is_never_at_rest():
    ev = _evaluator(LEFT)
    frames = [[_bag()] for _ in range(10)] + [[_bag(), _person(0.75)]] + [[_bag()] for _ in range(20)]
    assert _feed(ev, frames)[0] == [(10 + 15, "start", 5)]
    carried = [[_bag(0.55 + 0.02 * i, 0.9), _person(0.57 + 0.02 * i)] for i in range(20)]
    assert _feed(ev, carried)[0] == []


def test_owner_far_away_does_not_attend():
    ev = _evaluator(LEFT)
    frames = [[_bag(), _person(0.2)] for _ in range(20)]
    assert _feed(ev, frames)[0] == [(15, "start", 5)]


def test_state_round_trips_through_msgspec():
    ev = _evaluator(STOPPED)
    _, st = _feed(ev, [[_obj(0.7, 0.8, track=3), _obj(0.6, 0.95, track=4)] for _ in range(20)]
                  + [[_obj(0.9, 0.8, track=3), _obj(0.6, 0.95, track=4)]])
    assert st.cooldown_until_ms and st.rests[4].incident and not st.rests[3].incident
    plain = msgspec.to_builtins(st)
    again = msgspec.convert(plain, RestState)
    assert again == st
    assert msgspec.json.decode(msgspec.json.encode(st), type=RestState) == st
    json.dumps(msgspec.to_builtins(st, str_keys=True))  # JSON-able
    # and it carries on: the same frames after a round trip give the same events as without one
    ev2 = _evaluator(STOPPED)
    frames = [[_obj(0.7, 0.8)] for _ in range(10)]
    _, s1 = _feed(ev2, frames)
    a = ev2.on_detections(_frame(20, [_obj(0.7, 0.8)]), s1)
    _, s2 = _feed(ev2, frames)
    b = ev2.on_detections(_frame(20, [_obj(0.7, 0.8)]), msgspec.convert(msgspec.to_builtins(s2), RestState))
    assert [v.violation_id for v in a] == [v.violation_id for v in b] and len(a) == 1


def test_both_types_run_through_the_rule_engine():
    from aimass_rules.engine import EVALUATORS, RuleEngine
    assert EVALUATORS["stopped"] is Stopped and EVALUATORS["left_behind"] is LeftBehind
    site = parse_site(SITE % STOPPED + "  - " + LEFT + "\n")
    eng = RuleEngine(site, clock=lambda: 0.0)
    out = []
    for i in range(20):
        out += [(i, v.rule_id, v.event) for v in eng.on_detections(_frame(i, [_obj(0.7, 0.8), _bag(0.6, 0.95)]))]
    assert out == [(15, "np", "start"), (15, "lb", "start")]
