"""Worker state that survives restarts and rebalances, kept in Kafka beside the input it came from.

A worker's state is per key of its input topic (the detector's tracks per camera, the rules' streaks
and open incidents per camera or sensor). It is written to a compacted *state topic* with exactly as
many partitions as the input topic, into the partition of the input message that carried the key:
whoever is assigned input partition p owns state partition p. On assignment, a worker reads each new
state partition from its beginning (``ensure``) before it processes that partition's input; on
revocation it forgets them, and the next owner reads what this one wrote.

Writes go through the Faust app's producer: ``save`` queues them for Faust, which flushes them before
its own offset commits (the detector); ``store`` returns the delivery, which a worker committing its
own offsets awaits first (aimass.batch_consumer). Workers write a key's state only after the outputs
of the inputs it reflects were delivered. So a committed input offset implies its state is stored, and a stored state implies its outputs went out:
after a crash, inputs the stored state already reflects are recognised (by the per-key cursors the
state carries) and skipped, and the rest are processed again, at least once.

Why not Faust tables: their restore stops at the end offset the broker reports, and the tansu broker
reports it wrong after a batched write (measured: a 5-record batch moved it by 1), so each partition's
last updates were lost on restart. ``load`` reads until it has passed the reported end *and* a fetch
comes back empty, which is right on Kafka and on tansu alike.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

import faust
import msgspec
from aiokafka.structs import TopicPartition

from aimass.kafka import OutputTopic, partition_for, reader
from aimass.settings import Settings

log = logging.getLogger(__name__)

STATE_VERSION = 1
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()


def encode(value: Any) -> bytes:
    """Plain data (dicts, lists, numbers, strings, dataclasses) -> versioned MessagePack."""
    return _encoder.encode({"v": STATE_VERSION, "state": msgspec.to_builtins(value)})


def decode(data: bytes) -> Any | None:
    """The plain data ``encode`` stored, or None for a record of another version or a corrupt one
    (the key then starts from fresh state: losing a track is better than refusing to run)."""
    try:
        doc = _decoder.decode(data)
    except msgspec.DecodeError:
        return None
    if not isinstance(doc, dict) or doc.get("v") != STATE_VERSION:
        return None
    return doc.get("state")


async def read_partition(settings: Settings, topic: str, partition: int, fetch_wait_ms: int = 100) -> dict[bytes, bytes]:
    """The latest value per key in one partition of ``topic`` (a tombstone removes the key)."""
    consumer = reader(settings, fetch_max_wait_ms=fetch_wait_ms, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        reported_end = (await consumer.end_offsets([tp]))[tp]
        out: dict[bytes, bytes] = {}
        while True:
            records = (await consumer.getmany(tp, timeout_ms=fetch_wait_ms)).get(tp, [])
            for rec in records:
                if rec.key is None:
                    continue
                if rec.value is None:
                    out.pop(rec.key, None)
                else:
                    out[rec.key] = rec.value
            if not records and await consumer.position(tp) >= reported_end:
                return out
    finally:
        await consumer.stop()


class StateTopic:
    """One kind of state of one worker, partitioned like its input topic ``source``.

    ``ensure(p)`` before processing input from partition p returns what was stored there the first
    time (None after that); ``save(p, key, value)`` after the outputs for that key were delivered;
    ``assigned(partitions)`` on every rebalance returns the partitions this worker no longer owns, whose
    keys the caller must forget. ``owns(key)`` says whether a key's input partition is loaded here.
    """

    def __init__(self, app: faust.App, settings: Settings, name: str, source: str, partitions: int):
        self.settings = settings
        self.source = settings.topic(source)
        self.name = settings.topic(name)
        self.partitions = partitions
        self.topic = app.topic(self.name, key_type=bytes, value_type=bytes, key_serializer="raw",
                               value_serializer="raw", partitions=partitions, internal=False)
        self.out = OutputTopic(app, self.name)
        self._loaded: set[int] = set()
        self._loading: dict[int, asyncio.Task] = {}
        self._mine: set[int] | None = None  # the source's partitions assigned now (None: before any assignment)
        self._key_partition: dict[bytes, int] = {}
        self.restored_keys = 0

    async def ensure(self, partition: int) -> dict[bytes, Any] | None:
        """Load partition ``partition`` if it is not loaded yet; returns its keys' states (decoded),
        or None when it was already loaded (then the caller's memory is current)."""
        if partition in self._loaded:
            return None
        task = self._loading.get(partition)
        if task is None:
            task = self._loading[partition] = asyncio.ensure_future(read_partition(self.settings, self.name, partition))
        try:
            raw = await task
        finally:
            self._loading.pop(partition, None)
        if partition in self._loaded:  # another caller awaited the same load and took it
            return None
        if self._mine is not None and partition not in self._mine:  # given up while it loaded
            return None
        self._loaded.add(partition)
        states = {k: v for k, v in ((k, decode(v)) for k, v in raw.items()) if v is not None}
        for k in states:
            self._key_partition[k] = partition
        self.restored_keys += len(states)
        if states:
            log.info("restored the state of %d keys from %s partition %d", len(states), self.name, partition)
        return states

    def seen(self, key: bytes, partition: int) -> None:
        """Record where a key's input arrived (it may differ from the default partitioner's choice)."""
        self._key_partition[key] = partition

    def save(self, partition: int, key: bytes, value: Any) -> None:
        """Queue ``value`` as the state of ``key`` (plain data; see ``encode``); Faust flushes it
        before the next offset commit."""
        self._key_partition[key] = partition
        self.topic.send_soon(key=key, value=encode(value), partition=partition)

    async def store(self, partition: int, key: bytes, value: Any):
        """Send ``value`` as the state of ``key`` now; returns its delivery future (await it before the
        input it reflects is committed)."""
        self._key_partition[key] = partition
        return await self.out.send(key, encode(value), partition=partition)

    def partition_of(self, key: bytes) -> int:
        """Where the key's input arrived, or, before any did, where the default partitioner puts it."""
        p = self._key_partition.get(key)
        return partition_for(key, self.partitions) if p is None else p

    def loaded(self, partition: int) -> bool:
        """Whether partition ``partition``'s states were read since it was assigned here."""
        return partition in self._loaded

    def owns(self, key: bytes) -> bool:
        return self.partition_of(key) in self._loaded

    def assigned(self, tps: Iterable) -> set[int]:
        """Apply a new assignment (Faust's TopicPartitions); returns the partitions given up."""
        mine = {tp.partition for tp in tps if tp.topic == self.source}
        gone = self._loaded - mine
        self._loaded &= mine
        # A load still under way for a partition given up finishes as not loaded (see ensure): taken as
        # loaded, its keys' states, stale by the time the partition came back, would never be read
        # again. Not cancelled: a caller awaiting it (the detector's stream) would get CancelledError.
        self._mine = mine
        return gone

    def keys_in(self, partitions: set[int]) -> list[bytes]:
        return [k for k, p in self._key_partition.items() if p in partitions]
