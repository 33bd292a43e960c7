"""ClickHouse connections from one URL: ``clickhouse://[user[:password]@]host[:port]/database``.

The password may instead come from ``AIMASS_CLICKHOUSE_PASSWORD`` (or a file named by
``AIMASS_CLICKHOUSE_PASSWORD_FILE``), which keeps it out of process listings and logs; it is never
printed. The native protocol (port 9000 by default) is used throughout: clickhouse-driver sends
inserts as columnar blocks, the fastest way into ClickHouse from Python.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import msgspec
from clickhouse_driver import Client

# The driver logs a full traceback for every refused connection; callers here report the failure
# themselves, once, with what to do.
logging.getLogger("clickhouse_driver.connection").setLevel(logging.ERROR)


class ClickHouseURLError(ValueError):
    pass


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    database: str
    user: str
    password: str

    def __repr__(self) -> str:  # never show the password
        return f"Target({self.user}@{self.host}:{self.port}/{self.database})"


def parse_url(url: str) -> Target:
    if "://" not in url:
        url = "clickhouse://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("clickhouse", "clickhouse+native", "tcp"):
        raise ClickHouseURLError(f"ClickHouse URL scheme {parts.scheme!r} is not supported; use "
                                 "clickhouse://[user[:password]@]host[:port]/database (the native protocol, port 9000)")
    if not parts.hostname:
        raise ClickHouseURLError("the ClickHouse URL has no host; expected clickhouse://host:9000/database")
    try:
        port = parts.port or 9000
    except ValueError:
        raise ClickHouseURLError("the ClickHouse URL has a port that is not a number") from None
    password = unquote(parts.password) if parts.password is not None else _password_from_env()
    return Target(host=parts.hostname, port=port, database=parts.path.strip("/") or "default",
                  user=unquote(parts.username) if parts.username else "default", password=password)


def _password_from_env() -> str:
    if os.environ.get("AIMASS_CLICKHOUSE_PASSWORD"):
        return os.environ["AIMASS_CLICKHOUSE_PASSWORD"]
    f = os.environ.get("AIMASS_CLICKHOUSE_PASSWORD_FILE")
    return Path(f).read_text().strip() if f else ""


def database_of(url: str) -> str:
    return parse_url(url).database


def connect(url: str, *, database: str | None = None, user: str | None = None, password: str | None = None,
            **settings) -> Client:
    """A client for ``url``; ``user`` and ``password`` replace the URL's (a service's own database user,
    aimass.clickhouse.users)."""
    t = parse_url(url)
    if user is not None:
        t = Target(t.host, t.port, t.database, user, password or "")
    return Client(host=t.host, port=t.port, database=database or t.database, user=t.user, password=t.password,
                  connect_timeout=5, send_receive_timeout=60, settings=settings or None)


def server_version(client: Client) -> tuple[int, ...]:
    v = client.execute("SELECT version()")[0][0]
    return tuple(int(x) for x in v.split(".") if x.isdigit())


def query_rows(client: Client, sql: str) -> tuple[list[str], list[tuple]]:
    rows, types = client.execute(sql, with_column_types=True)
    return [name for name, _ in types], rows


DEDUP_TOKEN_SINCE = (22, 2)  # insert_deduplication_token (see migrations/007_insert_dedup.sql)


# Rows as MessagePack: exact for floats, distinct for 1 and "1", and ~0.3 us a row where repr() of each
# row took ~5 us (more than clickhouse-driver's own serialisation). A type MessagePack lacks goes by repr.
_row_encoder = msgspec.msgpack.Encoder(enc_hook=repr)


def dedup_token(table: str, rows: list[tuple]) -> str:
    """The same rows give the same token: a retried batch is recognised by the server."""
    h = hashlib.sha256(table.encode())
    h.update(_row_encoder.encode(rows))
    return h.hexdigest()


def insert(client: Client, table: str, columns: tuple[str, ...], rows: list[tuple], token: str | None = None) -> None:
    """One batch insert; rows are tuples in ``columns`` order. ``token``: an insert deduplication token
    (servers from 22.2; the table needs a deduplication window)."""
    settings = {"insert_deduplication_token": token} if token else None
    client.execute(f"INSERT INTO {table} ({', '.join(columns)}) VALUES", rows, settings=settings)
