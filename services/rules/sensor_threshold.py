"""sensor_threshold: a sensor's value is above ``above`` or below ``below``.

``min_readings`` consecutive readings past a threshold start an incident. It ends on the first reading
that is back inside by the hysteresis margin: value <= above - h and value >= below + h. A reading
between the threshold and that margin neither ends an open incident nor counts towards a new one,
so a value hovering at the threshold raises one incident instead of a start/end every reading.

h is the rule's ``hysteresis`` when given; otherwise 2 % of that threshold's magnitude (so a
threshold of 0 has none), capped at a quarter of the band when both bounds are set so that the
band's middle always counts as inside.
"""

from __future__ import annotations

from aimass.contracts import SensorReading, Violation
from aimass.site import SensorThresholdRule, Site
from aimass_rules.evaluator import (Incident, SensorEvaluator, TriggerState, advance, close_incident,
                                    open_incident, update_due, violation_id)

DEFAULT_HYSTERESIS = 0.02  # of the threshold's magnitude


class SensorThreshold(SensorEvaluator):
    rule_type = "sensor_threshold"
    state_type = TriggerState
    rule: SensorThresholdRule

    def __init__(self, rule: SensorThresholdRule, site: Site):
        super().__init__(rule, site)
        sensor = site.sensor(rule.sensor)
        self.kind = sensor.kind if sensor else ""
        self.unit = sensor.unit if sensor else ""
        self.h_above = self._margin(rule.above, rule)
        self.h_below = self._margin(rule.below, rule)

    @staticmethod
    def _margin(threshold: float | None, rule: SensorThresholdRule) -> float:
        if threshold is None:
            return 0.0
        if rule.hysteresis is not None:
            return rule.hysteresis  # the site file checks it fits the band
        h = abs(threshold) * DEFAULT_HYSTERESIS
        if rule.above is not None and rule.below is not None:
            h = min(h, (rule.above - rule.below) / 4)
        return h

    def breach(self, value: float) -> str | None:
        r = self.rule
        if r.above is not None and value > r.above:
            return "above"
        if r.below is not None and value < r.below:
            return "below"
        return None

    def back_inside(self, value: float) -> bool:
        r = self.rule
        return ((r.above is None or value <= r.above - self.h_above)
                and (r.below is None or value >= r.below + self.h_below))

    def _excess(self, value: float) -> float:
        """How far past its bound a value is; picks the most extreme reading of an incident."""
        r = self.rule
        return max(value - r.above if r.above is not None else float("-inf"),
                   r.below - value if r.below is not None else float("-inf"))

    def on_reading(self, x: SensorReading, st: TriggerState) -> list[Violation]:
        r = self.rule
        side = self.breach(x.value)
        edge = advance(st, hit=side is not None, clear=self.back_inside(x.value), at_ms=x.captured_ms,
                       seq=x.seq, min_hits=r.min_readings, clear_after=1)
        if edge == "start":
            inc = Incident(
                violation_id=violation_id(self.site_id, r.id, r.sensor, "", st.streak_start_ms, st.streak_start_seq),
                started_ms=st.streak_start_ms, first_seq=st.streak_start_seq, label=self.kind, peak=x.value,
            )
            open_incident(st, inc)
            bound = r.above if side == "above" else r.below
            return [self._violation(
                "start", inc, at_ms=x.captured_ms, source_seq=x.seq, stamps=x.stamps, sensor_id=r.sensor,
                value=x.value,
                message=(f"{self._what} {self._fmt(x.value)} {side} {self._fmt(bound)} "
                         f"for {st.streak} reading{'s' if st.streak != 1 else ''}"),
            )]
        if edge == "end":
            inc = close_incident(st, x.captured_ms, r.cooldown_s)
            return [self._violation(
                "end", inc, at_ms=x.captured_ms, source_seq=x.seq, stamps=x.stamps, sensor_id=r.sensor,
                value=x.value,
                message=(f"{self._what} back to {self._fmt(x.value)} after "
                         f"{(x.captured_ms - inc.started_ms) / 1000:.1f} s; peak {self._fmt(inc.peak)}"),
            )]
        if st.incident is not None:
            if self._excess(x.value) > self._excess(st.incident.peak):
                st.incident.peak = x.value
            if update_due(st.incident, x.captured_ms, self.rule.update_s):
                return [self._violation(
                    "update", st.incident, at_ms=x.captured_ms, source_seq=x.seq, stamps=x.stamps,
                    sensor_id=self.rule.sensor, value=x.value,
                    message=f"{self._what} still at {self._fmt(x.value)} (peak {self._fmt(st.incident.peak)})")]
        return []

    def close(self, st: TriggerState, at_ms: float, reason: str) -> list[Violation]:
        if st.incident is None:
            return []
        at_ms = max(at_ms, st.incident.started_ms)  # no input seen yet (state restored from elsewhere)
        inc = close_incident(st, at_ms, self.rule.cooldown_s)
        return [self._violation(
            "end", inc, at_ms=at_ms, source_seq=-1, stamps={}, sensor_id=self.rule.sensor, value=inc.peak,
            message=f"incident on {self._what} closed: {reason}; peak {self._fmt(inc.peak)}",
        )]

    @property
    def _what(self) -> str:
        return f"sensor {self.rule.sensor} ({self.kind})" if self.kind else f"sensor {self.rule.sensor}"

    def _fmt(self, v: float | None) -> str:
        return f"{v:g} {self.unit}".rstrip()
