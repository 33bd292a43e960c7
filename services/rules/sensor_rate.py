"""sensor_rate: a sensor's value changes faster than ``max_per_s``, measured over ``window_s``.

The rate of a reading is its change from the oldest reading still inside the window, divided by the
time between them (event time), so one noisy reading does not look like a fast rise. ``min_readings``
fast readings in a row start an incident; ``clear_readings`` slow ones in a row end it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aimass.contracts import SensorReading, Violation
from aimass.site import SensorRateRule, Site
from aimass_rules.evaluator import (Incident, SensorEvaluator, TriggerState, advance, close_incident,
                                    open_incident, violation_id)


@dataclass
class RateState(TriggerState):
    history: list[tuple[float, float]] = field(default_factory=list)  # (captured_ms, value) in the window


class SensorRate(SensorEvaluator):
    rule_type = "sensor_rate"
    state_type = RateState
    rule: SensorRateRule

    def __init__(self, rule: SensorRateRule, site: Site):
        super().__init__(rule, site)
        sensor = site.sensor(rule.sensor)
        self.unit = sensor.unit if sensor else ""

    def on_reading(self, rd: SensorReading, st: RateState) -> list[Violation]:
        r = self.rule
        window_ms = r.window_s * 1000
        st.history = [(t, v) for t, v in st.history if rd.captured_ms - t <= window_ms]
        rate = None
        if st.history and rd.captured_ms > st.history[0][0]:
            t0, v0 = st.history[0]
            rate = (rd.value - v0) / ((rd.captured_ms - t0) / 1000)
        st.history.append((rd.captured_ms, rd.value))
        fast = rate is not None and abs(rate) > r.max_per_s
        edge = advance(st, hit=fast, clear=rate is not None and not fast, at_ms=rd.captured_ms, seq=rd.seq,
                       min_hits=r.min_readings, clear_after=r.clear_readings)
        common = dict(at_ms=rd.captured_ms, source_seq=rd.seq, stamps=rd.stamps, sensor_id=r.sensor, value=rd.value)
        if edge == "start":
            inc = Incident(violation_id(self.site_id, r.id, r.sensor, "", st.streak_start_ms, st.streak_start_seq),
                           started_ms=st.streak_start_ms, first_seq=st.streak_start_seq, peak=abs(rate))
            open_incident(st, inc)
            return [self._violation("start", inc, message=f"sensor {r.sensor} changing at {rate:+.3g} {self.unit}/s "
                                                          f"(limit {r.max_per_s:g}/s)", **common)]
        if edge == "end":
            inc = close_incident(st, rd.captured_ms, r.cooldown_s)
            return [self._violation("end", inc, message=f"sensor {r.sensor} steady again "
                                                        f"(fastest {inc.peak:.3g} {self.unit}/s)", **common)]
        if fast and st.incident is not None:
            st.incident.peak = max(st.incident.peak, abs(rate))
        return []
