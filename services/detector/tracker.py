"""Multi-object tracking per camera, in the ByteTrack style: IoU association of predicted track
boxes with detections, high-score detections first, then the low-score ones (which ByteTrack shows
keep a track alive through partial occlusion), with a constant-velocity motion model.

Pure numpy, no GPU. Track ids are derived from the source — the capture time (ms) of the frame where
the track began times 1000 plus the detection's index in that frame — so a replay of the same frames
gives the same ids and ids never collide across worker restarts.

A camera's frames all reach one detector worker (the frames topic is keyed by camera). The worker
stores each camera's tracker (``to_state``) in a state topic after the batch's detections went out
(aimass.state), so after a restart or rebalance the next worker resumes the same tracks
(``from_state``) and recognises frames it already handled (``handled``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from aimass.contracts import DetectedObject


@dataclass
class TrackerConfig:
    high_score: float = 0.5  # detections at or above start tracks and are matched first
    match_iou: float = 0.3  # least IoU between a predicted track box and a detection
    low_match_iou: float = 0.5  # stricter for the second, low-score pass
    max_lost_ms: float = 2000.0  # a track unmatched this long is dropped
    velocity_smoothing: float = 0.5  # weight of the newest motion in the velocity estimate


@dataclass
class Track:
    track_id: int
    label: str
    box: np.ndarray  # (4,) normalised x1, y1, x2, y2 at last_ms
    velocity: np.ndarray  # (4,) per millisecond
    last_ms: float
    hits: int = 1

    def predict(self, at_ms: float) -> np.ndarray:
        return self.box + self.velocity * (at_ms - self.last_ms)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` [N, 4] with every box in ``b`` [M, 4]."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def greedy_match(iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Pairs (row, col) by descending IoU, each row and column used once, IoU ≥ threshold. Greedy
    matching equals the optimal assignment whenever objects do not overlap ambiguously, and needs
    no solver; with a handful of objects per camera it is also the cheaper one."""
    pairs = []
    if iou.size == 0:
        return pairs
    rows, cols = np.nonzero(iou >= threshold)
    order = np.argsort(-iou[rows, cols], kind="stable")
    used_r, used_c = set(), set()
    for r, c in zip(rows[order].tolist(), cols[order].tolist()):
        if r not in used_r and c not in used_c:
            used_r.add(r)
            used_c.add(c)
            pairs.append((r, c))
    return pairs


