"""zone_intrusion through the engine: presence at the bottom centre, filters, streaks, clearing,
cooldown in event time, duplicate and restarted input."""

import pytest

from aimass.contracts import DetectedObject, Detections
from aimass.site import parse_site
from aimass_rules.engine import RuleEngine
from aimass_rules.evaluator import violation_id

SITE = """
site:
  id: site-1
cameras:
  - id: cam-1
    zones:
      - id: restricted
        polygon: [[0.2, 0.2], [0.6, 0.2], [0.6, 0.8], [0.2, 0.8]]
rules:
  - id: r-zone
    type: zone_intrusion
    camera: cam-1
    zone: restricted
    classes: [person]
    min_score: 0.4
    min_frames: {min_frames}
    max_gap_frames: {max_gap_frames}
    clear_frames: {clear_frames}
    cooldown_s: {cooldown_s}
"""
FRAME_MS = 200.0  # 5 fps
T0 = 1_700_000_000_000.0


def engine(min_frames=3, clear_frames=3, cooldown_s=10.0, max_gap_frames=1):
    site = parse_site(SITE.format(min_frames=min_frames, clear_frames=clear_frames, cooldown_s=cooldown_s,
                                  max_gap_frames=max_gap_frames))
    return RuleEngine(site, clock=lambda: 42.0)


def obj(cx=0.4, bottom=0.5, label="person", score=0.9, track_id=-1):
    """A 0.1 x 0.3 box whose bottom centre is (cx, bottom)."""
    return DetectedObject(label, 0, score, cx - 0.05, bottom - 0.3, cx + 0.05, bottom, track_id)


IN = obj()
OUT = obj(bottom=0.95)


def frame(seq, *objects, t=None):
    return Detections(site_id="site-1", camera_id="cam-1", seq=seq, captured_ms=T0 + seq * FRAME_MS if t is None else t,
                      width=640, height=480, model_name="m", model_version="1", objects=list(objects),
                      stamps={"gateway_out": 1.0, "detector_out": 2.0})


def feed(eng, pattern, start_seq=0):
    """pattern: a string of 'x' (someone in the zone) and '.' (nobody), one frame each.
    Returns [(event, seq)] for every violation event."""
    out = []
    for i, c in enumerate(pattern):
        seq = start_seq + i
        for v in eng.on_detections(frame(seq, IN) if c == "x" else frame(seq, OUT)):
            out.append((v.event, seq))
    return out


def test_bottom_centre_inside_vs_just_outside():
    eng = engine(min_frames=1)
    # The box covers the zone's middle but its bottom centre is just below the zone: not present.
    assert eng.on_detections(frame(0, obj(bottom=0.801))) == []
    assert eng.on_detections(frame(1, obj(cx=0.601))) == []
    # Bottom centre just inside the bottom edge, and exactly on it: present.
    assert [v.event for v in eng.on_detections(frame(2, obj(bottom=0.799)))] == ["start"]
    eng2 = engine(min_frames=1)
    assert [v.event for v in eng2.on_detections(frame(0, obj(bottom=0.8)))] == ["start"]


def test_class_filter():
    eng = engine(min_frames=1)
    assert eng.on_detections(frame(0, obj(label="vehicle"), obj(label="dog"))) == []
    [v] = eng.on_detections(frame(1, obj(label="vehicle"), obj(label="person", score=0.7)))
    assert (v.label, v.score) == ("person", 0.7)


def test_score_filter():
    eng = engine(min_frames=1)
    assert eng.on_detections(frame(0, obj(score=0.39))) == []
    [v] = eng.on_detections(frame(1, obj(score=0.4)))
    assert v.score == 0.4


def test_start_event_fields():
    eng = engine(min_frames=3)
    assert eng.on_detections(frame(10, IN)) == []
    assert eng.on_detections(frame(11, obj(score=0.8, track_id=7))) == []
    [v] = eng.on_detections(frame(12, obj(score=0.6, track_id=3), obj(score=0.85, track_id=4), OUT))
    assert v.event == "start"
    assert (v.site_id, v.rule_id, v.rule_type, v.severity) == ("site-1", "r-zone", "zone_intrusion", "medium")
    assert (v.camera_id, v.zone_id, v.sensor_id) == ("cam-1", "restricted", "")
    assert (v.label, v.score, v.track_id) == ("person", 0.85, 4)  # the best object in the triggering frame
    assert v.started_ms == T0 + 10 * FRAME_MS  # the streak's first frame
    assert v.at_ms == T0 + 12 * FRAME_MS  # the frame that reached min_frames
    assert v.source_seq == 12
    assert v.violation_id == violation_id("site-1", "r-zone", "cam-1", "restricted", T0 + 10 * FRAME_MS, 10)
    assert len(v.violation_id) == 32 and int(v.violation_id, 16) >= 0
    assert v.message == "person in zone 'restricted' on camera cam-1 for 3 frames"
    assert v.stamps == {"gateway_out": 1.0, "detector_out": 2.0, "rules_out": 42.0}


