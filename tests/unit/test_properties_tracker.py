"""Property tests for the ByteTrack-style tracker (aimass_detector.tracker)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aimass.contracts import DetectedObject
from aimass_detector.tracker import CameraTracker, TrackerConfig, Trackers

T0 = 1_700_000_000_000.0
DT = 200.0  # 5 fps; T0 + k * DT is exact in float64
MAX_LOST_MS = TrackerConfig().max_lost_ms
HIGH = TrackerConfig().high_score


def scaled(n: int) -> int:
    """n examples under the default profile (100), proportionally more under a longer one (conftest.py)."""
    return max(1, n * settings.default.max_examples // 100)


def _obj(cx, cy, w, h, label="person", score=0.9):
    return DetectedObject(label, 0, score, cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


@st.composite
def sightings(draw, n):
    """Which of n frames see the object: the first two always (a track needs two sightings to know
    its velocity), then misses that never last longer than the tracker keeps a lost track."""
    max_missed = int(MAX_LOST_MS // DT) - 1  # 9 missed frames: the next sighting is exactly max_lost_ms later
    seen = [True, True]
    while len(seen) < n:
        seen += [False] * draw(st.integers(0, max_missed)) + [True]
    return seen[:n]


@st.composite
def linear_motion(draw, x_range=(0.2, 0.8), n_max=40):
    """A box of fixed size moving at constant velocity, at most 0.2 of its size per frame."""
    n = draw(st.integers(3, n_max))
    w, h = draw(st.floats(0.03, 0.1)), draw(st.floats(0.05, 0.4))
    x0, x1 = draw(st.floats(*x_range)), draw(st.floats(*x_range))
    y0 = draw(st.floats(0.2, 0.8))
    vx = float(np.clip((x1 - x0) / n, -0.2 * w, 0.2 * w))
    vy = draw(st.floats(-1.0, 1.0)) * min(0.2 * h, 0.3 / n)
    scores = [draw(st.floats(HIGH, 1.0)), draw(st.floats(HIGH, 1.0))] + [
        draw(st.floats(0.1, 1.0)) for _ in range(n - 2)]  # later sightings may be low-score ones
    return [(x0 + vx * i, y0 + vy * i, w, h, scores[i]) for i in range(n)]


@given(linear_motion(), st.data())
def test_one_object_moving_smoothly_keeps_its_id_through_misses_shorter_than_max_lost(path, data):
    seen = data.draw(sightings(len(path)))
    tracker = CameraTracker()
    ids = set()
    for i, ((cx, cy, w, h, score), visible) in enumerate(zip(path, seen)):
        out = tracker.update([_obj(cx, cy, w, h, score=score)] if visible else [], T0 + i * DT, i)
        ids |= {o.track_id for o in out}
    assert len(ids) == 1 and min(ids) >= 0, ids


@given(st.integers(1, 20), st.floats(200.0, 5000.0), st.floats(0.2, 0.8))
def test_a_track_unmatched_longer_than_max_lost_is_dropped(missed, max_lost, cx):
    tracker = CameraTracker(TrackerConfig(max_lost_ms=max_lost))
    first = tracker.update([_obj(cx, 0.5, 0.1, 0.3)], T0, 0)[0].track_id
    for i in range(1, missed + 1):
        tracker.update([], T0 + i * DT, i)
    again = tracker.update([_obj(cx, 0.5, 0.1, 0.3)], T0 + (missed + 1) * DT, missed + 1)[0].track_id
    gone = (missed + 1) * DT > max_lost
    assert (again != first) == gone
    assert again >= 0


@given(linear_motion(x_range=(0.1, 0.35), n_max=30), linear_motion(x_range=(0.65, 0.9), n_max=30),
       st.integers(0, 10), st.data())
def test_two_well_separated_objects_never_swap_ids(a_path, b_path, b_delay, data):
    # Same label, widths <= 0.1: A's boxes stay in x < 0.4 and B's in x > 0.6 at all times.
    a_seen, b_seen = data.draw(sightings(len(a_path))), data.draw(sightings(len(b_path)))
    n = max(len(a_path), b_delay + len(b_path))
    tracker = CameraTracker()
    a_ids, b_ids = set(), set()
    for i in range(n):
        objs = []
        if i < len(a_path) and a_seen[i]:
            objs.append(("a", _obj(*a_path[i][:4], score=a_path[i][4])))
        j = i - b_delay
        if 0 <= j < len(b_path) and b_seen[j]:
            objs.append(("b", _obj(*b_path[j][:4], score=b_path[j][4])))
        if data.draw(st.booleans()):
            objs.reverse()  # the detector's output order carries no meaning
        out = tracker.update([o for _, o in objs], T0 + i * DT, i)
        for (who, _), o in zip(objs, out):
            (a_ids if who == "a" else b_ids).add(o.track_id)
    assert len(a_ids) == 1 and len(b_ids) == 1, (a_ids, b_ids)
    assert a_ids.isdisjoint(b_ids) and min(a_ids | b_ids) >= 0


LABELS = ["person", "vehicle"]
random_box = st.builds(
    lambda cx, cy, w, h, label, score: _obj(cx, cy, w, h, label, score),
    st.floats(0, 1), st.floats(0, 1), st.floats(0.01, 0.5), st.floats(0.01, 0.5), st.sampled_from(LABELS),
    st.floats(0.0, 1.0))


@st.composite
def random_frames(draw):
    """[(objects, ms since the previous frame)]: a few objects that wander, vanish, come back,
    overlap, change score and sometimes label, plus boxes anywhere."""
    base = draw(st.lists(st.tuples(st.floats(0.2, 0.8), st.floats(0.2, 0.8), st.floats(0.03, 0.3),
                                   st.floats(0.03, 0.4), st.sampled_from(LABELS)), max_size=4))
    frames = []
    for _ in range(draw(st.integers(1, 25))):
        objs = []
        for cx, cy, w, h, label in base:
            seen = draw(st.one_of(st.none(), st.tuples(st.floats(-0.05, 0.05), st.floats(-0.05, 0.05),
                                                       st.floats(0.0, 1.0), st.integers(0, 9))))
            if seen is not None:
                dx, dy, score, flip = seen
                objs.append(_obj(cx + dx, cy + dy, w, h, LABELS[1 - LABELS.index(label)] if flip == 0 else label,
                                 score))
        objs += draw(st.lists(random_box, max_size=2))
        frames.append((draw(st.permutations(objs)), draw(st.integers(1, 3000))))
    return frames


def _timed(frames):
    """[(objects, captured_ms, seq)]: strictly increasing whole-millisecond capture times."""
    t, out = T0, []
    for seq, (objs, step) in enumerate(frames):
        t += step
        out.append((objs, t, seq))
    return out


def _snapshot(tracker: CameraTracker):
    return ([(t.track_id, t.label, t.box.tolist(), t.velocity.tolist(), t.last_ms, t.hits) for t in tracker.tracks],
            tracker.last_seq, tracker.last_ms)


@given(random_frames())
@settings(max_examples=scaled(50))
def test_output_keeps_input_order_and_fields_and_only_high_scores_start_tracks(frames):
    tracker = CameraTracker()
    label_of: dict[int, str] = {}  # every track id handed out so far -> its label
    for objs, t, seq in _timed(frames):
        out = tracker.update(objs, t, seq)
        assert len(out) == len(objs)
        for j, (o, r) in enumerate(zip(objs, out)):
            assert (r.label, r.class_id, r.score, r.x1, r.y1, r.x2, r.y2) == (o.label, o.class_id, o.score, o.x1,
                                                                               o.y1, o.x2, o.y2)
            if r.track_id not in label_of and r.track_id != -1:
                # A new track: only from a high-score detection, with the id derived from the source.
                assert o.score >= HIGH and r.track_id == int(t) * 1000 + j
            assert r.track_id >= 0 or o.score < HIGH
            if r.track_id >= 0:
                assert label_of.setdefault(r.track_id, r.label) == r.label  # a track keeps to one label
        ids = [r.track_id for r in out if r.track_id >= 0]
        assert len(ids) == len(set(ids)), ids  # never two objects of one frame on one track
        assert all(o.track_id == -1 for o in objs)  # the input is not modified


@given(linear_motion(n_max=6), st.floats(-0.01, 0.01), st.floats(-0.01, 0.01), st.floats(0.1, HIGH, exclude_max=True),
       st.booleans())
def test_a_duplicate_low_score_box_never_shares_the_track_of_the_high_score_one(path, dx, dy, low, low_first):
    # Two boxes for one object in one frame (an NMS leftover): at most one of them continues the track.
    tracker = CameraTracker()
    for i, (cx, cy, w, h, _) in enumerate(path[:-1]):
        tracker.update([_obj(cx, cy, w, h)], T0 + i * DT, i)
    cx, cy, w, h, _ = path[-1]
    pair = [_obj(cx, cy, w, h), _obj(cx + dx, cy + dy, w, h, score=low)]
    if low_first:
        pair.reverse()
    ids = [o.track_id for o in tracker.update(pair, T0 + (len(path) - 1) * DT, len(path) - 1)]
    high_id, low_id = (ids[1], ids[0]) if low_first else ids
    assert high_id >= 0 and low_id != high_id


@given(random_frames())
@settings(max_examples=scaled(25))
def test_replaying_the_same_frames_to_a_fresh_tracker_gives_the_same_ids(frames):
    timed = _timed(frames)
    runs = [[[o.track_id for o in CameraTracker.update(tr, objs, t, seq)] for objs, t, seq in timed]
            for tr in (CameraTracker(), CameraTracker())]
    assert runs[0] == runs[1]


@given(random_frames(), st.data())
@settings(max_examples=scaled(40))
def test_a_stale_replayed_frame_changes_nothing(frames, data):
    timed = _timed(frames)
    plain, replayed = CameraTracker(), CameraTracker()
    for k, (objs, t, seq) in enumerate(timed):
        assert [o.track_id for o in replayed.update(objs, t, seq)] == [o.track_id for o in plain.update(objs, t, seq)]
        # Redeliver some earlier frame (or this one again): ids by association only, no state change.
        old = data.draw(st.integers(0, k))
        before = _snapshot(replayed)
        replayed.update(*timed[old])
        assert _snapshot(replayed) == before
    assert _snapshot(replayed) == _snapshot(plain)


@given(random_frames(), random_frames(), st.data())
@settings(max_examples=scaled(25))
def test_cameras_are_independent(frames_a, frames_b, data):
    a, b = _timed(frames_a), _timed(frames_b)
    ta, tb = CameraTracker(), CameraTracker()
    alone_a = [[o.track_id for o in ta.update(*f)] for f in a]
    alone_b = [[o.track_id for o in tb.update(*f)] for f in b]
    trackers = Trackers()
    got = {"a": [], "b": []}
    queues = {"a": list(a), "b": list(b)}
    while queues["a"] or queues["b"]:
        cam = data.draw(st.sampled_from([c for c in "ab" if queues[c]]))
        got[cam].append([o.track_id for o in trackers.update(cam, *queues[cam].pop(0))])
    assert got == {"a": alone_a, "b": alone_b}


def test_a_redelivered_frame_from_before_a_gateway_restart_changes_nothing():
    tracker = CameraTracker()
    tracker.update([_obj(0.30, 0.45, 0.1, 0.3)], T0, 500)
    tracker.update([_obj(0.32, 0.45, 0.1, 0.3)], T0 + DT, 501)
    tracker.update([_obj(0.34, 0.45, 0.1, 0.3)], T0 + 2 * DT, 0)  # the gateway restarted: seq begins again
    before = _snapshot(tracker)
    tracker.update([_obj(0.32, 0.45, 0.1, 0.3)], T0 + DT, 501)  # seq 501 redelivered (a consumer rebalance)
    assert _snapshot(tracker) == before
