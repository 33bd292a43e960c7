"""Each worker's Prometheus endpoint (AIMASS_METRICS_PORT): frames, inference latency and batch size,
dead letters, sink rows and flush latency, and consumer lag from committed offsets and high watermarks."""

from __future__ import annotations

import asyncio
import re
import urllib.request

import numpy as np
import pytest

from aimass import contracts
from aimass.processes import free_port
from aimass.settings import GatewaySettings
from aimass_gateway.producer import GatewayProducer
from conftest import wait_until

pytestmark = pytest.mark.integration


def _scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return r.read().decode()
    except OSError:
        return ""


def _value(text: str, name: str, **labels) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", line)
        if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
            total += float(m.group(2))
    return total


async def _send(ns, n: int) -> None:
    gw = GatewayProducer(ns.settings(GatewaySettings), "test-site")
    async with gw:
        for s in range(n):
            img = np.full((240, 320, 3), 50 + s, np.uint8)
            await gw.send_frame("cam-m", s, contracts.now_ms(), img)
        await gw.send_raw(ns.topic_prefix + contracts.TOPIC_FRAMES, b"cam-m", b"\xc1 not a frame")


def test_workers_serve_their_metrics(ns, workers):
    det_port, sink_port = free_port("127.0.0.1"), free_port("127.0.0.1")
    workers.env["AIMASS_METRICS_PORT"] = str(det_port)
    workers.start("detector")
    workers.env["AIMASS_METRICS_PORT"] = str(sink_port)
    workers.start("sink")
    asyncio.run(_send(ns, 10))
    wait_until(lambda: _value(_scrape(sink_port), "aimass_sink_rows_total", table="frames") >= 10, 60,
               "the sink's row counter to reach 10 frames")
    det = _scrape(det_port)
    assert _value(det, "aimass_frames_total", camera="cam-m", model="nanodet-g-416:1") == 10
    assert _value(det, "aimass_inference_duration_milliseconds_count", model="nanodet-g-416:1") >= 1
    assert _value(det, "aimass_batch_size_sum") == 10  # every frame in exactly one model run
    assert _value(det, "aimass_dead_letters_total", service="detector", reason="bad_encoding") == 1
    assert "aimass_consumer_lag" in det
    sink = _scrape(sink_port)
    assert _value(sink, "aimass_sink_flush_duration_milliseconds_count", table="frames") >= 1
    # Once the detector committed, its lag on the frames topic is back to 0 on every partition.
    wait_until(lambda: re.search(r'aimass_consumer_lag\{[^}]*topic="[^"]*aimass\.frames"[^}]*\} 0', _scrape(det_port))
               and not re.search(r'aimass_consumer_lag\{[^}]*topic="[^"]*aimass\.frames"[^}]*\} [1-9]', _scrape(det_port)),
               30, "the detector's lag on the frames topic to be 0")
