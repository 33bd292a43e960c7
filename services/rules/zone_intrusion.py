"""zone_intrusion: an object of a watched class stands in a camera's zone.

Presence is judged at the bottom centre of the box (where the object meets the ground), for objects
whose label is in ``classes`` and whose score is at least ``min_score``. ``min_frames`` frames with
presence start an incident (``max_gap_frames`` missed frames in between do not break the count); ``clear_frames`` consecutive frames without presence end it,
so short detector misses inside one intrusion do not split it. Frames are counted as they arrive: a
frame the pipeline dropped (a gap in seq) neither breaks nor extends a streak.
"""

from __future__ import annotations

from aimass.contracts import Detections, Violation
from aimass.site import ZoneIntrusionRule
from aimass_rules.evaluator import (Incident, TriggerState, advance, close_incident, open_incident, update_due,
                                    violation_id)
from aimass_rules.objects import ZoneEvaluator


class ZoneIntrusion(ZoneEvaluator):
    rule_type = "zone_intrusion"
    state_type = TriggerState
    rule: ZoneIntrusionRule

    def on_detections(self, d: Detections, st: TriggerState) -> list[Violation]:
        inside = self.present(d.objects)
        best = max(inside, key=lambda o: o.score) if inside else None
        r = self.rule
        edge = advance(st, hit=best is not None, clear=best is None, at_ms=d.captured_ms, seq=d.seq,
                       min_hits=r.min_frames, clear_after=r.clear_frames, max_gap=r.max_gap_frames)
        if edge == "start":
            assert best is not None
            inc = Incident(
                violation_id=violation_id(self.site_id, r.id, r.camera, r.zone, st.streak_start_ms, st.streak_start_seq),
                started_ms=st.streak_start_ms, first_seq=st.streak_start_seq, label=best.label,
                track_id=best.track_id, peak=best.score,
            )
            open_incident(st, inc)
            return [self._violation(
                "start", inc, at_ms=d.captured_ms, source_seq=d.seq, stamps=d.stamps, camera_id=r.camera,
                zone_id=r.zone, score=best.score,
                message=f"{best.label} in zone '{self.zone_name}' on camera {r.camera} for {st.streak} frames",
            )]
        if edge == "end":
            inc = close_incident(st, d.captured_ms, r.cooldown_s)
            return [self._violation(
                "end", inc, at_ms=d.captured_ms, source_seq=d.seq, stamps=d.stamps, camera_id=r.camera,
                zone_id=r.zone, score=inc.peak,
                message=(f"zone '{self.zone_name}' on camera {r.camera} clear for {r.clear_frames} frames; "
                         f"{inc.label} was there {(d.captured_ms - inc.started_ms) / 1000:.1f} s"),
            )]
        if best is not None and st.incident is not None:
            inc = st.incident
            inc.peak = max(inc.peak, best.score)
            if update_due(inc, d.captured_ms, r.update_s):
                return [self._violation(
                    "update", inc, at_ms=d.captured_ms, source_seq=d.seq, stamps=d.stamps, camera_id=r.camera,
                    zone_id=r.zone, score=best.score,
                    message=(f"{best.label} still in zone '{self.zone_name}' on camera {r.camera} after "
                             f"{(d.captured_ms - inc.started_ms) / 1000:.0f} s"))]
        return []

    def close(self, st: TriggerState, at_ms: float, reason: str) -> list[Violation]:
        if st.incident is None:
            return []
        at_ms = max(at_ms, st.incident.started_ms)  # no input seen yet (state restored from elsewhere)
        r = self.rule
        inc = close_incident(st, at_ms, r.cooldown_s)
        return [self._violation(
            "end", inc, at_ms=at_ms, source_seq=-1, stamps={}, camera_id=r.camera, zone_id=r.zone, score=inc.peak,
            message=f"incident in zone '{self.zone_name}' on camera {r.camera} closed: {reason}",
        )]
