"""Backpressure: while ClickHouse cannot take inserts, the sink stops acknowledging and Kafka's lag
grows, not the sink's memory. Its RSS is sampled while a flood of detections arrives."""

from __future__ import annotations

import asyncio

import pytest

from aimass import contracts
from aimass.processes import free_port
from aimass.settings import GatewaySettings
from aimass_gateway.producer import GatewayProducer
from conftest import wait_until

pytestmark = pytest.mark.integration
N = 12000  # detections messages of ~13 KB each: ~150 MB, far more than the sink may hold


def _flood(ns) -> None:
    t0 = contracts.now_ms()
    objects = [contracts.DetectedObject("person", 0, 0.9, 0.1, 0.1, 0.2, 0.2, track_id=i) for i in range(300)]

    async def send() -> None:
        gw = GatewayProducer(ns.settings(GatewaySettings), "test-site")
        async with gw:
            for s in range(N):
                d = contracts.Detections(site_id="test-site", camera_id=f"cam-{s % 8}", seq=s, captured_ms=t0 + s,
                                         width=640, height=480, model_name="m", model_version="1", objects=objects)
                await gw.send_raw(ns.topic_prefix + contracts.TOPIC_DETECTIONS, f"cam-{s % 8}".encode(),
                                  contracts.encode(d))
    asyncio.run(send())


def _rss(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def test_a_blocked_sink_lets_lag_grow_not_memory(ns, workers):
    # ClickHouse "down": nothing listens on the sink's port, so every insert fails and is retried.
    workers.env["AIMASS_CLICKHOUSE_URL"] = f"clickhouse://127.0.0.1:{free_port('127.0.0.1')}/aimass"
    workers.start("sink")
    pid = workers.procs["sink"].pid
    baseline = _rss(pid)
    samples = []
    done = False

    async def watch() -> None:
        while not done:
            samples.append(_rss(pid))
            await asyncio.sleep(0.25)  # the sampling period, not a wait for anything

    async def run() -> None:
        nonlocal done
        watcher = asyncio.ensure_future(watch())
        await asyncio.get_running_loop().run_in_executor(None, _flood, ns)
        # Let the sink read what it will: its fetcher and stream buffers fill, then it stops asking.
        for _ in range(40):
            await asyncio.sleep(0.25)
        done = True
        await watcher
    asyncio.run(run())
    peak = max(samples)
    print(f"\nsink RSS: {baseline / 2**20:.0f} MB at start, peak {peak / 2**20:.0f} MB while "
          f"{N} messages ({N * 13 / 1024:.0f} MB) waited")
    assert workers.procs["sink"].poll() is None, workers.logs("sink")  # still running
    # Bounded by its buffers: insert_batches (2) batches retrying and one being read, each at most
    # batch_max_bytes (2 MiB) of messages and their rows (here 125 messages, 37500 rows, ~15 MB as tuples),
    # and the fetch buffers: a fraction of the flood, which as rows would take several times its 150 MB.
    assert peak - baseline < 80 * 2**20, f"the sink grew by {(peak - baseline) / 2**20:.0f} MB"
    assert "retrying" in workers.logs("sink")  # it was blocked on ClickHouse, not idle
