"""Batched, retried inserts into ClickHouse.

A batch is retried until it succeeds, with capped exponential back-off: while ClickHouse is down the
sink stops acknowledging input, so Kafka lag grows instead of memory, and nothing is lost. Each
writer has ``connections`` threads, each with its own connection (clickhouse-driver clients are not
thread-safe), so that many of its inserts can run at once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from clickhouse_driver.errors import Error as ClickHouseError

from aimass import metrics
from aimass.clickhouse.client import DEDUP_TOKEN_SINCE, connect, dedup_token, insert, server_version
from aimass.clickhouse.schema import COLUMNS

log = logging.getLogger("aimass.sink")


class TableWriter:
    def __init__(self, url: str, table: str, *, retry_max_s: float = 30.0, user=None, connections: int = 1):
        self.url = url
        self.user = user  # an aimass.clickhouse.users.DbUser (the insert-only sink user), else the URL's user
        self.table = table
        self.columns = COLUMNS[table]
        self.retry_max_s = retry_max_s
        self._local = threading.local()  # each thread's connection, and whether its server takes tokens
        self._clients: set = set()  # all of them, to close
        self._pool = ThreadPoolExecutor(max_workers=connections, thread_name_prefix=f"sink-{table}")
        self.rows = 0
        self.batches = 0
        self.failures = 0
        self.last_flush_ms = 0.0

    def _insert(self, rows: list[tuple]) -> None:
        local = self._local
        if getattr(local, "client", None) is None:
            u = self.user
            client = connect(self.url, user=u.name, password=u.password) if u else connect(self.url)
            # The first query connects: a server that refuses leaves no half-made connection behind.
            local.tokens = server_version(client) >= DEDUP_TOKEN_SINCE
            local.client = client
            self._clients.add(client)
        try:
            insert(local.client, self.table, self.columns, rows,
                   token=dedup_token(self.table, rows) if local.tokens else None)
        except BaseException:
            # A broken connection is not reused: the next attempt opens a new one.
            client, local.client = local.client, None
            self._clients.discard(client)
            try:
                client.disconnect()
            except Exception:
                pass
            raise

    async def write(self, rows: list[tuple]) -> None:
        """Insert ``rows``; returns only when they are in ClickHouse."""
        if not rows:
            return
        loop = asyncio.get_running_loop()
        m = metrics.instruments()
        attrs = {"table": self.table}
        delay = 0.2
        start = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            try:
                await loop.run_in_executor(self._pool, self._insert, rows)
            except (ClickHouseError, OSError, EOFError) as exc:
                self.failures += 1
                m.sink_failures.add(1, attrs)
                log.warning("insert of %d rows into %s failed (%s); retrying in %.1f s — input is not "
                            "acknowledged until it succeeds", len(rows), self.table, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_s)
                continue
            self.last_flush_ms = (time.perf_counter() - t0) * 1000
            self.rows += len(rows)
            self.batches += 1
            m.sink_rows.add(len(rows), attrs)
            m.sink_flush_ms.record((time.perf_counter() - start) * 1000, attrs)
            return

    def close(self) -> None:
        for client in list(self._clients):
            client.disconnect()
        self._pool.shutdown(wait=False)
