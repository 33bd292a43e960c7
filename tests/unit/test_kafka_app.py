"""The Faust app every worker builds (aimass.kafka.make_app)."""

from __future__ import annotations

from faust.sensors.otel import OpenTelemetryMonitor

from aimass.kafka import make_app
from aimass.settings import Settings


def test_faust_stream_metrics_are_opt_in_and_offsets_are_tracked_either_way(tmp_path):
    plain = make_app("t1", Settings(state_dir=tmp_path))
    assert not isinstance(plain.monitor, OpenTelemetryMonitor)
    assert plain.monitor.tp_committed_offsets == {} and plain.monitor.tp_end_offsets == {}  # aimass_consumer_lag
    full = make_app("t2", Settings(state_dir=tmp_path, faust_stream_metrics=True))
    assert isinstance(full.monitor, OpenTelemetryMonitor)
