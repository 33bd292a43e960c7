"""The gateway's on-disk spool: order, bounds with drop-oldest, survival across a restart, one owner."""

import pytest

from aimass_gateway.spool import Spool, SpoolError


def _fill(sp: Spool, seqs, size=10):
    return sum(sp.put(s, "t", b"k%03d" % s, bytes([s % 256]) * size, [("h", b"%d" % s)]) for s in seqs)


def test_messages_come_back_in_their_order_with_headers(tmp_path):
    with Spool(tmp_path, max_bytes=10_000, max_messages=100) as sp:
        _fill(sp, [3, 1, 2, 7])  # failed-over in-flight messages may arrive late: their number decides
        got = sp.peek(10)
        assert [m.seq for m in got] == [1, 2, 3, 7]
        assert got[0].key == b"k001" and got[0].value == b"\x01" * 10 and got[0].headers == [("h", b"1")]
        assert (len(sp), sp.bytes) == (4, 4 * 14)
        assert [m.seq for m in sp.peek(10, max_bytes=30)] == [1, 2]  # a byte-bounded batch
        assert [m.seq for m in sp.peek(10, max_bytes=1)] == [1]  # the first always comes
        sp.remove([1, 2])
        assert [m.seq for m in sp.peek(10)] == [3, 7] and sp.next_seq() == 8


def test_the_oldest_are_dropped_and_counted_when_full(tmp_path):
    with Spool(tmp_path, max_bytes=10_000, max_messages=5) as sp:
        assert _fill(sp, range(5)) == 0
        assert _fill(sp, range(5, 12)) == 7
        assert [m.seq for m in sp.peek(100)] == [7, 8, 9, 10, 11] and sp.dropped == 7
    with Spool(tmp_path / "b", max_bytes=100, max_messages=1000) as sp:  # the byte bound: 13 bytes a message
        _fill(sp, range(20), size=9)
        assert [m.seq for m in sp.peek(100)] == list(range(13, 20)) and sp.bytes == 91 and sp.dropped == 13
        sp.put(99, "t", None, b"x" * 500)  # larger than the bound alone: it goes too, and everything before it
        assert len(sp) == 0 and sp.dropped == 21


def test_survives_a_restart_with_its_counter(tmp_path):
    with Spool(tmp_path, max_bytes=10_000, max_messages=3) as sp:
        _fill(sp, range(5))
    with Spool(tmp_path, max_bytes=10_000, max_messages=3) as sp:
        assert [m.seq for m in sp.peek(10)] == [2, 3, 4] and sp.dropped == 2 and sp.next_seq() == 5
        assert (len(sp), sp.bytes) == (3, 42)


def test_one_process_owns_a_spool(tmp_path):
    with Spool(tmp_path, 1000, 10):
        with pytest.raises(SpoolError, match="in use by another gateway process"):
            Spool(tmp_path, 1000, 10)
    Spool(tmp_path, 1000, 10).close()  # released on close
