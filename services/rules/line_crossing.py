"""line_crossing: a tracked object's bottom centre crosses a tripwire, in a given direction.

Each track's side of the line is remembered once the object stands at least ``margin`` away from it;
a change of remembered side, with the step between the two positions passing through the segment
(not its extension), is a crossing. So jitter on the line is not a crossing, and walking past the
end of the line is not one either. A crossing is instantaneous: one ``start`` event per crossing, and
the same track does not fire again within ``cooldown_s``. Objects without a track id are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from aimass.contracts import Detections, Violation
from aimass.site import LineCrossingRule, Site
from aimass_rules.evaluator import Incident, RuleEvaluator, Source, violation_id
from aimass_rules.objects import standing

FORGET_MS = 10_000.0  # a track unseen this long is forgotten


@dataclass
class TrackSide:
    side: int  # +1 side B (right of the line as drawn), -1 side A
    x: float
    y: float
    seen_ms: float
    fired_ms: float = float("-inf")


@dataclass
class CrossingState:
    tracks: dict[int, TrackSide] = field(default_factory=dict)


def side_of(p0: tuple[float, float], p1: tuple[float, float], length: float, x: float, y: float) -> tuple[int, float]:
    """(sign, distance) of point (x, y) from the line p0→p1 of ``length``; sign +1 is the right side as
    drawn on the image (y grows downwards), -1 the left, 0 on it."""
    cross = (p1[0] - p0[0]) * (y - p0[1]) - (p1[1] - p0[1]) * (x - p0[0])
    return (cross > 0) - (cross < 0), abs(cross) / length


def segments_cross(a0, a1, b0, b1) -> bool:
    """Whether segment a0-a1 meets segment b0-b1 (touching counts)."""
    def orient(p, q, r):
        v = (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])
        return (v > 0) - (v < 0)
    o1, o2, o3, o4 = orient(a0, a1, b0), orient(a0, a1, b1), orient(b0, b1, a0), orient(b0, b1, a1)
    return o1 != o2 and o3 != o4


class LineCrossing(RuleEvaluator):
    rule_type = "line_crossing"
    state_type = CrossingState
    rule: LineCrossingRule

    def __init__(self, rule: LineCrossingRule, site: Site):
        super().__init__(rule, site)
        self.line = site.camera(rule.camera).line(rule.line)
        self.p0, self.p1 = (tuple(map(float, p)) for p in self.line.points)
        self.length = float(np.hypot(self.p1[0] - self.p0[0], self.p1[1] - self.p0[1]))
        self.classes = frozenset(rule.classes)
        self.wanted = {"a_to_b": {1}, "b_to_a": {-1}, "either": {1, -1}}[rule.direction]

    @property
    def config(self):
        return (self.site_id, self.rule, self.line)

    def sources(self) -> tuple[Source, ...]:
        return (("camera", self.rule.camera),)

    def on_detections(self, d: Detections, st: CrossingState) -> list[Violation]:
        r = self.rule
        out = []
        objs = standing(d.objects, self.classes, r.min_score, tracked=True)
        if objs:
            for o, x, y in objs:
                sign, dist = side_of(self.p0, self.p1, self.length, x, y)
                prev = st.tracks.get(o.track_id)
                if dist < r.margin or sign == 0:
                    if prev is not None:
                        prev.seen_ms = d.captured_ms
                    continue  # on the line: keep the side it had
                if prev is None:
                    st.tracks[o.track_id] = TrackSide(sign, x, y, d.captured_ms)
                    continue
                crossed = (sign != prev.side
                           and segments_cross((prev.x, prev.y), (x, y), self.p0, self.p1))
                if crossed and sign in self.wanted and d.captured_ms - prev.fired_ms >= r.cooldown_s * 1000:
                    prev.fired_ms = d.captured_ms
                    out.append(self._crossing(d, o, sign))
                prev.side, prev.x, prev.y, prev.seen_ms = sign, x, y, d.captured_ms
        for tid in [t for t, s in st.tracks.items() if d.captured_ms - s.seen_ms > FORGET_MS]:
            del st.tracks[tid]
        return out

    def _crossing(self, d: Detections, o, sign: int) -> Violation:
        r = self.rule
        way = "A→B" if sign > 0 else "B→A"
        # One incident per crossing: two tracks can cross in the same frame. Ids have no '/', so the
        # key stays unambiguous.
        inc = Incident(violation_id=violation_id(self.site_id, r.id, r.camera, f"{r.line}/{o.track_id}", d.captured_ms,
                                                 d.seq),
                       started_ms=d.captured_ms, first_seq=d.seq, label=o.label, track_id=o.track_id, peak=o.score)
        return self._violation("start", inc, at_ms=d.captured_ms, source_seq=d.seq, stamps=d.stamps,
                               camera_id=r.camera, zone_id=r.line, score=o.score,
                               message=f"{o.label} (track {o.track_id}) crossed line "
                                       f"'{self.line.name or self.line.id}' {way} on camera {r.camera}")
