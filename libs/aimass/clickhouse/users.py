"""The database users of AI Mass: an insert-only user for the sink and a read-only user for analysts,
Grafana and `aimass sql`. See docs/threat-model.md for what each can and cannot do.

**ClickHouse >= 20.5** (SQL-driven access control). Migration 006 creates their roles:
``{db}_sink_role`` (INSERT on the database) and ``{db}_reader_role`` (SELECT on it, with the settings
profile ``{db}_reader_profile``: readonly=1). ``ensure_users``, run after the migrations by `aimass stack
init` (aimass.stack.prepare), then creates each user whose password is configured
(``AIMASS_CLICKHOUSE_SINK_PASSWORD[_FILE]``, ``AIMASS_CLICKHOUSE_READER_PASSWORD[_FILE]``), grants it its
role and sets its password; run again with another password, it changes it. The SQL carries only the
password's SHA-256 (``IDENTIFIED WITH sha256_hash``), never the password, no SQL file holds either, and
nothing here logs them. ClickHouse also wants SELECT on a table that feeds a materialized view from
whoever inserts into it (ClickHouse issues #14810, #63777), so the sink's role gets SELECT on exactly
those tables and on nothing else.

**ClickHouse 18.16** has no SQL users: they are users.xml entries (``users_xml``) with the password's
SHA-256, ``<allow_databases>`` and a profile (readonly=1 for the reader, allow_ddl=0 for the sink). The
local stack's server writes them (aimass.clickhouse.server); a site on 18.16 puts the same entries in its
users.xml. What 18.16 enforces with them: tests/integration/test_clickhouse_users_server.py.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from aimass.credentials import Masked, SecretError, is_set, resolve

log = logging.getLogger(__name__)

Kind = Literal["sink", "reader"]
KINDS: tuple[Kind, ...] = ("sink", "reader")
SQL_ACCESS_CONTROL = (20, 5)  # CREATE USER / ROLE / GRANT arrived in 20.5
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class UsersError(RuntimeError):
    pass


@dataclass(frozen=True)
class DbUser:
    kind: Kind
    name: str
    password: str

    def __post_init__(self) -> None:
        if not _IDENT.fullmatch(self.name):
            raise UsersError(f"ClickHouse user name {self.name!r} must be letters, digits and underscores")

    def __repr__(self) -> str:  # never the password
        return f"DbUser({self.kind}: {self.name})"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.password.encode()).hexdigest()


def configured(settings, kind: Kind) -> DbUser | None:
    """The ``kind`` user of ``settings`` when its password is set (else None: not created, not used)."""
    value = getattr(settings, f"clickhouse_{kind}_password")
    file = getattr(settings, f"clickhouse_{kind}_password_file")
    if not is_set(value, file):
        return None
    try:
        password = resolve(value, file, f"clickhouse_{kind}_password")
    except SecretError as exc:
        raise UsersError(str(exc)) from None
    return DbUser(kind, getattr(settings, f"clickhouse_{kind}_user"), Masked(password))


def configured_users(settings) -> list[DbUser]:
    return [u for u in (configured(settings, k) for k in KINDS) if u is not None]


def role(kind: Kind, database: str) -> str:
    return f"{database}_{kind}_role"


def reader_profile(database: str) -> str:
    return f"{database}_reader_profile"


CHANGEABLE_IN_READONLY = (22, 9)


def user_statements(user: DbUser, database: str, mv_sources: list[str] = (),
                    server_version: tuple[int, ...] = CHANGEABLE_IN_READONLY) -> list[str]:
    """The SQL that creates ``user`` (or updates its password), grants it its role and makes that its
    default role. Holds the password's SHA-256, never the password. From ClickHouse 22.9 the reader may
    still set max_execution_time (1..600 s) under readonly=1: Grafana's ClickHouse plugin sets it on
    every query and fails without."""
    if not _IDENT.fullmatch(database):
        raise UsersError(f"database name {database!r} must be letters, digits and underscores")
    r = role(user.kind, database)
    auth = f"IDENTIFIED WITH sha256_hash BY '{user.sha256}'"
    settings = ""
    if user.kind == "reader":
        settings = f" SETTINGS PROFILE '{reader_profile(database)}'"
        if server_version >= CHANGEABLE_IN_READONLY:
            settings += ", max_execution_time MIN 1 MAX 600 CHANGEABLE_IN_READONLY"
    out = [f"CREATE USER IF NOT EXISTS `{user.name}` {auth}",
           f"ALTER USER `{user.name}` {auth}",  # a changed password on a user created before
           f"GRANT `{r}` TO `{user.name}`",
           f"ALTER USER `{user.name}` DEFAULT ROLE `{r}`{settings}"]
    if user.kind == "sink":
        out += [f"GRANT SELECT ON {database}.`{t}` TO `{r}`" for t in mv_sources if _IDENT.fullmatch(t)]
    return out


Execute = Callable[[str], list[tuple]]


def has_sql_access_control(execute: Execute) -> bool:
    """Whether the server keeps SQL-created users somewhere (a local directory, memory, replicated
    storage). chdb in-process has only the XML users config, so CREATE USER cannot work there."""
    try:
        rows = execute("SELECT count() FROM system.user_directories "
                       "WHERE type IN ('local_directory', 'local', 'memory', 'replicated')")
    except Exception:  # an older server without the table: SQL users live in its access_control_path
        return True
    return bool(rows and rows[0][0])


def ensure_users(execute: Execute, database: str, server_version: tuple[int, ...], users: list[DbUser]) -> list[str]:
    """Create or update ``users`` on a server with SQL access control (after migration 006); returns the
    names set. On an older server (18.16) it does nothing and says where the users live instead."""
    if not users:
        return []
    if server_version < SQL_ACCESS_CONTROL:
        log.info("ClickHouse %s has no SQL users: %s must be users.xml entries (the local stack writes them; "
                 "see aimass.clickhouse.users.users_xml)", ".".join(map(str, server_version)),
                 ", ".join(u.name for u in users))
        return []
    if not has_sql_access_control(execute):
        log.warning("this ClickHouse keeps no SQL-created users (no writable user directory): %s not created",
                    ", ".join(u.name for u in users))
        return []
    wanted = sorted({role(u.kind, database) for u in users})
    found = {r[0] for r in execute("SELECT name FROM system.roles")}
    if set(wanted) - found:
        raise UsersError(f"role(s) {', '.join(sorted(set(wanted) - found))} missing: migration 006 has not been "
                         f"applied to {database}")
    mv_sources = [r[0] for r in execute(f"SELECT name FROM system.tables WHERE database = '{database}' "
                                        "AND notEmpty(dependencies_table)")]
    done = []
    # clickhouse-driver logs every query at debug level; these carry a password hash.
    driver_log = logging.getLogger("clickhouse_driver.connection")
    level = driver_log.level
    driver_log.setLevel(max(level, logging.INFO))
    try:
        for u in users:
            for stmt in user_statements(u, database, mv_sources, server_version):
                try:
                    execute(stmt)
                except Exception as exc:
                    # The server's message may quote the statement: keep the hash out of it too.
                    detail = str(exc).replace(u.sha256, "[hidden]").replace(u.password or "\0", "[hidden]")
                    raise UsersError(f"could not set up ClickHouse user {u.name}: "
                                     f"{detail.strip().splitlines()[0][:300] if detail.strip() else type(exc).__name__}") from None
            log.info("ClickHouse user %s (%s) set up with role %s", u.name, u.kind, role(u.kind, database))
            done.append(u.name)
    finally:
        driver_log.setLevel(level)
    return done


# ------------------------------------------------------------------ ClickHouse 18.16: users.xml
PROFILES_XML = """
        <aimass_reader>
            <profile>default</profile>
            <readonly>1</readonly>
        </aimass_reader>
        <aimass_sink>
            <profile>default</profile>
            <allow_ddl>0</allow_ddl>
        </aimass_sink>"""


def users_xml(users: list[tuple[Kind, str, str]], databases: list[str],
              networks: tuple[str, ...] = ("127.0.0.1", "::1")) -> tuple[str, str]:
    """(profiles, users): the users.xml fragments for ``users`` as (kind, name, password SHA-256 hex)
    on ClickHouse 18.16: the reader with the readonly=1 profile, the sink with allow_ddl=0, both limited
    to ``databases``. The profiles inherit the ``default`` profile's limits."""
    for _, name, digest in users:
        if not _IDENT.fullmatch(name) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise UsersError(f"bad user entry for {name!r}")
    for d in databases:
        if not _IDENT.fullmatch(d):
            raise UsersError(f"database name {d!r} must be letters, digits and underscores")
    nets = "".join(f"<ip>{n}</ip>" for n in networks)
    dbs = "".join(f"<database>{d}</database>" for d in databases)
    entries = "".join(
        f"\n        <{name}>\n            <password_sha256_hex>{digest}</password_sha256_hex>\n"
        f"            <networks>{nets}</networks>\n            <profile>aimass_{kind}</profile>\n"
        f"            <quota>default</quota>\n            <allow_databases>{dbs}</allow_databases>\n        </{name}>"
        for kind, name, digest in users)
    return PROFILES_XML, entries
