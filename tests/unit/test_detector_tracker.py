"""The tracker on scripted boxes: stable ids through motion, misses, low scores and crossing paths."""

import numpy as np

from aimass.contracts import DetectedObject
from aimass_detector.tracker import CameraTracker, TrackerConfig, Trackers, greedy_match, iou_matrix

DT = 200.0  # 5 fps


def _box(cx, label="person", score=0.9, w=0.1, h=0.3, cy=0.6):
    return DetectedObject(label, 0, score, cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def _run(tracker, frames, t0=1_000_000.0):
    return [[o.track_id for o in tracker.update(objs, t0 + i * DT, i)] for i, objs in enumerate(frames)]


def test_iou_and_greedy_match_known_values():
    a = np.array([[0, 0, 2, 2], [10, 10, 11, 11]], float)
    b = np.array([[1, 1, 3, 3], [0, 0, 2, 2]], float)
    np.testing.assert_allclose(iou_matrix(a, b), [[1 / 7, 1.0], [0, 0]])
    assert greedy_match(iou_matrix(a, b), 0.1) == [(0, 1)]
    assert iou_matrix(a[:0], b).shape == (0, 2)


def test_moving_objects_keep_their_ids_and_ids_come_from_the_source():
    frames = [[_box(0.1 + 0.02 * i), _box(0.8 - 0.01 * i)] for i in range(10)]
    ids = _run(CameraTracker(), frames)
    assert ids[0] == [1_000_000 * 1000 + 0, 1_000_000 * 1000 + 1]
    assert all(row == ids[0] for row in ids)


def test_id_survives_missed_frames_and_occlusion():
    frames = [[_box(0.1 + 0.03 * i)] if i not in (4, 5, 6) else [] for i in range(12)]
    ids = _run(CameraTracker(), frames)
    kept = {row[0] for row in ids if row}
    assert len(kept) == 1


def test_two_people_crossing_paths_keep_their_ids():
    # A walks right, B walks left; their boxes overlap for a few frames in the middle.
    frames = [[_box(0.2 + 0.04 * i), _box(0.8 - 0.04 * i)] for i in range(16)]
    ids = _run(CameraTracker(), frames)
    a, b = ids[0]
    assert all(row == [a, b] for row in ids), ids


def test_low_scores_continue_tracks_but_never_start_them():
    t = CameraTracker()
    frames = [[_box(0.2)], [_box(0.21, score=0.42)], [_box(0.22)]]
    ids = _run(t, frames)
    assert ids[0] == ids[1] == ids[2]
    lone = CameraTracker().update([_box(0.5, score=0.42)], 0.0, 0)
    assert lone[0].track_id == -1


def test_labels_do_not_mix_and_lost_tracks_expire():
    t = CameraTracker(TrackerConfig(max_lost_ms=1000))
    first = t.update([_box(0.3)], 0.0, 0)[0].track_id
    car = t.update([_box(0.3, label="vehicle")], 200.0, 1)[0].track_id
    assert car != first
    again = t.update([_box(0.3)], 2000.0, 2)[0].track_id  # 2 s later: the person's track expired
    assert again not in (first, -1)


def test_replayed_frame_gets_the_same_ids_without_changing_state():
    t = CameraTracker()
    frames = [[_box(0.1 + 0.02 * i)] for i in range(5)]
    ids = _run(t, frames)
    before = [tr.box.copy() for tr in t.tracks]
    replay = t.update(frames[2], 1_000_000.0 + 2 * DT, 2)
    assert replay[0].track_id == ids[2][0]
    assert all(np.array_equal(a, tr.box) for a, tr in zip(before, t.tracks))


def test_trackers_are_per_camera():
    ts = Trackers()
    a = ts.update("cam-a", [_box(0.5)], 0.0, 0)[0].track_id
    b = ts.update("cam-b", [_box(0.5)], 0.0, 0)[0].track_id
    assert a == b == 0  # same source-derived id, but separate state
    assert ts.update("cam-a", [_box(0.51)], 200.0, 1)[0].track_id == a
    assert set(ts.cameras) == {"cam-a", "cam-b"}


def test_tracker_state_round_trips_through_the_state_topic_encoding():
    from aimass import state
    from aimass_detector.tracker import CameraTracker
    t = CameraTracker()
    for i in range(4):
        t.update([DetectedObject("person", 0, 0.9, 0.1 + 0.01 * i, 0.2, 0.3 + 0.01 * i, 0.8)], 1000.0 + 200 * i, i)
    back = CameraTracker.from_state(state.decode(state.encode(t.to_state())))
    assert (back.last_seq, back.last_ms, back.run_start_ms) == (t.last_seq, t.last_ms, t.run_start_ms)
    assert [(k.track_id, k.label, k.box.tolist(), k.velocity.tolist(), k.last_ms, k.hits) for k in back.tracks] == \
           [(k.track_id, k.label, k.box.tolist(), k.velocity.tolist(), k.last_ms, k.hits) for k in t.tracks]
    nxt = [DetectedObject("person", 0, 0.9, 0.14, 0.2, 0.34, 0.8)]
    assert [o.track_id for o in back.update(nxt, 1800.0, 4)] == [o.track_id for o in t.update(nxt, 1800.0, 4)]
    assert back.handled(1600.0, 3) and not back.handled(2000.0, 5)
