"""Group consumption in batches, for the workers whose work per message is small (rules, sink).

A Faust stream hands a worker one event at a time through its flow control and acknowledgement
machinery: measured by `aimass bench` on 2 cores, a Faust worker that does nothing but count reached
~5k messages/s, a fraction of what the rules engine alone evaluates. These workers stay Faust apps
(start-up, timers, web, signals, the producer) but read their input with one aiokafka group consumer:
``getmany`` fetches a batch, the handler runs on it, and the batch's offsets are committed only once
its outputs were delivered. A crash replays the uncommitted batches: at least once, as with Faust's
acknowledgements; the outputs deduplicate by ids from the source.

On a rebalance the revoke waits for the batches in hand (and their commits); records of a partition
this worker no longer owns are dropped before the handler sees them, so two workers never hold the
same key's state at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

import faust
import mode
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, ConsumerStoppedError, IllegalStateError, KafkaError
from aiokafka.structs import ConsumerRecord, TopicPartition

from aimass.kafka import reader
from aimass.settings import Settings

log = logging.getLogger(__name__)

Batch = dict[TopicPartition, list[ConsumerRecord]]
Handler = Callable[[Batch], Awaitable[Awaitable[None] | None]]  # may return the batch's remaining I/O
OnAssigned = Callable[[set[TopicPartition]], Awaitable[None] | None]
IDLE_POLL_MS = 200  # how long an idle fetch waits before the loop looks at whether it should stop
FIRST_CHUNK = 50  # messages in a batch's first getmany, before their size is known
FETCH_CHUNK = 500  # the most messages per getmany while a batch fills


def _count(batch: Batch) -> tuple[int, int]:
    """(messages, bytes of their values)."""
    return (sum(map(len, batch.values())),
            sum(len(r.value) for records in batch.values() for r in records if r.value is not None))


class BatchConsumer(mode.Service):
    """Consumes ``topics`` (full names) in the consumer group ``group`` and hands ``handle`` each
    batch (per partition, in offset order): up to ``max_records`` messages (and about ``max_bytes``
    of them), or what arrived within ``max_wait_s`` of the batch's first one. ``on_assigned`` gets
    every new assignment (the whole of it: aiokafka's rebalances are eager). ``start_when`` is awaited
    before the first fetch.

    ``handle`` either does all of a batch's work, or returns a coroutine with the rest of it (the
    sink's inserts): that runs while the next batches are fetched and handled, and the batch's offsets
    are committed once it finished. Up to ``in_flight`` batches are in that state at once, so the I/O
    of those overlaps the CPU work of the next; they are committed in order, and at most
    ``in_flight + 1`` batches are held."""

    def __init__(self, settings: Settings, group: str, topics: Sequence[str], handle: Handler, *,
                 max_records: int, max_wait_s: float, max_bytes: int = 1 << 62, in_flight: int = 1,
                 on_assigned: OnAssigned | None = None, start_when: Callable[[], Awaitable[object]] | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.settings, self.group, self.topics = settings, group, list(topics)
        self.handle, self.on_assigned, self.start_when = handle, on_assigned, start_when
        self.max_records, self.max_wait_s, self.max_bytes = max_records, max_wait_s, max_bytes
        self.in_flight = max(1, in_flight)
        self.consumer: AIOKafkaConsumer | None = None
        self.committed: dict[TopicPartition, int] = {}  # the next offset to read, as committed
        self.processed: dict[TopicPartition, int] = {}  # the next offset to read, as handled
        self._owned: set[TopicPartition] = set()
        self._busy = asyncio.Lock()  # held while a batch is handled, and while a rebalance settles
        self._finishing: deque[tuple[asyncio.Future, dict[TopicPartition, int]]] = deque()  # rests, their offsets
        self._to_commit: dict[TopicPartition, int] = {}
        self._committing: asyncio.Future | None = None
        self._looping = False
        self._loop_done = asyncio.Event()

    # --- what the worker, its metrics and readiness read ---
    def assignment(self) -> set[TopicPartition]:
        return set(self._owned)

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.consumer.highwater(tp) if self.consumer is not None else None

    def backlog(self, topic: str) -> int:
        """Messages of ``topic`` on this worker's partitions not handled yet (fetch high watermark minus
        the next offset to handle); -1 while a partition's high watermark is not known yet."""
        total = 0
        for tp in self.assignment():
            if tp.topic != topic:
                continue
            hw = self.highwater(tp)
            if hw is None:
                return -1
            total += max(0, hw - max(self.processed.get(tp, 0), self.committed.get(tp, 0)))
        return total

    # --- lifecycle (mode.Service) ---
    async def on_start(self) -> None:
        s = self.settings
        self.consumer = reader(
            s, group_id=self.group,
            auto_offset_reset="earliest",  # a new group reads what was produced before its first start
            session_timeout_ms=int(s.kafka_session_timeout_s * 1000),
            heartbeat_interval_ms=int(s.kafka_heartbeat_s * 1000),
            max_partition_fetch_bytes=s.kafka_max_partition_fetch_bytes)
        self.consumer.subscribe(self.topics, listener=_Listener(self))
        await self.consumer.start()

    async def on_started(self) -> None:
        self.add_future(self._run())

    async def on_stop(self) -> None:
        # Let the batches in hand finish and commit (the loop takes no new one once stopping), then
        # leave the group, so a restarted worker does not wait for the session to time out.
        if self._looping:
            wait_s = max(1.0, self.settings.stop_timeout_s - 5)  # the rest of stop_timeout_s: commit, leave
            try:
                await asyncio.wait_for(self._loop_done.wait(), timeout=wait_s)
            except asyncio.TimeoutError:
                log.warning("%s: the batch in hand did not finish within %.0f s; it will be replayed", self.group, wait_s)
        if self.consumer is not None:
            await self.flush_commits()
            await self.consumer.stop()

    async def _run(self) -> None:
        if self.start_when is not None:
            await self.start_when()
        self._looping = True
        try:
            while not self.should_stop:
                try:
                    batch = await self._fetch()
                except ConsumerStoppedError:
                    return
                async with self._busy:
                    if batch and not self.should_stop:
                        await self._one(batch)
                    else:
                        await self._settle(only_done=True)
            async with self._busy:
                await self._settle()
        except Exception as exc:  # a bug in the handler: crash the worker (its supervisor restarts it)
            log.exception("%s: handling a batch failed; the worker stops and the batch will be replayed", self.group)
            await self.crash(exc)
        finally:
            self._loop_done.set()

    async def _fetch(self) -> Batch:
        """Up to ``max_records`` messages and about ``max_bytes`` of them, or what arrived within
        ``max_wait_s`` of the first. Taken in chunks sized by the mean message so far, so a batch of
        large messages overshoots its byte bound by about one message, not by a whole chunk."""
        batch = await self.consumer.getmany(timeout_ms=IDLE_POLL_MS, max_records=min(self.max_records, FIRST_CHUNK))
        n, size = _count(batch)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while batch and n < self.max_records and size < self.max_bytes and not self.should_stop:
            left = deadline - loop.time()
            if left <= 0:
                break
            fits = int((self.max_bytes - size) / max(size / n, 1)) + 1  # messages of the mean size that fit
            more = await self.consumer.getmany(timeout_ms=max(1, int(left * 1000)),
                                               max_records=min(FETCH_CHUNK, self.max_records - n, fits))
            for tp, records in more.items():
                batch.setdefault(tp, []).extend(records)
            dn, dsize = _count(more)
            n, size = n + dn, size + dsize
        return batch

    async def _one(self, batch: Batch) -> None:
        # Only partitions still owned: a rebalance may have moved some while this batch was fetched.
        batch = {tp: records for tp, records in batch.items() if tp in self._owned and records}
        if not batch:
            return
        rest = await self.handle(batch)  # meanwhile the previous batches' rests run
        # The batches before this one are committed before it; with a rest of its own, only as many
        # as make room for it.
        await self._settle(keep=0 if rest is None else self.in_flight - 1)
        offsets = {tp: records[-1].offset + 1 for tp, records in batch.items()}
        self.processed.update(offsets)
        if rest is None:
            self._commit_soon(offsets)
        else:
            self._finishing.append((asyncio.ensure_future(rest), offsets))

    @contextlib.asynccontextmanager
    async def between_batches(self):
        """Hold the consumer between two batches, none in hand or finishing: for work that must not
        interleave with a batch's (the rules' clock ticks store states too)."""
        async with self._busy:
            await self._settle()
            yield

    async def _settle(self, keep: int = 0, only_done: bool = False) -> None:
        """Wait for the oldest batches whose rests are running, in order, and commit each, until
        ``keep`` are left (or, with ``only_done``, until the oldest is still running). The caller holds
        ``_busy``."""
        while len(self._finishing) > keep:
            task, offsets = self._finishing[0]
            if only_done and not task.done():
                return
            try:
                await task
            finally:
                self._finishing.popleft()
            self._commit_soon(offsets)

    def _commit_soon(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit in the background, one request at a time, the latest offsets per partition: the next
        batch need not wait a broker round trip for this one's commit (a later commit covers it)."""
        self._to_commit.update(offsets)
        if self._committing is None or self._committing.done():
            self._committing = asyncio.ensure_future(self._commit_all())

    async def _commit_all(self) -> None:
        while self._to_commit:
            offsets, self._to_commit = self._to_commit, {}
            try:
                await self.consumer.commit(offsets)
                self.committed.update(offsets)
            except (CommitFailedError, IllegalStateError) as exc:
                # The group moved on (a rebalance): the partitions' new owner replays from the last commit.
                log.warning("%s: offsets not committed (%s); the partitions' owner replays from the last commit",
                            self.group, exc)
                return
            except KafkaError as exc:
                log.warning("%s: offset commit failed (%s); retried with the next batch", self.group, exc)
                self._to_commit = {**offsets, **self._to_commit}
                return

    async def flush_commits(self) -> None:
        """Commit what is queued, and wait for that and the commit under way."""
        if self._to_commit:
            self._commit_soon({})
        if self._committing is not None:
            await self._committing


class _Listener(ConsumerRebalanceListener):
    def __init__(self, owner: BatchConsumer):
        self.owner = owner

    async def on_partitions_revoked(self, revoked) -> None:
        async with self.owner._busy:  # the batches in hand finish and commit first
            self.owner._owned.clear()
            await self.owner._settle()
            await self.owner.flush_commits()

    async def on_partitions_assigned(self, assigned) -> None:
        owner = self.owner
        owner._owned = set(assigned)
        for tp in assigned:  # where reading resumes: the group's commit
            try:
                pos = await owner.consumer.committed(tp)
            except KafkaError:
                pos = None
            if pos is not None:
                owner.committed[tp] = pos
        if owner.on_assigned is not None:
            result = owner.on_assigned(set(assigned))
            if asyncio.iscoroutine(result):
                await result


def attach(app: faust.App, consumer: BatchConsumer) -> BatchConsumer:
    """Start ``consumer`` with the Faust app (after its producer, stopped before it) in place of Faust's
    own consumer, which would join the group with nothing to subscribe to; and make it the app's input
    for readiness and the lag gauge (see ``assignment``)."""
    app.boot_strategy = app.BootStrategy(app, enable_kafka_consumer=False)
    consumer.beacon.reattach(app.beacon)  # a crash here crashes the app and stops the worker
    app._extra_services.append(consumer)  # Faust's @app.service takes classes; its runner takes instances too
    app.aimass_consumer = consumer
    return consumer


def assignment(app: faust.App) -> set:
    """The partitions a worker consumes now: its batch consumer's, or its Faust consumer's."""
    own = getattr(app, "aimass_consumer", None)
    return own.assignment() if own is not None else set(app.consumer.assignment())
