"""Store and forward across a broker outage, on a tansu broker of the test's own (the session's shared
broker is never stopped): what the gateway sends while the broker is down waits in the on-disk spool
and arrives, in order and complete, when the broker is back; a full spool drops its oldest messages
and counts them; what is left in the spool when the gateway stops goes out when it starts again."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer
from private_broker import Broker

from aimass import contracts
from aimass.settings import GatewaySettings
from aimass_gateway.producer import GatewayProducer

pytestmark = pytest.mark.integration


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path, "o.")
    yield b
    b.stop()


async def _until(pred, deadline_s: float, what: str):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if pred():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {deadline_s} s waiting for {what}")


async def _read(bootstrap: str, prefix: str, frames: int, readings: int, timeout_s: float = 20.0):
    """(frame seqs, reading seqs) in the order the broker holds them (one key each: one partition)."""
    c = AIOKafkaConsumer(prefix + contracts.TOPIC_FRAMES, prefix + contracts.TOPIC_SENSORS,
                         bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await c.start()
    f, r = [], []
    try:
        async def collect():
            async for m in c:
                if m.topic.endswith(contracts.TOPIC_FRAMES):
                    f.append(contracts.decode(m.value, contracts.Frame).seq)
                else:
                    r.append(contracts.decode(m.value, contracts.SensorReading).seq)
                if len(f) >= frames and len(r) >= readings:
                    return
        await asyncio.wait_for(collect(), timeout_s)
        more = await c.getmany(timeout_ms=300)  # nothing beyond: no duplicates
        for tp, ms in more.items():
            (f if tp.topic.endswith(contracts.TOPIC_FRAMES) else r).extend(-1 for _ in ms)
    except asyncio.TimeoutError:
        pass
    finally:
        await c.stop()
    return f, r


def _img(i: int) -> np.ndarray:
    img = np.full((48, 64, 3), 30, np.uint8)
    img[10:30, i % 40: i % 40 + 20] = 220
    return img


def test_nothing_is_lost_or_reordered_across_a_broker_outage(broker, tmp_path):
    broker.start()
    settings = GatewaySettings(kafka_bootstrap=broker.bootstrap, topic_prefix="o.", gateway_id="gw-outage",
                               spool_dir=tmp_path / "spool", send_timeout_s=1.5)

    async def scenario():
        async with GatewayProducer(settings, "site-o") as gw:
            for i in range(10):  # the broker is up: sent directly
                await gw.send_frame("cam-1", i, contracts.now_ms(), _img(i))
                if i % 2 == 0:
                    await gw.send_reading("temp-1", i // 2, contracts.now_ms(), 20.0 + i, "C")
            await gw.flush(10)
            assert (gw.counters.spooled, gw.spooling) == (0, False)
            assert await _read(broker.bootstrap, "o.", 10, 5) == (list(range(10)), list(range(5)))

            await asyncio.to_thread(broker.stop)
            for i in range(10, 40):  # the broker is down: the gateway keeps its pace (camera at 20 fps)
                t0 = time.monotonic()
                await gw.send_frame("cam-1", i, contracts.now_ms(), _img(i))
                if i % 2 == 0:
                    await gw.send_reading("temp-1", i // 2, contracts.now_ms(), 20.0 + i, "C")
                assert time.monotonic() - t0 < settings.send_timeout_s + 0.5  # never stuck for long
                await asyncio.sleep(0.05)
            await _until(lambda: gw.spooling and gw.spool_messages == 45, 10, "45 messages in the spool")
            assert gw.counters.send_errors == 0 and gw.spool_dropped == 0
            assert gw.spool_bytes > 30 * 1000

            await asyncio.to_thread(broker.start)
            await _until(lambda: not gw.spooling and gw.spool_messages == 0, 30, "the spool drained")
            for i in range(40, 45):  # direct again
                await gw.send_frame("cam-1", i, contracts.now_ms(), _img(i))
            await gw.flush(10)
            assert not gw.spooling and gw.counters.resent == 45 and gw.counters.send_errors == 0
        return gw

    gw = asyncio.run(scenario())
    frames, readings = asyncio.run(_read(broker.bootstrap, "o.", 35, 15))
    assert frames == list(range(10, 45)), "every frame from the outage on, once, in order"
    assert readings == list(range(5, 20))
    assert gw.spool_dropped == 0


def test_a_full_spool_drops_the_oldest_and_what_is_left_survives_a_restart(broker, tmp_path):
    settings = GatewaySettings(kafka_bootstrap=broker.bootstrap, topic_prefix="o.", gateway_id="gw-small",
                               spool_dir=tmp_path / "spool", spool_max_messages=5, send_timeout_s=1.5)

    async def while_down():
        async with GatewayProducer(settings, "site-o") as gw:  # nothing listens: spooling from the start
            assert gw.spooling
            for i in range(20):
                await gw.send_reading("temp-1", i, contracts.now_ms(), float(i), "C")
            assert (gw.spool_messages, gw.spool_dropped, gw.counters.send_errors) == (5, 15, 0)
        return gw

    asyncio.run(while_down())
    broker.start()

    async def after_restart():
        async with GatewayProducer(settings, "site-o") as gw:  # a new gateway process, the same spool
            assert gw.spool_dropped == 15  # the counter survived too
            await _until(lambda: gw.spool_messages == 0 and not gw.spooling, 20, "the old spool drained")
            await gw.send_reading("temp-1", 20, contracts.now_ms(), 20.0, "C")
            await gw.flush(10)
        return gw

    asyncio.run(after_restart())
    frames, readings = asyncio.run(_read(broker.bootstrap, "o.", 0, 6))
    assert readings == [15, 16, 17, 18, 19, 20]  # the newest five, in order, then the new one
