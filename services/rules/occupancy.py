"""occupancy (crowding): more than ``max_objects`` watched objects in a zone, held for ``hold_s``.

A frame over the limit is a hit; the incident starts once the hits have lasted ``hold_s`` (event
time), with up to ``max_gap_frames`` frames under the limit in between (detector misses) not breaking
the count, and ends after ``clear_frames`` consecutive frames at or under the limit. Needs no tracking.
"""

from __future__ import annotations

from aimass.contracts import Detections, Violation
from aimass.site import OccupancyRule
from aimass_rules.evaluator import (Incident, TriggerState, advance, close_incident, open_incident, update_due,
                                    violation_id)
from aimass_rules.objects import ZoneEvaluator


class Occupancy(ZoneEvaluator):
    rule_type = "occupancy"
    state_type = TriggerState
    rule: OccupancyRule

    def on_detections(self, d: Detections, st: TriggerState) -> list[Violation]:
        r = self.rule
        count = len(self.present(d.objects))
        over = count > r.max_objects
        edge = advance(st, hit=over, clear=not over, at_ms=d.captured_ms, seq=d.seq, min_hits=1,
                       clear_after=r.clear_frames, max_gap=r.max_gap_frames)
        name = self.zone_name
        if edge == "start" and d.captured_ms - st.streak_start_ms >= r.hold_s * 1000:
            inc = Incident(violation_id=violation_id(self.site_id, r.id, r.camera, r.zone, st.streak_start_ms,
                                                     st.streak_start_seq),
                           started_ms=st.streak_start_ms, first_seq=st.streak_start_seq,
                           label="+".join(sorted(self.classes)), peak=count)
            open_incident(st, inc)
            return [self._violation("start", inc, at_ms=d.captured_ms, source_seq=d.seq, stamps=d.stamps,
                                    camera_id=r.camera, zone_id=r.zone, value=count,
                                    message=f"{count} objects in zone '{name}' (limit {r.max_objects}) "
                                            f"for {(d.captured_ms - st.streak_start_ms) / 1000:.1f} s")]
        if edge == "end":
            inc = close_incident(st, d.captured_ms, r.cooldown_s)
            return [self._violation("end", inc, at_ms=d.captured_ms, source_seq=d.seq, stamps=d.stamps,
                                    camera_id=r.camera, zone_id=r.zone, value=inc.peak,
                                    message=f"zone '{name}' back to {count} objects (peak {inc.peak:g})")]
        if over and st.incident is not None:
            st.incident.peak = max(st.incident.peak, count)
            if update_due(st.incident, d.captured_ms, r.update_s):
                return [self._violation("update", st.incident, at_ms=d.captured_ms, source_seq=d.seq, stamps=d.stamps,
                                        camera_id=r.camera, zone_id=r.zone, value=count,
                                        message=f"still {count} objects in zone '{name}' (limit {r.max_objects})")]
        return []

    def close(self, st: TriggerState, at_ms: float, reason: str) -> list[Violation]:
        if st.incident is None:
            return []
        r = self.rule
        inc = close_incident(st, max(at_ms, st.incident.started_ms), r.cooldown_s)
        return [self._violation("end", inc, at_ms=max(at_ms, inc.started_ms), source_seq=-1, stamps={},
                                camera_id=r.camera, zone_id=r.zone, value=inc.peak,
                                message=f"incident in zone '{self.zone_name}' closed: {reason}")]
