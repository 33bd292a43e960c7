"""The rule engine: routes each detection frame and sensor reading to the rules that read its camera
or sensor, and returns the violation events they raise. Pure logic; the Faust agent owns the I/O.

Each rule type is a ``RuleEvaluator`` (see evaluator.py) registered in ``EVALUATORS``; the engine
holds one plain-data state object per rule and one ``Cursor`` per source.

Duplicates and restarts, per camera or sensor (``Cursor.admit``):
  * seq greater than the last accepted one: new input, unless it was captured before the current
    gateway run began (a redelivery from a run before a restart, whose seq may well be higher);
  * seq not greater, capture time strictly later: the gateway restarted and its seq began again; the
    run's first capture time is remembered. No "far backwards" threshold is needed: a redelivered or
    reordered message carries its original, earlier-or-equal capture time, so only a new gateway run
    can look like this. Rule state carries on across a restart (an open incident ends the usual way);
  * otherwise: a duplicate delivery (a retry) or a stale reordered message, ignored and counted.

Correlation rules read other rules' events. The worker feeds every event on the violations topic back
through ``on_violation`` (so they work across workers, cameras and sensors); offline callers use
``follow``, which does the same in memory.

State per source (``export_state`` / ``import_state`` / ``forget``): a source's cursor and the states of
the rules kept with it (``RuleEvaluator.home``), as plain data, so the worker can store it in a state
topic and a restarted worker can resume. Each rule's state is stored with a fingerprint of its
configuration and is resumed only while that is unchanged.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import msgspec

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
from aimass_rules.stationary import LeftBehind, Stopped
from aimass_rules.zone_intrusion import ZoneIntrusion

EVALUATORS: dict[str, type[RuleEvaluator]] = {
    cls.rule_type: cls for cls in (ZoneIntrusion, LineCrossing, Dwell, Stopped, LeftBehind, Occupancy, SensorThreshold,
                                   SensorRate, SensorStale, Correlation)}


@dataclass
class Cursor:
    """The last input accepted from one camera or sensor."""

    seq: int
    captured_ms: float
    run_start_ms: float = float("-inf")  # capture time of the current gateway run's first input

    def admit(self, seq: int, captured_ms: float) -> str:
        """"new", "restart" (accepted too) or "stale"; advances the cursor when accepted."""
        if seq > self.seq and captured_ms >= self.run_start_ms:
            verdict = "new"
        elif seq <= self.seq and captured_ms > self.captured_ms:
            verdict = "restart"
            self.run_start_ms = captured_ms
        else:
            return "stale"
        self.seq, self.captured_ms = seq, captured_ms
        return verdict


class Route(NamedTuple):
    """One rule reading one source, as the engine calls it for every message of that source."""

    evaluator: RuleEvaluator
    rule_id: str
    handle: Callable[[Any, Any], list[Violation]]  # the evaluator's on_detections or on_reading
    schedule: list  # the rule's windows; empty: always armed


@dataclass
class EngineStats:
    stale: int = 0  # duplicate or out-of-order input, ignored
    restarts: int = 0  # gateway restarts detected (seq began again)
    foreign: int = 0  # input stamped with another site's id, ignored


def _sources_of(site: Site) -> dict[str, frozenset[str]]:
    return {"camera": frozenset(c.id for c in site.cameras), "sensor": frozenset(s.id for s in site.sensors)}


class RuleEngine:
    """``on_detections`` / ``on_reading`` for every input message, in partition order; ``replace_site``
    when the site file changes. Each returns the violation events to publish, in order."""

    def __init__(self, site: Site, clock: Callable[[], float] = now_ms):
        self.clock = clock  # wall clock for the rules_out stamp only; rules run on event time
        self.stats = EngineStats()
        self.cursors: dict[Source, Cursor] = {}
        self.states: dict[str, Any] = {}  # rule id -> its evaluator's state (a dataclass)
        self.site = site
        self._known = _sources_of(site)
        self._evaluators: dict[str, RuleEvaluator] = {}
        self._routes: dict[Source, list[Route]] = {}
        self._install(self._build(site), {})

    def knows(self, source: Source) -> bool:
        """Whether the site file defines this camera or sensor."""
        return source[1] in self.known(source[0])

    def known(self, kind: str) -> frozenset[str]:
        """The ids of the site's cameras or sensors (``kind``)."""
        return self._known.get(kind, frozenset())

    def on_detections(self, d: Detections) -> list[Violation]:
        return self._dispatch(("camera", d.camera_id), d)

    def on_reading(self, r: SensorReading) -> list[Violation]:
        return self._dispatch(("sensor", r.sensor_id), r)

    def on_tick(self, now_ms: float, owns: Callable[[Source], bool] | None = None) -> list[Violation]:
        """The worker's clock (rules that judge silence, e.g. a stale sensor). ``owns`` limits it to
        the rules whose home source this worker owns (with several workers, each judges its own)."""
        out: list[Violation] = []
        for ev in self._evaluators.values():
            if (owns is None or owns(ev.home())) and armed(ev.rule.schedule, self.site.site.timezone, now_ms):
                out += ev.on_tick(now_ms, self.states[ev.rule.id])
        return self._stamp(out)

    def on_violation(self, v: Violation) -> list[Violation]:
        """A violation event from the violations topic: the correlation rules listening to its rule."""
        if v.site_id != self.site.site.id:
            return []
        out: list[Violation] = []
        for ev in self._listeners.get(v.rule_id, ()):
            out += ev.on_violation(v, self.states[ev.rule.id])
        return self._stamp(out)

    def follow(self, events: list[Violation]) -> list[Violation]:
        """``events`` and every correlation event they lead to, as the violations topic would feed them
        back (for offline use: the evaluation harness and tests)."""
        out, queue = [], list(events)
        while queue:
            v = queue.pop(0)
            out.append(v)
            queue += self.on_violation(v)
        return out

    # -- state per source ---------------------------------------------------------------------

    def home_of(self, rule_id: str) -> Source:
        return self._evaluators[rule_id].home()

    def export_state(self, source: Source) -> dict:
        """The source's cursor and its rules' states, as plain data (see import_state)."""
        cur = self.cursors.get(source)
        return {"cursor": [cur.seq, cur.captured_ms, cur.run_start_ms] if cur else None,
                "rules": {rid: {"config": self._fingerprints[rid], "state": msgspec.to_builtins(self.states[rid])}
                          for rid in self._homes.get(source, ())}}

    def import_state(self, source: Source, data: dict) -> int:
        """Resume a source from ``export_state`` output; rules whose configuration changed since start
        fresh. Returns the number of rule states resumed."""
        cur = data.get("cursor")
        if cur:
            self.cursors[source] = Cursor(int(cur[0]), float(cur[1]), float(cur[2]) if len(cur) > 2 else float("-inf"))
        resumed = 0
        for rid, saved in (data.get("rules") or {}).items():
            ev = self._evaluators.get(rid)
            if ev is None or ev.home() != source or saved.get("config") != self._fingerprints[rid]:
                continue
            try:
                self.states[rid] = msgspec.convert(saved["state"], ev.state_type)
                resumed += 1
            except (msgspec.ValidationError, KeyError, TypeError):
                self.states[rid] = ev.new_state()
        return resumed

    def forget(self, source: Source) -> None:
        """Drop a source's cursor and its rules' states (another worker owns it now)."""
        self.cursors.pop(source, None)
        for rid in self._homes.get(source, ()):
            self.states[rid] = self._evaluators[rid].new_state()

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
        self._known = _sources_of(site)
        self.cursors = {k: c for k, c in self.cursors.items() if self.knows(k)}
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
        self._homes: dict[Source, list[str]] = {}
        self._fingerprints = {rid: hashlib.sha1(repr(ev.config).encode()).hexdigest()[:16] for rid, ev in evals.items()}
        for ev in self._evaluators.values():
            for src in ev.sources():
                handler = ev.on_detections if src[0] == "camera" else ev.on_reading
                self._routes.setdefault(src, []).append(Route(ev, ev.rule.id, handler, ev.rule.schedule))
            for rid in ev.listens():
                self._listeners.setdefault(rid, []).append(ev)
            self._homes.setdefault(ev.home(), []).append(ev.rule.id)

    def _dispatch(self, source: Source, msg: Detections | SensorReading) -> list[Violation]:
        # Every input message passes here: its routes are built once per site file.
        if msg.site_id != self.site.site.id:
            self.stats.foreign += 1
            return []
        cur = self.cursors.get(source)
        if cur is None:
            self.cursors[source] = Cursor(msg.seq, msg.captured_ms, msg.captured_ms)
        else:
            verdict = cur.admit(msg.seq, msg.captured_ms)
            if verdict == "stale":
                self.stats.stale += 1
                return []
            if verdict == "restart":
                self.stats.restarts += 1
        out: list[Violation] = []
        states = self.states
        for route in self._routes.get(source, ()):
            state = states[route.rule_id]
            if route.schedule and not armed(route.schedule, self.site.site.timezone, msg.captured_ms):
                # Outside its schedule a rule sees nothing; an incident still open is ended.
                out += route.evaluator.close(state, msg.captured_ms, "outside the rule's schedule")
                continue
            out += route.handle(msg, state)
        return self._stamp(out)

    def _last_event_ms(self, ev: RuleEvaluator) -> float:
        times = [self.cursors[s].captured_ms for s in ev.sources() if s in self.cursors]
        return max(times) if times else 0.0

    def _stamp(self, out: list[Violation]) -> list[Violation]:
        if out:
            t = self.clock()
            for v in out:
                v.stamps["rules_out"] = t
        return out
