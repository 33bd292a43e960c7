"""aimass.batch_consumer against the real broker: offsets are committed only after a batch was handled
(a handler that fails leaves its batch to be read again), two consumers of one group split the
partitions and between them handle every message in order per partition, and a batch keeps to its
byte bound; batches whose rest (the sink's inserts) runs on are committed in order, up to a number
at once."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

import pytest

from aimass import contracts
from aimass.batch_consumer import BatchConsumer
from aimass.bench import workload

pytestmark = pytest.mark.integration
TOPIC = contracts.TOPIC_DETECTIONS


async def _until(predicate, deadline_s: float, what: str) -> None:
    end = time.monotonic() + deadline_s
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline_s:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)


def _produce(ns, n: int, value_bytes: int = 0) -> list[tuple[bytes, bytes]]:
    messages = [(f"k{i % 8}".encode(), f"{i:08d}".encode() + b"x" * value_bytes) for i in range(n)]
    asyncio.run(workload.produce(ns.settings(), TOPIC, messages))
    return messages


def _consumer(ns, group: str, handle, **kw) -> BatchConsumer:
    return BatchConsumer(ns.settings(), ns.topic_prefix + group, [ns.settings().topic(TOPIC)], handle,
                         **{"max_records": 100, "max_wait_s": 0.05, **kw})


def test_a_batch_whose_handler_failed_is_read_again(ns):
    messages = _produce(ns, 400)
    seen: list[bytes] = []
    failed: list[int] = []

    async def flaky(batch) -> None:
        if not failed:  # the first batch fails: nothing of it may be committed
            failed.append(sum(map(len, batch.values())))
            raise RuntimeError("handler bug")
        seen.extend(r.value for records in batch.values() for r in records)

    async def run() -> None:
        first = _consumer(ns, "g", flaky)
        await first.start()
        await _until(lambda: failed, 30, "the first batch")
        await first.stop()
        second = _consumer(ns, "g", flaky)  # the same group, after a "restart"
        await second.start()
        await _until(lambda: len(set(seen)) == len(messages), 30, "every message")
        await second.stop()
        assert sum(second.committed.values()) == len(messages)  # all committed once handled

    asyncio.run(run())
    assert failed[0] > 0
    assert {v for _, v in messages} == set(seen)


def test_two_consumers_of_a_group_split_the_partitions_and_keep_their_order(ns):
    messages = _produce(ns, 1000)
    got: dict[str, dict[int, list[int]]] = {"a": defaultdict(list), "b": defaultdict(list)}

    def handler(name: str):
        async def handle(batch) -> None:
            for tp, records in batch.items():
                got[name][tp.partition].extend(r.offset for r in records)
        return handle

    def handled() -> int:
        return sum(len(set(v)) for g in got.values() for v in g.values())

    async def run() -> None:
        a = _consumer(ns, "g", handler("a"))
        await a.start()
        await _until(lambda: got["a"], 30, "the first consumer's first batch")
        b = _consumer(ns, "g", handler("b"))
        await b.start()
        await _until(lambda: a.assignment() and b.assignment(), 60, "both consumers holding partitions")
        # A second wave, keyed over every partition, after the split.
        more = [(f"k{i % 8}".encode(), f"{i:08d}".encode()) for i in range(1000, 2000)]
        await workload.produce(ns.settings(), TOPIC, more)
        await _until(lambda: handled() >= len(messages) + len(more), 60, "every message handled")
        await asyncio.gather(a.stop(), b.stop())
        assert not (a.assignment() & b.assignment())

    asyncio.run(run())
    per_partition: dict[int, list[int]] = defaultdict(list)
    for g in got.values():
        for p, offsets in g.items():
            assert offsets == sorted(offsets), f"partition {p} handled out of order"
            per_partition[p].extend(offsets)
    assert sum(len(set(v)) for v in per_partition.values()) == 2000  # each message at least once
    assert got["b"], "the second consumer never got a partition"


def test_a_batch_keeps_to_its_byte_bound(ns):
    _produce(ns, 1000, value_bytes=10_000)
    sizes: list[int] = []

    async def handle(batch) -> None:
        sizes.append(sum(len(r.value) for records in batch.values() for r in records))

    async def run() -> None:
        c = _consumer(ns, "g", handle, max_records=2000, max_wait_s=1.0, max_bytes=1_000_000)
        await c.start()
        await _until(lambda: sum(sizes) >= 1000 * 10_008, 30, "every message")
        await c.stop()

    asyncio.run(run())
    # About one message past the bound (the first getmany takes 50 before their size is known).
    assert len(sizes) >= 10 and max(sizes) <= max(1_000_000 + 2 * 10_008, 50 * 10_008)


def test_a_batch_s_rest_overlaps_the_next_batch_and_is_committed_only_when_it_finished(ns):
    _produce(ns, 300)
    release = asyncio.Event()
    handled: list[int] = []

    async def handle(batch):
        handled.append(sum(map(len, batch.values())))
        first = len(handled) == 1

        async def rest() -> None:  # the first batch's I/O hangs until released
            if first:
                await release.wait()
        return rest()

    async def run() -> None:
        c = _consumer(ns, "g", handle)
        await c.start()
        # The next batch is handled while the first one's rest still runs; nothing is committed yet.
        await _until(lambda: len(handled) >= 2, 30, "a second batch handled while the first is unfinished")
        assert sum(c.committed.values()) == 0
        release.set()
        await _until(lambda: sum(c.committed.values()) == 300, 30, "every offset committed")
        await c.stop()

    asyncio.run(run())
    assert sum(handled) == 300


def test_up_to_in_flight_rests_run_at_once_and_commit_in_order(ns):
    _produce(ns, 1000)
    release = asyncio.Event()
    handled: list[int] = []
    finished: list[int] = []

    async def handle(batch):
        handled.append(sum(map(len, batch.values())))
        n = len(handled)

        async def rest() -> None:  # the first batch's I/O hangs until released; the others' finish at once
            if n == 1:
                await release.wait()
            finished.append(n)
        return rest()

    async def run() -> None:
        c = _consumer(ns, "g", handle, in_flight=3)
        await c.start()
        # Batches 2 and 3 finish beside the hanging first; the 4th is handled, then waits for room.
        await _until(lambda: len(handled) >= 4 and finished == [2, 3], 30, "two rests finished beside the first")
        await asyncio.sleep(0.3)  # time for a 5th batch to get in, were it not held (not a readiness wait)
        assert len(handled) == 4
        assert sum(c.committed.values()) == 0  # 2 and 3 are done, but not committed before 1
        release.set()
        await _until(lambda: sum(c.committed.values()) == 1000, 30, "every offset committed")
        await c.stop()

    asyncio.run(run())
    assert sum(handled) == 1000 and finished[:3] == [2, 3, 1]


def test_work_between_batches_waits_for_the_batch_in_hand(ns):
    _produce(ns, 50)
    release, entered = asyncio.Event(), asyncio.Event()
    order: list[str] = []

    async def handle(batch):
        order.append("batch")
        await release.wait()  # a batch whose outputs are still on the way
        order.append("batch done")

    async def run() -> None:
        c = _consumer(ns, "g", handle)
        await c.start()
        await _until(lambda: order, 30, "a batch in hand")

        async def tick() -> None:
            async with c.between_batches():
                order.append("tick")
                entered.set()
        t = asyncio.ensure_future(tick())
        await asyncio.sleep(0.3)  # time for the tick to get in, were it not held (not a readiness wait)
        assert not entered.is_set()
        release.set()
        await asyncio.wait_for(t, 10)
        await c.stop()

    asyncio.run(run())
    assert order.index("tick") > order.index("batch done")


def test_the_bench_s_producer_puts_each_key_on_its_default_partition_in_order(ns):
    """workload.produce sends whole batches per partition: every key must still land where the default
    partitioner puts it (the bench spreads cameras over partitions by it) and keep its order, across
    batch boundaries (1 KB values: ~15 to a 16 KB producer batch) and a message bigger than a batch."""
    from aimass.kafka import partition_for, reader

    messages = [(f"k{i % 8}".encode(), f"{i:08d}".encode() + b"x" * (40_000 if i == 7 else 1000)) for i in range(1200)]
    asyncio.run(workload.produce(ns.settings(), TOPIC, messages))

    async def read() -> dict[int, list[tuple[bytes, bytes]]]:
        consumer = reader(ns.settings(), ns.settings().topic(TOPIC), auto_offset_reset="earliest")
        await consumer.start()
        got: dict[int, list] = defaultdict(list)
        try:
            end = time.monotonic() + 30
            while sum(map(len, got.values())) < len(messages) and time.monotonic() < end:
                for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                    got[tp.partition] += [(r.key, r.value) for r in records]
        finally:
            await consumer.stop()
        return got

    got = asyncio.run(read())
    assert sum(map(len, got.values())) == len(messages)
    for p, records in got.items():
        assert {partition_for(k, 4) for k, _ in records} == {p}
    for key in {k for k, _ in messages}:
        sent = [v for k, v in messages if k == key]
        assert [v for k, v in got[partition_for(key, 4)] if k == key] == sent
