"""The gateway's store and forward: a bounded FIFO of Kafka messages on disk, for while the broker is
unreachable.

One SQLite file (stdlib sqlite3, WAL journal) per gateway. Each message keeps the sequence number the
producer gave it when it was first handed over, so messages that failed in flight and messages that
came after them sort back into the order they were produced in. Bounds on the number of messages and
on their bytes: past either, the oldest messages are deleted and counted (``dropped``, kept in the
file, so the count survives restarts). A lock file makes sure one gateway process owns the folder:
two processes draining one spool would send everything twice.

The file survives a crash or a restart of the gateway; what a power cut takes is at most the last
few messages (``synchronous=NORMAL``).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import msgspec

FILE = "spool.sqlite3"
LOCK = "spool.lock"


class SpoolError(RuntimeError):
    pass


@dataclass(frozen=True)
class SpooledMessage:
    seq: int
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]

    @property
    def size(self) -> int:
        return len(self.value) + len(self.key or b"")


class Spool:
    def __init__(self, folder: Path, max_bytes: int, max_messages: int):
        if max_bytes <= 0 or max_messages <= 0:
            raise SpoolError("a spool needs positive bounds")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_bytes, self.max_messages = max_bytes, max_messages
        self._lock_fd = os.open(self.folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._lock_fd, 32, 0).decode(errors="replace").strip()
            os.close(self._lock_fd)
            raise SpoolError(f"the spool {self.folder} is in use by another gateway process (pid {holder or '?'}); "
                             "give each gateway its own AIMASS_GATEWAY_ID or AIMASS_SPOOL_DIR") from None
        os.ftruncate(self._lock_fd, 0)
        os.pwrite(self._lock_fd, str(os.getpid()).encode(), 0)
        self._db = sqlite3.connect(self.folder / FILE, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS messages (seq INTEGER PRIMARY KEY, topic TEXT NOT NULL, "
                         "key BLOB, value BLOB NOT NULL, headers BLOB NOT NULL, size INTEGER NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        n, b = self._db.execute("SELECT count(*), coalesce(sum(size), 0) FROM messages").fetchone()
        self.messages, self.bytes = int(n), int(b)
        row = self._db.execute("SELECT value FROM meta WHERE name = 'dropped'").fetchone()
        self.dropped = int(row[0]) if row else 0

    # ------------------------------------------------------------------ reading the state
    def next_seq(self) -> int:
        """One past the highest sequence number held (0 when empty): where a restarted producer starts
        numbering, so what it spools sorts after what is already there."""
        row = self._db.execute("SELECT max(seq) FROM messages").fetchone()
        return 0 if row[0] is None else int(row[0]) + 1

    def __len__(self) -> int:
        return self.messages

    def peek(self, limit: int, max_bytes: int | None = None) -> list[SpooledMessage]:
        """The oldest messages, at most ``limit`` of them and (beyond the first) at most ``max_bytes``."""
        out, total = [], 0
        for seq, topic, key, value, headers, size in self._db.execute(
                "SELECT seq, topic, key, value, headers, size FROM messages ORDER BY seq LIMIT ?", (limit,)):
            if out and max_bytes is not None and total + size > max_bytes:
                break
            total += size
            out.append(SpooledMessage(seq, topic, key, value, [(k, v) for k, v in msgspec.msgpack.decode(headers)]))
        return out

    # ------------------------------------------------------------------ changing it
    def put(self, seq: int, topic: str, key: bytes | None, value: bytes,
            headers: list[tuple[str, bytes]] | None = None) -> int:
        """Store one message; returns how many old ones were dropped to make room (the message itself
        when it alone is larger than the byte bound)."""
        size = len(value) + len(key or b"")
        blob = msgspec.msgpack.encode([[k, v] for k, v in (headers or [])])
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("INSERT INTO messages (seq, topic, key, value, headers, size) VALUES (?, ?, ?, ?, ?, ?)",
                             (seq, topic, key, value, blob, size))
            self.messages += 1
            self.bytes += size
            dropped = self._trim()
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            self._reload()
            raise
        return dropped

    def _trim(self) -> int:
        dropped = 0
        while self.messages > self.max_messages or self.bytes > self.max_bytes:
            cut = None
            for seq, size in self._db.execute("SELECT seq, size FROM messages ORDER BY seq LIMIT 256").fetchall():
                if self.messages <= self.max_messages and self.bytes <= self.max_bytes:
                    break
                cut = seq
                self.messages -= 1
                self.bytes -= size
                dropped += 1
            if cut is None:
                break
            self._db.execute("DELETE FROM messages WHERE seq <= ?", (cut,))
        if dropped:
            self.dropped += dropped
            self._db.execute("INSERT INTO meta (name, value) VALUES ('dropped', ?) "
                             "ON CONFLICT(name) DO UPDATE SET value = excluded.value", (self.dropped,))
        return dropped

    def remove(self, seqs: list[int]) -> None:
        """Delete messages that were delivered."""
        if not seqs:
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany("DELETE FROM messages WHERE seq = ?", [(s,) for s in seqs])
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        finally:
            self._reload()

    def _reload(self) -> None:
        n, b = self._db.execute("SELECT count(*), coalesce(sum(size), 0) FROM messages").fetchone()
        self.messages, self.bytes = int(n), int(b)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
            os.close(self._lock_fd)

    def __enter__(self) -> "Spool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