def test_min_frames_streak_broken_by_missing_frames_beyond_the_gap():
    eng = engine(min_frames=3, max_gap_frames=0)
    assert feed(eng, "xx.xx") == []
    assert feed(eng, "x", start_seq=5) == [("start", 5)]
    assert eng.states["r-zone"].incident.started_ms == T0 + 3 * FRAME_MS
    # The default tolerates one detector miss inside the streak (it does not count towards it)...
    eng = engine(min_frames=3)
    assert feed(eng, "xx.x") == [("start", 3)]
    assert eng.states["r-zone"].incident.started_ms == T0
    # ...but not two in a row.
    assert feed(engine(min_frames=3), "xx..xx") == []


def test_long_intrusion_with_short_misses_is_one_incident():
    eng = engine(min_frames=3, clear_frames=3)
    pattern = "xxx" + ".x" * 10 + "..x" * 5 + "x" * 20 + "..."
    events = feed(eng, pattern)
    assert events == [("start", 2), ("end", len(pattern) - 1)]


def test_end_event_fields():
    eng = engine(min_frames=2, clear_frames=2)
    assert feed(eng, "x") == []
    [start] = eng.on_detections(frame(1, obj(score=0.5)))
    eng.on_detections(frame(2, obj(score=0.95)))
    eng.on_detections(frame(3, OUT))
    [end] = eng.on_detections(frame(4))
    assert end.event == "end"
    assert end.violation_id == start.violation_id
    assert end.started_ms == start.started_ms == T0
    assert (end.at_ms, end.source_seq) == (T0 + 4 * FRAME_MS, 4)
    assert end.score == 0.95  # the incident's best score
    assert end.label == "person"
    assert "clear for 2 frames" in end.message and "0.8 s" in end.message


def test_cooldown_suppresses_reentry_then_allows_one_after_it_elapses():
    eng = engine(min_frames=2, clear_frames=2, cooldown_s=10.0)  # 10 s = 50 frames
    assert feed(eng, "xx..") == [("start", 1), ("end", 3)]
    # Re-entry for 10 frames, 3 s after the end: inside the cooldown, nothing.
    assert feed(eng, "." * 14 + "x" * 10 + "." * 5, start_seq=4) == []
    # 10 s after the end (seq 3 + 50): a new incident.
    events = feed(eng, "." * 30 + "xx", start_seq=33)
    assert events == [("start", 64)]


def test_presence_lasting_past_cooldown_starts_when_it_elapses():
    eng = engine(min_frames=2, clear_frames=2, cooldown_s=1.0)  # 5 frames
    assert feed(eng, "xx..") == [("start", 1), ("end", 3)]
    # In again from seq 4 and staying: the cooldown ends at seq 8.
    assert feed(eng, "x" * 8, start_seq=4) == [("start", 8)]
    assert eng.states["r-zone"].incident.started_ms == T0 + 4 * FRAME_MS


def test_cooldown_is_event_time_not_wall_clock():
    eng = engine(min_frames=1, clear_frames=1, cooldown_s=10.0)
    assert feed(eng, "x.") == [("start", 0), ("end", 1)]
    # Frames arrive long after (a backlog): what counts is their capture time, 1 s after the end.
    assert eng.on_detections(frame(2, IN, t=T0 + 1200.0)) == []
    assert [v.event for v in eng.on_detections(frame(3, IN, t=T0 + 200.0 + 10_000.0))] == ["start"]


def test_duplicate_seq_is_ignored():
    eng = engine(min_frames=3)
    assert eng.on_detections(frame(0, IN)) == []
    assert eng.on_detections(frame(1, IN)) == []
    assert eng.on_detections(frame(1, IN)) == []  # redelivered after a retry: not a third frame
    assert eng.on_detections(frame(0, IN)) == []  # an older one, reordered
    assert [v.event for v in eng.on_detections(frame(2, IN))] == ["start"]
    assert eng.on_detections(frame(2, IN)) == []  # no second start
    assert eng.stats.stale == 3


def test_gateway_restart_is_accepted():
    eng = engine(min_frames=2, clear_frames=2)
    assert feed(eng, "x", start_seq=500) == []
    # The gateway restarted two minutes later: seq begins again at 0, with a later capture time. Accepted.
    [v] = eng.on_detections(frame(0, IN, t=T0 + 500 * FRAME_MS + 120_000.0))
    assert v.event == "start" and v.source_seq == 0
    assert eng.stats.restarts == 1
    # A late redelivery from before the restart (higher seq, capture time minutes older): ignored.
    assert eng.on_detections(frame(501, OUT)) == []
    assert eng.stats.stale == 1


def test_replay_gives_the_same_ids():
    pattern = "xxx...." + "." * 60 + "xxxx...."
    runs = []
    for _ in range(2):
        eng = engine()
        runs.append([(v.violation_id, v.event) for s, c in enumerate(pattern)
                     for v in eng.on_detections(frame(s, IN if c == "x" else OUT))])
    assert runs[0] == runs[1]
    assert len(runs[0]) == 4 and runs[0][0][0] != runs[0][2][0]


@pytest.mark.parametrize("classes,label,expected", [(["vehicle", "person"], "vehicle", 1), (["vehicle"], "person", 0)])
def test_class_list(classes, label, expected):
    text = SITE.format(min_frames=1, clear_frames=1, cooldown_s=0, max_gap_frames=1).replace("[person]", "[" + ", ".join(classes) + "]")
    eng = RuleEngine(parse_site(text), clock=lambda: 0.0)
    assert len(eng.on_detections(frame(0, obj(label=label)))) == expected
