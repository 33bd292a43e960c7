"""aimass.state.StateTopic's loads across rebalances (the reads themselves: tests/integration/test_state.py)."""

import asyncio
from collections import namedtuple

from aimass import state
from aimass.settings import Settings

TP = namedtuple("TP", "topic partition")


class _App:
    def topic(self, name, **kw):
        return name


def _state_topic() -> state.StateTopic:
    return state.StateTopic(_App(), Settings(), "aimass.state.rules-cameras", "aimass.detections", 4)


def test_a_partition_given_up_while_its_state_loads_is_not_taken_as_loaded(monkeypatch):
    release = asyncio.Event()
    reads = []

    async def read(settings, topic, partition):
        reads.append(partition)
        await release.wait()
        return {b"cam-1": state.encode({"streak": len(reads)})}

    monkeypatch.setattr(state, "read_partition", read)

    async def scenario():
        st = _state_topic()
        st.assigned([TP(st.source, 0)])
        loading = asyncio.ensure_future(st.ensure(0))
        while not reads:  # the load has begun
            await asyncio.sleep(0)
        assert st.assigned([]) == set()  # revoked mid-load: nothing was loaded, nothing to forget
        release.set()
        assert await loading is None  # not this worker's to restore any more
        assert not st.owns(b"cam-1")
        # Back later: read again, so what the partition's other owner stored meanwhile is seen.
        st.assigned([TP(st.source, 0)])
        assert await st.ensure(0) == {b"cam-1": {"streak": 2}}
        assert reads == [0, 0] and await st.ensure(0) is None

    asyncio.run(scenario())


def test_two_callers_of_one_load_read_it_once_and_one_gets_the_states(monkeypatch):
    async def read(settings, topic, partition):
        await asyncio.sleep(0)
        return {b"cam-2": state.encode([1, 2])}

    monkeypatch.setattr(state, "read_partition", read)

    async def scenario():
        st = _state_topic()
        st.assigned([TP(st.source, 1)])
        first, second = await asyncio.gather(st.ensure(1), st.ensure(1))
        assert sorted([first, second], key=lambda x: x is None) == [{b"cam-2": [1, 2]}, None]

    asyncio.run(scenario())
