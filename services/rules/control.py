"""Live site-file changes: `aimass rules apply` publishes a validated site file on the compacted
control topic; every rules worker reads that topic from its beginning (no consumer group, so each
worker sees every change, and a restarted worker replays to the latest) and switches its engine.

A file that fails validation on the worker side too (one published by another tool) is refused with
a dead letter; the rules already running keep running.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from aimass import contracts
from aimass.contracts import SiteConfig
from aimass.kafka import start_producer
from aimass.settings import Settings
from aimass.site import Site, load_site

OnMessage = Callable[[bytes, int], Awaitable[None]]  # (value, offset)


def site_config(site: Site, text: str, source: str) -> SiteConfig:
    return SiteConfig(site_id=site.site.id, sha256=hashlib.sha256(text.encode()).hexdigest(), yaml=text,
                      source=source, applied_ms=contracts.now_ms())


async def publish(settings: Settings, path: Path) -> SiteConfig:
    """Validate ``path`` offline (raises SiteFileError) and publish it for the running workers."""
    site = load_site(path)
    msg = site_config(site, Path(path).read_text(), str(path))
    producer = await start_producer(settings)
    try:
        await producer.send_and_wait(settings.topic(contracts.TOPIC_CONTROL_RULES), contracts.encode(msg),
                                     key=site.site.id.encode())
    finally:
        await producer.stop()
    return msg


async def follow(settings: Settings, on_message: OnMessage, caught_up: asyncio.Event) -> None:
    """Read the control topic from its beginning, forever; ``caught_up`` is set after the first
    fetch that finds nothing new (end offsets are unreliable on some brokers, tansu among them)."""
    topic = settings.topic(contracts.TOPIC_CONTROL_RULES)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None, enable_auto_commit=False,
                                fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        while True:
            batch = await consumer.getmany(tp, timeout_ms=500)
            records = batch.get(tp, [])
            for rec in records:
                await on_message(rec.value, rec.offset)
            if not records and not caught_up.is_set():
                caught_up.set()
    finally:
        await consumer.stop()


def decode(value: bytes) -> SiteConfig:
    return contracts.decode(value, SiteConfig)

