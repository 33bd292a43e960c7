"""Versioned SQL migrations, applied once and recorded in ``schema_migrations``.

Files are ``migrations/NNN_name.sql``; ``{db}`` in them is the target database; statements end with
``;`` at the end of a line. A file whose first lines say ``-- requires-server: 20.1`` is skipped on
an older server and not recorded, so it applies after an upgrade; ``-- requires-sql-access-control``
likewise waits for a server that can keep SQL-created users and roles (chdb in-process cannot). A
recorded migration whose file changed since is an error: edit schema with a new file, never by
rewriting an applied one.

``migrate`` takes an ``execute(sql) -> rows`` callable, so the same files run on a server through
clickhouse-driver and in-process on chdb (a current ClickHouse engine) in the tests.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_NAME = re.compile(r"^(\d{3,})_([a-z0-9_]+)\.sql$")
_REQUIRES = re.compile(r"^--\s*requires-server:\s*([\d.]+)\s*$", re.M)
_REQUIRES_ACCESS = re.compile(r"^--\s*requires-sql-access-control\s*$", re.M)

Execute = Callable[[str], list[tuple]]


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def requires(self) -> tuple[int, ...]:
        m = _REQUIRES.search(self.sql)
        return tuple(int(x) for x in m.group(1).split(".")) if m else ()

    @property
    def requires_access_control(self) -> bool:
        return bool(_REQUIRES_ACCESS.search(self.sql))

    def statements(self, database: str) -> list[str]:
        body = "\n".join(line for line in self.sql.splitlines() if not line.lstrip().startswith("--"))
        return [s.strip().replace("{db}", database) for s in re.split(r";\s*$", body, flags=re.M) if s.strip()]


def discover(folder: Path = MIGRATIONS_DIR) -> list[Migration]:
    found = []
    for p in sorted(folder.glob("*.sql")):
        m = _NAME.match(p.name)
        if not m:
            raise MigrationError(f"{p}: migration files are named NNN_name.sql (lower case)")
        found.append(Migration(int(m.group(1)), m.group(2), p, p.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"{folder}: two migration files share a version number")
    return found


def migrate(execute: Execute, database: str, server_version: tuple[int, ...],
            migrations: list[Migration] | None = None) -> list[Migration]:
    """Apply what is not applied yet; returns the migrations applied now."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", database):
        raise MigrationError(f"database name {database!r} must be letters, digits and underscores")
    execute(f"CREATE DATABASE IF NOT EXISTS {database}")
    execute(f"CREATE TABLE IF NOT EXISTS {database}.schema_migrations (version UInt32, name String, "
            f"checksum String, applied_at DateTime DEFAULT now()) ENGINE = MergeTree() ORDER BY version")
    applied = {v: (n, c) for v, n, c in execute(f"SELECT version, name, checksum FROM {database}.schema_migrations")}
    done = []
    for m in migrations if migrations is not None else discover():
        if m.version in applied:
            if applied[m.version][1] != m.checksum:
                raise MigrationError(f"{m.path} was changed after it was applied to {database} (checksum differs); "
                                     "put schema changes in a new migration file instead")
            continue
        if m.requires and server_version < m.requires:
            continue  # recorded only once applied, so it runs after the server is upgraded
        if m.requires_access_control:
            from aimass.clickhouse.users import has_sql_access_control
            if not has_sql_access_control(execute):
                continue  # likewise: applies once the server keeps SQL users
        for stmt in m.statements(database):
            execute(stmt)
        # INSERT ... SELECT: clickhouse-driver would wait for a data block after INSERT ... VALUES.
        execute(f"INSERT INTO {database}.schema_migrations (version, name, checksum) "
                f"SELECT {m.version}, '{m.name}', '{m.checksum}'")
        done.append(m)
    return done


def migrate_client(client, database: str) -> list[Migration]:
    """``migrate`` through a clickhouse-driver client."""
    from aimass.clickhouse.client import server_version
    return migrate(client.execute, database, server_version(client))
