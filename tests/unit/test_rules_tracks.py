"""line_crossing, dwell and occupancy on scripted detections (5 fps, normalised boxes)."""

import pytest

from aimass.contracts import DetectedObject, Detections
from aimass.site import parse_site
from aimass_rules.engine import RuleEngine
from aimass_rules.line_crossing import segments_cross, side_of


SITE = """
site: {id: s}
cameras:
  - id: c
    zones: [{id: z, polygon: [[0.5, 0.5], [1, 0.5], [1, 1], [0.5, 1]]}]
    lines: [{id: door, points: [[0.2, 0.6], [0.8, 0.6]]}]
rules:
%s
"""


def _engine(rule: str) -> RuleEngine:
    return RuleEngine(parse_site(SITE % rule), clock=lambda: 0.0)


def _obj(fx, fy, track=1, label="person", score=0.9):
    """An object whose bottom centre (feet) is at (fx, fy)."""
    return DetectedObject(label, 0, score, fx - 0.05, fy - 0.3, fx + 0.05, fy, track_id=track)


def _feed(engine, frames, t0=1_000_000.0, dt=200.0):
    out = []
    for i, objs in enumerate(frames):
        d = Detections(site_id="s", camera_id="c", seq=i, captured_ms=t0 + i * dt, width=640, height=480,
                       model_name="m", model_version="1", objects=objs)
        out += [(i, v.event, v.track_id) for v in engine.on_detections(d)]
    return out


LINE = "  - {id: x, type: line_crossing, camera: c, line: door, direction: %s, cooldown_s: 5}"


def test_geometry_helpers():
    assert side_of((0.0, 0.0), (1.0, 0.0), 1.0, 0.5, 0.2) == (1, pytest.approx(0.2))
    assert side_of((0.0, 0.0), (1.0, 0.0), 1.0, 0.5, -0.1) == (-1, pytest.approx(0.1))
    assert side_of((0.0, 0.0), (1.0, 0.0), 1.0, 0.3, 0.0) == (0, 0.0)  # on the line
    assert segments_cross((0.5, 0.5), (0.5, 0.7), (0.2, 0.6), (0.8, 0.6))
    assert not segments_cross((0.9, 0.5), (0.9, 0.7), (0.2, 0.6), (0.8, 0.6))  # past the line's end


def test_crossing_downwards_is_a_to_b_once():
    walk = [[_obj(0.5, 0.45 + 0.03 * i)] for i in range(10)]  # y 0.45 -> 0.72 crosses 0.6
    assert _feed(_engine(LINE % "a_to_b"), walk) == [(6, "start", 1)]  # y=0.60 is on the line; 0.63 is past it
    assert _feed(_engine(LINE % "b_to_a"), walk) == []
    assert len(_feed(_engine(LINE % "either"), walk)) == 1


def test_jitter_on_the_line_and_passing_its_end_are_not_crossings():
    jitter = [[_obj(0.5, 0.6 + (0.005 if i % 2 else -0.005))] for i in range(10)]
    past_end = [[_obj(0.9, 0.45 + 0.03 * i)] for i in range(10)]
    assert _feed(_engine(LINE % "either"), jitter) == []
    assert _feed(_engine(LINE % "either"), past_end) == []


def test_back_and_forth_within_cooldown_fires_once_per_track():
    there_and_back = [[_obj(0.5, y)] for y in (0.5, 0.55, 0.65, 0.7, 0.65, 0.55, 0.5, 0.55, 0.65)]
    assert len(_feed(_engine(LINE % "either"), there_and_back)) == 1
    two = [[_obj(0.4, 0.45 + 0.05 * i, track=1), _obj(0.6, 0.45 + 0.05 * i, track=2)] for i in range(6)]
    assert sorted(t for _, _, t in _feed(_engine(LINE % "either"), two)) == [1, 2]


DWELL = "  - {id: loiter, type: dwell, camera: c, zone: z, seconds: 3, clear_s: 1, cooldown_s: 10}"


def test_dwell_starts_after_the_limit_and_ends_when_the_track_leaves():
    frames = [[_obj(0.7, 0.8)] for _ in range(25)] + [[] for _ in range(8)]  # 5 s in, then gone
    events = _feed(_engine(DWELL), frames)
    assert events == [(15, "start", 1), (30, "end", 1)]  # 15 frames = 3 s; unseen > 1 s after frame 24


def test_dwell_survives_short_misses_but_a_passer_by_is_nothing():
    flicker = [[_obj(0.7, 0.8)] if i % 4 else [] for i in range(25)]
    assert _feed(_engine(DWELL), flicker)[0] == (17, "start", 1)  # first seen at 1; 16 is a miss
    passer = [[_obj(0.7, 0.8)] for _ in range(10)]  # 2 s only
    assert _feed(_engine(DWELL), passer) == []


CROWD = "  - {id: crowd, type: occupancy, camera: c, zone: z, max_objects: 2, hold_s: 1, clear_frames: 3}"


def test_occupancy_over_the_limit_for_hold_s():
    three = [_obj(0.6, 0.8, 1), _obj(0.7, 0.8, 2), _obj(0.8, 0.8, 3)]
    frames = [three[:2]] * 3 + [three] * 8 + [three[:2]] * 4
    engine = _engine(CROWD)
    d_events = _feed(engine, frames)
    assert [(i, e) for i, e, _ in d_events] == [(8, "start"), (13, "end")]  # 3 + 1 s (5 frames); 3 clears
    brief = [three] * 3 + [three[:1]] * 5
    assert _feed(_engine(CROWD), brief) == []


def test_unknown_line_is_refused_with_the_field():
    from aimass.site import SiteFileError
    with pytest.raises(SiteFileError, match="rules.0.line"):
        parse_site(SITE % "  - {id: x, type: line_crossing, camera: c, line: nope}")


def test_lasting_incidents_send_updates_under_one_id():
    eng = _engine("  - {id: zi, type: zone_intrusion, camera: c, zone: z, min_frames: 1, clear_frames: 2, update_s: 1}")
    frames = [[_obj(0.7, 0.8)] for _ in range(12)] + [[], []]
    got = []
    for i, objs in enumerate(frames):
        d = Detections(site_id="s", camera_id="c", seq=i, captured_ms=1_000_000.0 + i * 200, width=1, height=1,
                       model_name="m", model_version="1", objects=objs)
        got += [(i, v.event, v.violation_id) for v in eng.on_detections(d)]
    assert [(i, e) for i, e, _ in got] == [(0, "start"), (5, "update"), (10, "update"), (13, "end")]
    assert len({vid for *_, vid in got}) == 1
    quiet = _engine("  - {id: zi, type: zone_intrusion, camera: c, zone: z, min_frames: 1, clear_frames: 2, update_s: 0}")
    assert [e for _, e, _ in _feed(quiet, frames)] == ["start", "end"]
