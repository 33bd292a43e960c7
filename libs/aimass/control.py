"""Control topics: compacted topics that carry the latest configuration (site files, model routing)
to every worker. A writer publishes a document under a key; each worker reads the topic from its
beginning without a consumer group (so every worker sees every change, and a restarted one replays to
the latest) and keeps following it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiokafka.structs import TopicPartition

from aimass.kafka import reader, start_producer
from aimass.settings import Settings

OnMessage = Callable[[bytes, int], Awaitable[None]]  # (value, offset)


async def publish(settings: Settings, topic: str, key: bytes, value: bytes) -> None:
    """Send one document to the control topic ``topic`` (a logical name) and wait for the broker."""
    producer = await start_producer(settings)
    try:
        await producer.send_and_wait(settings.topic(topic), value, key=key)
    finally:
        await producer.stop()


async def follow(settings: Settings, topic: str, on_message: OnMessage, caught_up: asyncio.Event | None = None) -> None:
    """Read control topic ``topic`` (a logical name; one partition) from its beginning, forever.
    ``caught_up`` is set once the reader has passed the end offset the broker reported at the start
    *and* a fetch finds nothing new: either alone is not enough (a first fetch can come back empty
    before the records do, and tansu reports end offsets short after batched writes), as in
    aimass.state.read_partition."""
    consumer = reader(settings)
    try:
        await consumer.start()
        tp = TopicPartition(settings.topic(topic), 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        reported_end = (await consumer.end_offsets([tp]))[tp]
        while True:
            batch = await consumer.getmany(tp, timeout_ms=500)
            records = batch.get(tp, [])
            for rec in records:
                await on_message(rec.value, rec.offset)
            if (not records and caught_up is not None and not caught_up.is_set()
                    and await consumer.position(tp) >= reported_end):
                caught_up.set()
    finally:
        await consumer.stop()


async def latest(settings: Settings, topic: str, timeout_s: float = 10.0) -> bytes | None:
    """The last document on control topic ``topic`` (None when there is none): reads the topic once.
    For topics with one key (the model routing)."""
    found: list[bytes] = []
    done = asyncio.Event()

    async def on_message(value: bytes, offset: int) -> None:
        found.append(value)
    task = asyncio.ensure_future(follow(settings, topic, on_message, done))
    try:
        await asyncio.wait_for(done.wait(), timeout_s)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return found[-1] if found else None