@dataclass
class CameraTracker:
    config: TrackerConfig = field(default_factory=TrackerConfig)
    tracks: list[Track] = field(default_factory=list)
    last_seq: int = -1
    last_ms: float = float("-inf")
    run_start_ms: float = float("-inf")  # capture time of the current gateway run's first frame

    def handled(self, captured_ms: float, seq: int) -> bool:
        """Whether a frame is one this tracker has already taken in (a redelivery): neither its seq nor
        its capture time is newer than the last frame's, or it was captured before the current gateway
        run began (a redelivery from before a restart, whose seq may be higher). A restart begins seq
        again with later capture times, so its frames are new."""
        return (captured_ms <= self.last_ms and seq <= self.last_seq) or captured_ms < self.run_start_ms

    def to_state(self) -> dict:
        """Plain data for the state topic (see from_state)."""
        def finite(x: float) -> float | None:
            return x if x > float("-inf") else None
        return {"last_seq": self.last_seq, "last_ms": finite(self.last_ms), "run_start_ms": finite(self.run_start_ms),
                "tracks": [[t.track_id, t.label, t.box.tolist(), t.velocity.tolist(), t.last_ms, t.hits]
                           for t in self.tracks]}

    @classmethod
    def from_state(cls, data: dict, config: TrackerConfig | None = None) -> "CameraTracker":
        def time(key: str) -> float:
            return float("-inf") if data.get(key) is None else float(data[key])
        tracks = [Track(int(tid), str(label), np.asarray(box, np.float64), np.asarray(vel, np.float64), float(at), int(hits))
                  for tid, label, box, vel, at, hits in data.get("tracks", [])]
        return cls(config or TrackerConfig(), tracks, int(data.get("last_seq", -1)), time("last_ms"), time("run_start_ms"))

    def update(self, objects: list[DetectedObject], captured_ms: float, seq: int) -> list[DetectedObject]:
        """Assign track ids to one frame's objects (same order as given). Frames must come in capture
        order; a frame older than the last one seen (a replayed duplicate) gets ids by association
        only, without changing any track."""
        cfg = self.config
        stale = self.handled(captured_ms, seq)
        if not stale:
            self.tracks = [t for t in self.tracks if captured_ms - t.last_ms <= cfg.max_lost_ms]
        boxes = np.array([[o.x1, o.y1, o.x2, o.y2] for o in objects], dtype=np.float64).reshape(-1, 4)
        scores = np.array([o.score for o in objects], dtype=np.float64)
        labels = [o.label for o in objects]
        predicted = np.array([t.predict(captured_ms) for t in self.tracks]).reshape(-1, 4)
        iou = iou_matrix(predicted, boxes)
        # A track only takes a detection of its own label.
        same = np.array([[t.label == lb for lb in labels] for t in self.tracks], dtype=bool).reshape(iou.shape)
        iou = np.where(same, iou, 0.0)

        assigned: dict[int, int] = {}  # detection index -> track index
        high = scores >= cfg.high_score
        for mask, threshold in ((high, cfg.match_iou), (~high, cfg.low_match_iou)):
            free_t = [i for i in range(len(self.tracks)) if i not in assigned.values()]
            free_d = [j for j in np.flatnonzero(mask).tolist() if j not in assigned]
            for r, c in greedy_match(iou[np.ix_(free_t, free_d)], threshold):
                assigned[free_d[c]] = free_t[r]

        ids = [-1] * len(objects)
        for j, ti in assigned.items():
            t = self.tracks[ti]
            ids[j] = t.track_id
            if not stale:
                dt = captured_ms - t.last_ms
                if dt > 0:
                    motion = (boxes[j] - t.box) / dt
                    a = cfg.velocity_smoothing
                    t.velocity = motion if t.hits == 1 else a * motion + (1 - a) * t.velocity
                t.box, t.last_ms, t.hits = boxes[j], captured_ms, t.hits + 1
        for j in range(len(objects)):
            if ids[j] == -1 and high[j]:
                ids[j] = int(captured_ms) * 1000 + j
                if not stale:
                    self.tracks.append(Track(ids[j], labels[j], boxes[j], np.zeros(4), captured_ms))
        if not stale:
            if seq <= self.last_seq or self.last_seq < 0:  # a new gateway run (or the first frame)
                self.run_start_ms = captured_ms
            self.last_seq, self.last_ms = seq, captured_ms
        return [DetectedObject(o.label, o.class_id, o.score, o.x1, o.y1, o.x2, o.y2, track_id=i)
                for o, i in zip(objects, ids)]


class Trackers:
    """One CameraTracker per camera."""

    def __init__(self, config: TrackerConfig | None = None):
        self.config = config or TrackerConfig()
        self.cameras: dict[str, CameraTracker] = {}

    def restore(self, camera_id: str, data: dict) -> None:
        self.cameras[camera_id] = CameraTracker.from_state(data, self.config)

    def forget(self, camera_id: str) -> None:
        self.cameras.pop(camera_id, None)

    def handled(self, camera_id: str, captured_ms: float, seq: int) -> bool:
        tracker = self.cameras.get(camera_id)
        return tracker is not None and tracker.handled(captured_ms, seq)

    def update(self, camera_id: str, objects: list[DetectedObject], captured_ms: float, seq: int) -> list[DetectedObject]:
        tracker = self.cameras.get(camera_id)
        if tracker is None:
            tracker = self.cameras[camera_id] = CameraTracker(self.config)
        return tracker.update(objects, captured_ms, seq)
