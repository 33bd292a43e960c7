"""correlation: two other rules start incidents within ``within_s`` of each other, in either order
(a smoke sensor and a person in the server room; a door opening and a camera seeing someone).

Driven by the other rules' start events (the engine feeds them in), so it works across cameras,
sensors and topics. One correlated incident per pair of starts; ``cooldown_s`` after one fires,
further pairs are ignored. An instantaneous event: a start only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aimass.contracts import Violation
from aimass.site import CorrelationRule
from aimass_rules.evaluator import Incident, RuleEvaluator, Source, violation_id


@dataclass
class CorrelationState:
    last_start: dict[str, tuple[float, str]] = field(default_factory=dict)  # rule id -> (at_ms, violation id)
    fired_ms: float = float("-inf")


class Correlation(RuleEvaluator):
    rule_type = "correlation"
    state_type = CorrelationState
    rule: CorrelationRule

    def sources(self) -> tuple[Source, ...]:
        return ()

    def listens(self) -> tuple[str, ...]:
        return self.rule.rules

    def on_violation(self, v: Violation, st: CorrelationState) -> list[Violation]:
        r = self.rule
        if v.event != "start" or v.rule_id not in r.rules:
            return []
        st.last_start[v.rule_id] = (v.at_ms, v.violation_id)
        other = r.rules[1] if v.rule_id == r.rules[0] else r.rules[0]
        if other not in st.last_start:
            return []
        other_ms, other_vid = st.last_start[other]
        if abs(v.at_ms - other_ms) > r.within_s * 1000 or v.at_ms - st.fired_ms < r.cooldown_s * 1000:
            return []
        st.fired_ms = v.at_ms
        first = min(other_ms, v.at_ms)
        inc = Incident(violation_id(self.site_id, r.id, *sorted((v.violation_id, other_vid)), first, v.source_seq),
                       started_ms=first, first_seq=v.source_seq, label=v.label, track_id=v.track_id)
        return [self._violation("start", inc, at_ms=v.at_ms, source_seq=v.source_seq, stamps=v.stamps,
                                camera_id=v.camera_id, zone_id=v.zone_id, sensor_id=v.sensor_id, value=v.value,
                                message=f"{r.rules[0]} and {r.rules[1]} within {abs(v.at_ms - other_ms) / 1000:.1f} s "
                                        f"(incidents {other_vid[:8]} and {v.violation_id[:8]})")]
