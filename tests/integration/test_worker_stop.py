"""A worker asked to stop exits within AIMASS_STOP_TIMEOUT_S even when the broker hangs: without the
limit a stalled broker held the sink's last offset commit for ever (still running 120 s after its
SIGTERM). The sink drains a backlog from a tansu broker of the test's own, which is paused mid-drain."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time

import pytest
from conftest import wait_until
from private_broker import Broker

from aimass import contracts, runner
from aimass.bench import workload
from aimass.settings import Settings

pytestmark = pytest.mark.integration

STOP_TIMEOUT_S = 4


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path, "hang.")
    b.start()
    yield b
    b.stop()


def test_the_sink_stops_in_time_when_the_broker_hangs_mid_drain(broker, ns, ns_ch, tmp_path):
    settings = Settings(kafka_bootstrap=broker.bootstrap, topic_prefix="hang.")
    backlog = workload.detection_messages(["cam-a", "cam-b", "cam-c", "cam-d"], 15000, 3)
    asyncio.run(workload.produce(settings, contracts.TOPIC_DETECTIONS, backlog))
    env = {"AIMASS_KAFKA_BOOTSTRAP": broker.bootstrap, "AIMASS_TOPIC_PREFIX": "hang.",
           "AIMASS_CLICKHOUSE_URL": ns.clickhouse_url, "AIMASS_STATE_DIR": str(tmp_path / "state"),
           "AIMASS_STOP_TIMEOUT_S": str(STOP_TIMEOUT_S), "OTEL_TRACES_EXPORTER": "none",
           "OTEL_METRICS_EXPORTER": "none"}
    log = tmp_path / "sink.log"
    proc = runner.spawn("sink", log, env)
    try:
        stored = wait_until(lambda: ns_ch.execute("SELECT count() FROM frames")[0][0], 120,
                            "the sink's first rows", interval_s=0.05)
        assert stored < len(backlog), "the sink drained the whole backlog before the broker was paused"
        broker.pause()
        asked = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(STOP_TIMEOUT_S + 20)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the sink was still running {STOP_TIMEOUT_S + 20} s after SIGTERM")
        took = time.monotonic() - asked
        text = log.read_text(errors="replace")
        assert code == runner.EXIT_STOP_TIMEOUT, text[-3000:]
        assert STOP_TIMEOUT_S - 0.5 <= took <= STOP_TIMEOUT_S + 10
        assert f"sink worker did not stop within {STOP_TIMEOUT_S} s" in text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
