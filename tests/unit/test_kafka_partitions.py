"""Where keys land: the default partitioner as the clients apply it, and how evenly a site's ids spread."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner

from aimass.kafka import even_counts, even_spread, keys_by_partition, partition_for

DEMO_CAMERAS = ["cam-gate", "cam-lobby", "cam-yard", "cam-dock"]


def test_partition_for_is_where_the_clients_put_a_key():
    clients = DefaultPartitioner()
    for n in (1, 2, 4, 12):
        for key in [*DEMO_CAMERAS, "temp-server", "a", "é-camera", "x" * 40]:
            assert partition_for(key.encode(), n) == clients(key.encode(), list(range(n)), list(range(n)))


def test_keys_by_partition_puts_each_key_once_in_its_partition():
    parts = keys_by_partition(DEMO_CAMERAS, 4)
    assert parts == [["cam-gate", "cam-yard"], ["cam-lobby"], [], ["cam-dock"]]
    assert sorted(k for p in parts for k in p) == sorted(DEMO_CAMERAS)


def test_even_spread_and_the_counts_that_give_one():
    assert not even_spread(DEMO_CAMERAS, 4)  # two cameras share partition 0, partition 2 has none
    assert even_spread(DEMO_CAMERAS, 12) and even_spread(DEMO_CAMERAS, 1)
    assert not even_spread(["a", "b", "c"], 2)  # all three on partition 0: more than the even share of 2
    assert even_spread(["a", "b", "d"], 2)  # a, b on 0 and d on 1: as even as three keys on two can be
    found = even_counts(DEMO_CAMERAS, 5, up_to=12)
    assert found == [n for n in range(5, 13) if even_spread(DEMO_CAMERAS, n)] and 12 in found
