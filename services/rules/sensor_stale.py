"""sensor_stale: no reading from a sensor for ``after_s``.

Silence has no event of its own, so this rule is judged on ticks of the rules worker's clock (the
engine's ``on_tick``) against the capture time of the sensor's last reading; the incident ends with
the next reading. A sensor never heard from is judged from the worker's first tick.
"""

from __future__ import annotations

from dataclasses import dataclass

from aimass.contracts import SensorReading, Violation
from aimass.site import SensorStaleRule
from aimass_rules.evaluator import Incident, SensorEvaluator, violation_id


@dataclass
class StaleState:
    last_ms: float | None = None  # capture time of the last reading (or the first tick)
    last_seq: int = -1
    incident: Incident | None = None


class SensorStale(SensorEvaluator):
    rule_type = "sensor_stale"
    state_type = StaleState
    rule: SensorStaleRule

    def on_reading(self, rd: SensorReading, st: StaleState) -> list[Violation]:
        st.last_ms, st.last_seq = rd.captured_ms, rd.seq
        if st.incident is None:
            return []
        inc, st.incident = st.incident, None
        silent = (rd.captured_ms - inc.started_ms) / 1000
        return [self._violation("end", inc, at_ms=rd.captured_ms, source_seq=rd.seq, stamps=rd.stamps,
                                sensor_id=self.rule.sensor, value=rd.value,
                                message=f"sensor {self.rule.sensor} reporting again after {silent:.0f} s")]

    def on_tick(self, now_ms: float, st: StaleState) -> list[Violation]:
        r = self.rule
        if st.last_ms is None:
            st.last_ms = now_ms
            return []
        if st.incident is not None or now_ms - st.last_ms < r.after_s * 1000:
            return []
        st.incident = Incident(violation_id(self.site_id, r.id, r.sensor, "", st.last_ms, st.last_seq),
                               started_ms=st.last_ms, first_seq=st.last_seq)
        return [self._violation("start", st.incident, at_ms=now_ms, source_seq=st.last_seq, stamps={},
                                sensor_id=r.sensor,
                                message=f"no reading from sensor {r.sensor} for {(now_ms - st.last_ms) / 1000:.0f} s "
                                        f"(limit {r.after_s:g} s)")]
