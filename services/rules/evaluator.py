"""What every rule type implements, and the incident life cycle the rule types share.

An evaluator is built from one rule's configuration and holds no mutable state: the engine keeps one
state object per rule and passes it in. States are plain dataclasses (msgspec.to_builtins /
msgspec.convert round-trip them), so they can be persisted or handed to another worker.

The shared life cycle (``TriggerState`` + ``advance``): each observation (a frame, a reading) is a
*hit* (the condition holds), a *clear* (it clearly does not), or neither (e.g. inside a sensor's
hysteresis band). ``min_hits`` consecutive hits start an incident unless the rule is cooling down;
``clear_after`` consecutive clears end it, and a hit in between resets that count. All times are event
times (the source's ``captured_ms``), never the wall clock, so a replay gives the same result.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from aimass.contracts import Detections, SensorReading, Violation
from aimass.site import Site

SourceKind = Literal["camera", "sensor", "site"]
Source = tuple[SourceKind, str]  # which input stream a rule reads, e.g. ("camera", "cam-1"); "site": its violations
Edge = Literal["start", "end"]


def violation_id(site_id: str, rule_id: str, source_id: str, zone_id: str, started_ms: float, first_seq: int) -> str:
    """Deterministic incident id: replaying the same input yields the same id, so the sink can
    deduplicate on it. Ids cannot contain '|' (see aimass.site.IdStr), so the key is unambiguous."""
    key = f"{site_id}|{rule_id}|{source_id}|{zone_id}|{started_ms:.3f}|{first_seq}"
    return hashlib.sha1(key.encode()).hexdigest()[:32]


@dataclass
class Incident:
    violation_id: str
    started_ms: float  # event time of the first hit of the streak that started it
    first_seq: int
    label: str = ""
    track_id: int = -1
    peak: float = 0.0  # best score (zones) or most extreme value (sensors) seen while it was open
    last_update_ms: float = 0.0  # event time of the last update event (0: none yet)


@dataclass
class TriggerState:
    streak: int = 0  # consecutive hits while no incident is open
    streak_start_ms: float = 0.0
    streak_start_seq: int = -1
    gap: int = 0  # consecutive non-hits inside the current streak
    clears: int = 0  # consecutive clears while an incident is open
    incident: Incident | None = None
    cooldown_until_ms: float | None = None  # event time before which no new incident starts


def advance(st: TriggerState, *, hit: bool, clear: bool, at_ms: float, seq: int,
            min_hits: int, clear_after: int, max_gap: int = 0) -> Edge | None:
    """Feed one observation; return "start" or "end" when the caller must open or close the incident
    (with ``open_incident`` / ``close_incident``), else None.

    Hits during a cooldown still build the streak, so an object that stays past the cooldown starts
    an incident on the first hit after it elapses (started_ms is then the streak's first hit);
    one that leaves before it starts nothing. Up to ``max_gap`` consecutive non-hits inside a streak
    (detector misses) neither break it nor count towards it.
    """
    if st.incident is None:
        if not hit:
            st.gap += 1
            if st.gap > max_gap:
                st.streak, st.gap = 0, 0
            return None
        st.gap = 0
        if st.streak == 0:
            st.streak_start_ms, st.streak_start_seq = at_ms, seq
        st.streak += 1
        cooling = st.cooldown_until_ms is not None and at_ms < st.cooldown_until_ms
        return "start" if st.streak >= min_hits and not cooling else None
    if hit:
        st.clears = 0
    elif clear:
        st.clears += 1
        if st.clears >= clear_after:
            return "end"
    return None


def update_due(incident: Incident, at_ms: float, every_s: float) -> bool:
    """Whether a lasting incident owes its consumers an ``update`` event now (every ``every_s`` of
    event time after its start; 0 turns updates off). Marks the update as sent."""
    last = incident.last_update_ms or incident.started_ms
    if every_s <= 0 or at_ms - last < every_s * 1000:
        return False
    incident.last_update_ms = at_ms
    return True


def open_incident(st: TriggerState, incident: Incident) -> None:
    st.incident, st.clears = incident, 0


def close_incident(st: TriggerState, at_ms: float, cooldown_s: float) -> Incident:
    incident = st.incident
    assert incident is not None
    st.incident, st.streak, st.clears = None, 0, 0
    st.cooldown_until_ms = at_ms + cooldown_s * 1000.0
    return incident


class RuleEvaluator:
    """One rule type's logic. Subclasses set ``rule_type`` (the site file's ``type``) and
    ``state_type``, and override the input handlers they care about."""

    rule_type: ClassVar[str]
    state_type: ClassVar[type] = TriggerState

    def __init__(self, rule: Any, site: Site):
        self.rule = rule
        self.site_id = site.site.id

    @property
    def config(self) -> Any:
        """Everything the evaluation depends on: the engine keeps a rule's state across a site change
        only while this compares equal. Subclasses add what the rule references (a zone's polygon)."""
        return (self.site_id, self.rule)

    def sources(self) -> tuple[Source, ...]:
        raise NotImplementedError

    def home(self) -> Source:
        """The input stream whose partition keeps this rule's state (aimass.state): the worker that
        owns that partition evaluates the rule, also on clock ticks."""
        return self.sources()[0]

    def new_state(self) -> Any:
        return self.state_type()

    def on_detections(self, d: Detections, state: Any) -> list[Violation]:
        return []

    def on_reading(self, r: SensorReading, state: Any) -> list[Violation]:
        return []

    def on_tick(self, now_ms: float, state: Any) -> list[Violation]:
        """The worker's clock moved on (rules that judge silence)."""
        return []

    def listens(self) -> tuple[str, ...]:
        """Ids of the rules whose violation events this rule reads (correlation)."""
        return ()

    def on_violation(self, v: Violation, state: Any) -> list[Violation]:
        return []

    def close(self, state: Any, at_ms: float, reason: str) -> list[Violation]:
        """End an open incident because the rule itself changed or went away (not because of input)."""
        return []

    def _violation(self, event: Edge, incident: Incident, *, at_ms: float, source_seq: int,
                   stamps: dict[str, float], message: str, **fields: Any) -> Violation:
        return Violation(
            violation_id=incident.violation_id, event=event, site_id=self.site_id, rule_id=self.rule.id,
            rule_type=self.rule_type, severity=self.rule.severity, label=incident.label,
            track_id=incident.track_id, started_ms=incident.started_ms, at_ms=at_ms, source_seq=source_seq,
            message=message, stamps=dict(stamps), **fields,
        )


class SensorEvaluator(RuleEvaluator):
    """Base of the rules that read one sensor (``rule.sensor``)."""

    def sources(self) -> tuple[Source, ...]:
        return (("sensor", self.rule.sensor),)
