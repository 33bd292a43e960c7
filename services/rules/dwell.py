"""dwell (loitering): one tracked object stays in a zone longer than ``seconds``.

Per track: when it was first seen in the zone and when last. ``seconds`` after the first sighting,
if it is still there, an incident starts for that track; it ends once the track has not been seen in
the zone for ``clear_s``. A track that leaves and comes back within ``clear_s`` keeps its clock, so a
detector miss does not restart it. Event time throughout; objects without a track id are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aimass.contracts import Detections, Violation
from aimass.site import DwellRule
from aimass_rules.evaluator import Incident, violation_id
from aimass_rules.objects import ZoneEvaluator


@dataclass
class Stay:
    first_ms: float
    first_seq: int
    last_ms: float
    incident: Incident | None = None


@dataclass
class DwellState:
    stays: dict[int, Stay] = field(default_factory=dict)
    cooldown_until_ms: dict[int, float] = field(default_factory=dict)


class Dwell(ZoneEvaluator):
    rule_type = "dwell"
    state_type = DwellState
    rule: DwellRule

    def on_detections(self, d: Detections, st: DwellState) -> list[Violation]:
        r, now = self.rule, d.captured_ms
        out = []
        for o in [o for o in self.present(d.objects) if o.track_id >= 0]:
            stay = st.stays.get(o.track_id)
            if stay is None:
                stay = st.stays[o.track_id] = Stay(now, d.seq, now)
            stay.last_ms = now
            cooling = now < st.cooldown_until_ms.get(o.track_id, float("-inf"))
            if stay.incident is None and not cooling and now - stay.first_ms >= r.seconds * 1000:
                # One incident per track: two tracks can share their first frame (ids have no '/').
                stay.incident = Incident(
                    violation_id=violation_id(self.site_id, r.id, r.camera, f"{r.zone}/{o.track_id}", stay.first_ms,
                                              stay.first_seq),
                    started_ms=stay.first_ms, first_seq=stay.first_seq, label=o.label, track_id=o.track_id,
                    peak=o.score)
                out.append(self._event("start", stay.incident, d, now,
                                       f"{o.label} (track {o.track_id}) in zone '{self.zone_name}' "
                                       f"for {(now - stay.first_ms) / 1000:.1f} s (limit {r.seconds:g} s)"))
        for tid, stay in list(st.stays.items()):
            if now - stay.last_ms > r.clear_s * 1000:
                del st.stays[tid]
                if stay.incident is not None:
                    st.cooldown_until_ms[tid] = now + r.cooldown_s * 1000
                    out.append(self._event("end", stay.incident, d, now,
                                           f"track {tid} left zone '{self.zone_name}' after "
                                           f"{(stay.last_ms - stay.first_ms) / 1000:.1f} s"))
        for tid in [t for t, until in st.cooldown_until_ms.items() if until < now]:
            del st.cooldown_until_ms[tid]
        return out

    def _event(self, event, inc: Incident, d: Detections, at_ms: float, message: str) -> Violation:
        return self._violation(event, inc, at_ms=at_ms, source_seq=d.seq, stamps=d.stamps, camera_id=self.rule.camera,
                               zone_id=self.rule.zone, score=inc.peak, message=message)

    def close(self, st: DwellState, at_ms: float, reason: str) -> list[Violation]:
        out = []
        for tid, stay in st.stays.items():
            if stay.incident is not None:
                out.append(self._violation("end", stay.incident, at_ms=max(at_ms, stay.first_ms), source_seq=-1,
                                           stamps={}, camera_id=self.rule.camera, zone_id=self.rule.zone,
                                           score=stay.incident.peak, message=f"track {tid}: incident closed: {reason}"))
        st.stays.clear()
        return out
