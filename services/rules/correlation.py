"""correlation: how two other rules' incidents relate in time, across cameras, sensors and topics.

``when: both`` (the default): both rules start incidents within ``within_s`` of each other, in either
order (a smoke sensor and a person in the server room). ``when: first_without_second``: the first rule
starts one and the second does not start one within ``within_s`` before or after it (a door opened
and nobody was seen at it: a forced door). An instantaneous event: a start only.

Driven by the other rules' start events, which the worker reads back from the violations topic (keyed
by site, so one worker sees all of a site's events). "Without" is decided on the worker's clock ticks
once the window has passed; its event time is the end of the window, so a replay gives the same
incident. One incident per pair (or per unanswered start); ``cooldown_s`` after one fires, further
ones are ignored. A start seen twice (a redelivery) counts once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aimass.contracts import Violation
from aimass.site import CorrelationRule
from aimass_rules.evaluator import Incident, RuleEvaluator, Source, violation_id


@dataclass
class Unanswered:
    """A start of the first rule still waiting to see whether the second follows (without-mode)."""

    at_ms: float
    violation_id: str
    source_seq: int = -1
    label: str = ""
    track_id: int = -1
    camera_id: str = ""
    zone_id: str = ""
    sensor_id: str = ""
    value: float = 0.0


@dataclass
class CorrelationState:
    last_start: dict[str, tuple[float, str]] = field(default_factory=dict)  # rule id -> (at_ms, violation id)
    fired_ms: float = float("-inf")
    waiting: list[Unanswered] = field(default_factory=list)


class Correlation(RuleEvaluator):
    rule_type = "correlation"
    state_type = CorrelationState
    rule: CorrelationRule

    def sources(self) -> tuple[Source, ...]:
        return ()

    def home(self) -> Source:
        return ("site", self.site_id)  # fed from the violations topic, which is keyed by site

    def listens(self) -> tuple[str, ...]:
        return self.rule.rules

    def on_violation(self, v: Violation, st: CorrelationState) -> list[Violation]:
        r = self.rule
        if v.event != "start" or v.rule_id not in r.rules:
            return []
        if st.last_start.get(v.rule_id, (0.0, ""))[1] == v.violation_id:
            return []  # the same start again: a redelivery
        st.last_start[v.rule_id] = (v.at_ms, v.violation_id)
        first, second = r.rules
        other = second if v.rule_id == first else first
        window = r.within_s * 1000
        if r.when == "first_without_second":
            if v.rule_id == second:
                st.waiting = [u for u in st.waiting if abs(u.at_ms - v.at_ms) > window]
            elif not (other in st.last_start and abs(v.at_ms - st.last_start[other][0]) <= window):
                st.waiting.append(Unanswered(v.at_ms, v.violation_id, v.source_seq, v.label, v.track_id, v.camera_id,
                                             v.zone_id, v.sensor_id, v.value))
            return []
        if other not in st.last_start:
            return []
        other_ms, other_vid = st.last_start[other]
        if abs(v.at_ms - other_ms) > window or v.at_ms - st.fired_ms < r.cooldown_s * 1000:
            return []
        st.fired_ms = v.at_ms
        first_ms = min(other_ms, v.at_ms)
        inc = Incident(violation_id(self.site_id, r.id, *sorted((v.violation_id, other_vid)), first_ms, v.source_seq),
                       started_ms=first_ms, first_seq=v.source_seq, label=v.label, track_id=v.track_id)
        return [self._violation("start", inc, at_ms=v.at_ms, source_seq=v.source_seq, stamps=v.stamps,
                                camera_id=v.camera_id, zone_id=v.zone_id, sensor_id=v.sensor_id, value=v.value,
                                message=f"{first} and {second} within {abs(v.at_ms - other_ms) / 1000:.1f} s "
                                        f"(incidents {other_vid[:8]} and {v.violation_id[:8]})")]

    def on_tick(self, now_ms: float, st: CorrelationState) -> list[Violation]:
        r = self.rule
        window = r.within_s * 1000
        due = [u for u in st.waiting if now_ms - u.at_ms > window]
        if not due:
            return []
        st.waiting = [u for u in st.waiting if now_ms - u.at_ms <= window]
        out = []
        for u in due:
            at_ms = u.at_ms + window
            if at_ms - st.fired_ms < r.cooldown_s * 1000:
                continue
            st.fired_ms = at_ms
            inc = Incident(violation_id(self.site_id, r.id, u.violation_id, "", u.at_ms, u.source_seq),
                           started_ms=u.at_ms, first_seq=u.source_seq, label=u.label, track_id=u.track_id)
            out.append(self._violation("start", inc, at_ms=at_ms, source_seq=u.source_seq, stamps={},
                                       camera_id=u.camera_id, zone_id=u.zone_id, sensor_id=u.sensor_id, value=u.value,
                                       message=f"{r.rules[0]} (incident {u.violation_id[:8]}) and no {r.rules[1]} "
                                               f"within {r.within_s:g} s"))
        return out
