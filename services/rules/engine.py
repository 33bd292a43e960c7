"""The rule engine: routes each detection frame and sensor reading to the rules that read its camera
or sensor, and returns the violation events they raise. Pure logic; the Faust agent owns the I/O.

Each rule type is a ``RuleEvaluator`` (see evaluator.py) registered in ``EVALUATORS``; the engine
holds one plain-data state object per rule and one ``Cursor`` per source.

Duplicates and restarts, per camera or sensor (``Cursor.admit``):
  * seq greater than the last accepted one: new input, unless its capture time is more than
    ``STALE_MS`` older than the last accepted one's (a redelivery from a gateway run before a restart);
  * seq not greater, capture time strictly later: the gateway restarted and its seq began again.
    No "far backwards" threshold is needed: a redelivered or reordered message carries its original,
    earlier-or-equal capture time, so only a new gateway run can look like this. Rule state carries
    on across a restart (an open incident ends the usual way);
  * otherwise: a duplicate delivery (a retry) or a stale reordered message, ignored and counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from aimass.contracts import Detections, SensorReading, Violation, now_ms
from aimass.site import Site
from aimass_rules.evaluator import RuleEvaluator, Source
from aimass_rules.correlation import Correlation
from aimass_rules.dwell import Dwell
from aimass_rules.line_crossing import LineCrossing
from aimass_rules.occupancy import Occupancy
from aimass_rules.schedule import armed
from aimass_rules.sensor_rate import SensorRate
from aimass_rules.sensor_stale import SensorStale
from aimass_rules.sensor_threshold import SensorThreshold
from aimass_rules.zone_intrusion import ZoneIntrusion

EVALUATORS: dict[str, type[RuleEvaluator]] = {
    cls.rule_type: cls for cls in (ZoneIntrusion, LineCrossing, Dwell, Occupancy, SensorThreshold, SensorRate,
                                   SensorStale, Correlation)}

STALE_MS = 60_000.0


@dataclass
class Cursor:
    """The last input accepted from one camera or sensor."""

    seq: int
    captured_ms: float

    def admit(self, seq: int, captured_ms: float) -> str:
        """"new", "restart" (accepted too) or "stale"; advances the cursor when accepted."""
        if seq > self.seq and captured_ms >= self.captured_ms - STALE_MS:
            verdict = "new"
        elif seq <= self.seq and captured_ms > self.captured_ms:
            verdict = "restart"
        else:
            return "stale"
        self.seq, self.captured_ms = seq, captured_ms
        return verdict


@dataclass
class EngineStats:
    stale: int = 0  # duplicate or out-of-order input, ignored
    restarts: int = 0  # gateway restarts detected (seq began again)
    foreign: int = 0  # input stamped with another site's id, ignored


class RuleEngine:
    """``on_detections`` / ``on_reading`` for every input message, in partition order; ``replace_site``
    when the site file changes. Each returns the violation events to publish, in order."""

    def __init__(self, site: Site, clock: Callable[[], float] = now_ms):
        self.clock = clock  # wall clock for the rules_out stamp only; rules run on event time
        self.stats = EngineStats()
        self.cursors: dict[Source, Cursor] = {}
        self.states: dict[str, Any] = {}  # rule id -> its evaluator's state (a dataclass)
        self.site = site
        self._evaluators: dict[str, RuleEvaluator] = {}
        self._routes: dict[Source, list[RuleEvaluator]] = {}
        self._install(self._build(site), {})

    def on_detections(self, d: Detections) -> list[Violation]:
        return self._dispatch(("camera", d.camera_id), d)

    def on_reading(self, r: SensorReading) -> list[Violation]:
        return self._dispatch(("sensor", r.sensor_id), r)

    def on_tick(self, now_ms: float) -> list[Violation]:
        """The worker's clock (rules that judge silence, e.g. a stale sensor)."""
        out: list[Violation] = []
        for ev in self._evaluators.values():
            if armed(ev.rule.schedule, self.site.site.timezone, now_ms):
                out += ev.on_tick(now_ms, self.states[ev.rule.id])
        return self._stamp(self._correlate(out))

    def replace_site(self, site: Site) -> list[Violation]:
        """Switch to ``site``. A rule whose evaluator config (the rule and what it references, e.g. its
        zone's polygon) is unchanged keeps its state; a changed, disabled or removed rule loses it, and an
        incident it had open gets an ``end`` event (returned) at the last event time seen from its source,
        so no incident is left without an end."""
        old_evals, old_states = self._evaluators, self.states
        new_evals = self._build(site)
        kept = {rid for rid, ev in new_evals.items()
                if rid in old_evals and type(old_evals[rid]) is type(ev) and old_evals[rid].config == ev.config}
        out: list[Violation] = []
        for rid, ev in old_evals.items():
            if rid not in kept:
                reason = "rule changed" if rid in new_evals else "rule removed or disabled"
                out += ev.close(old_states[rid], self._last_event_ms(ev), reason)
        sources = {("camera", c.id) for c in site.cameras} | {("sensor", s.id) for s in site.sensors}
        self.cursors = {k: c for k, c in self.cursors.items() if k in sources}
        self.site = site
        self._install(new_evals, {rid: old_states[rid] for rid in kept})
        return self._stamp(out)

    def _build(self, site: Site) -> dict[str, RuleEvaluator]:
        evals: dict[str, RuleEvaluator] = {}
        for rule in site.rules:
            if not rule.enabled:
                continue
            cls = EVALUATORS.get(rule.type)
            if cls is None:
                raise ValueError(f"rule {rule.id!r}: this build has no evaluator for rule type {rule.type!r}")
            evals[rule.id] = cls(rule, site)
        return evals

    def _install(self, evals: dict[str, RuleEvaluator], states: dict[str, Any]) -> None:
        self._evaluators = evals
        self.states = {rid: states[rid] if rid in states else ev.new_state() for rid, ev in evals.items()}
        self._routes = {}
        self._listeners: dict[str, list[RuleEvaluator]] = {}
        for ev in self._evaluators.values():
            for src in ev.sources():
                self._routes.setdefault(src, []).append(ev)
            for rid in ev.listens():
                self._listeners.setdefault(rid, []).append(ev)

    def _dispatch(self, source: Source, msg: Detections | SensorReading) -> list[Violation]:
        if msg.site_id != self.site.site.id:
            self.stats.foreign += 1
            return []
        cur = self.cursors.get(source)
        if cur is None:
            self.cursors[source] = Cursor(msg.seq, msg.captured_ms)
        else:
            verdict = cur.admit(msg.seq, msg.captured_ms)
            if verdict == "stale":
                self.stats.stale += 1
                return []
            if verdict == "restart":
                self.stats.restarts += 1
        out: list[Violation] = []
        for ev in self._routes.get(source, ()):
            state = self.states[ev.rule.id]
            if not armed(ev.rule.schedule, self.site.site.timezone, msg.captured_ms):
                # Outside its schedule a rule sees nothing; an incident still open is ended.
                out += ev.close(state, msg.captured_ms, "outside the rule's schedule")
                continue
            out += ev.on_detections(msg, state) if source[0] == "camera" else ev.on_reading(msg, state)
        return self._stamp(self._correlate(out))

    def _correlate(self, out: list[Violation]) -> list[Violation]:
        """Feed events to the rules that listen to other rules; their events follow (one level)."""
        extra: list[Violation] = []
        for v in out:
            for ev in self._listeners.get(v.rule_id, ()):
                extra += ev.on_violation(v, self.states[ev.rule.id])
        return out + extra

    def _last_event_ms(self, ev: RuleEvaluator) -> float:
        times = [self.cursors[s].captured_ms for s in ev.sources() if s in self.cursors]
        return max(times) if times else 0.0

    def _stamp(self, out: list[Violation]) -> list[Violation]:
        if out:
            t = self.clock()
            for v in out:
                v.stamps["rules_out"] = t
        return out
