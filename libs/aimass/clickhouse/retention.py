"""Retention: how long each table keeps its rows, applied by dropping whole partitions.

ClickHouse 18.16 (the local stack) has no TTL, so retention is a job, `aimass retention`, run daily
(cron, a systemd timer, a Kubernetes CronJob). It drops every partition whose last day is older than
today (UTC) minus the table's ``AIMASS_RETENTION_*_DAYS`` setting; 0 keeps a table forever. A
partition goes as a whole, so a table keeps up to one partition (a day, or a month for the rollups
and model_events) beyond its retention. Dropping a partition is a metadata operation: instant, no
rewrite. It is a job rather than a timer inside the sink because the sink scales to several
processes and should hold only INSERT rights; the job needs ALTER (DROP PARTITION).

On ClickHouse 23.9+ migration 005 also sets TTLs with the settings' defaults, so rows expire without
the job; the job still applies a retention that differs from those defaults, and
``apply_ttl`` (`aimass retention --ttl`, 20.1+) rewrites the TTLs to the settings.

Both functions take an ``execute(sql) -> rows`` callable, like the migration runner, so the tests
run them on the 18.16 server and on chdb.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass

from aimass.settings import Settings

Execute = Callable[[str], list[tuple]]

ROLLUPS = ("model_minutes", "model_class_minutes", "camera_minutes", "latency_minutes", "class_minutes",
           "violation_minutes", "sensor_minutes")

# table -> (the Settings field with its days, the column its TTL counts from)
TABLES: dict[str, tuple[str, str]] = {
    "frames": ("retention_frames_days", "date"),
    "detections": ("retention_detections_days", "date"),
    "violations": ("retention_violations_days", "date"),
    "sensor_readings": ("retention_sensor_readings_days", "date"),
    "deadletters": ("retention_deadletters_days", "date"),
    "model_events": ("retention_model_events_days", "date"),
    "shadow_results": ("retention_shadow_results_days", "date"),
    **{t: ("retention_rollups_days", "minute") for t in ROLLUPS},
}

TTL_SINCE = (20, 1)          # ALTER TABLE ... MODIFY TTL
REMOVE_TTL_SINCE = (20, 10)  # ALTER TABLE ... REMOVE TTL


@dataclass(frozen=True)
class Partition:
    table: str
    partition: str
    last_day: dt.date
    rows: int
    bytes: int


def retention_days(settings: Settings) -> dict[str, int]:
    return {table: getattr(settings, field) for table, (field, _) in TABLES.items()}


def partition_last_day(partition: str) -> dt.date | None:
    """The last day a partition can hold: ``20261123`` (toYYYYMMDD) is that day, ``202611``
    (toYYYYMM) the month's last day. Anything else (``tuple()``, ...) is not judged: None."""
    p = partition.strip().strip("'")
    try:
        if re.fullmatch(r"\d{8}", p):
            return dt.date(int(p[:4]), int(p[4:6]), int(p[6:]))
        if re.fullmatch(r"\d{6}", p):
            y, m = int(p[:4]), int(p[4:])
            return dt.date(y, m, calendar.monthrange(y, m)[1])
    except ValueError:
        return None
    return None


def expired(partitions: list[Partition], days: dict[str, int], today: dt.date) -> list[Partition]:
    """The partitions whose last day is older than ``today - days[table]`` (tables with 0 days or
    not in ``days`` keep everything)."""
    out = []
    for p in partitions:
        keep = days.get(p.table, 0)
        if keep > 0 and p.last_day < today - dt.timedelta(days=keep):
            out.append(p)
    return out


def _check_database(database: str) -> None:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", database):
        raise ValueError(f"database name {database!r} must be letters, digits and underscores")


def list_partitions(execute: Execute, database: str) -> list[Partition]:
    _check_database(database)
    names = ", ".join(f"'{t}'" for t in TABLES)
    rows = execute(f"SELECT table, partition, sum(rows), sum(bytes_on_disk) FROM system.parts "
                   f"WHERE database = '{database}' AND active AND table IN ({names}) "
                   f"GROUP BY table, partition ORDER BY table, partition")
    out = []
    for table, partition, n, size in rows:
        last = partition_last_day(str(partition))
        if last is not None:
            out.append(Partition(table, str(partition), last, int(n), int(size)))
    return out


def apply_retention(execute: Execute, database: str, settings: Settings, *, today: dt.date | None = None,
                    dry_run: bool = False) -> list[Partition]:
    """Drop the expired partitions of ``database``; returns them (``dry_run``: only returns them)."""
    today = today or dt.datetime.now(dt.timezone.utc).date()
    gone = expired(list_partitions(execute, database), retention_days(settings), today)
    if not dry_run:
        for p in gone:
            # The partition's value as ClickHouse prints it (20261123) is also its SQL literal.
            execute(f"ALTER TABLE {database}.{p.table} DROP PARTITION {p.partition}")
    return gone


def ttl_statement(database: str, table: str, days: int) -> str:
    column = TABLES[table][1]
    if days == 0:
        return f"ALTER TABLE {database}.{table} REMOVE TTL"
    return f"ALTER TABLE {database}.{table} MODIFY TTL {column} + toIntervalDay({days})"


def apply_ttl(execute: Execute, database: str, settings: Settings, server_version: tuple[int, ...], *,
              dry_run: bool = False) -> list[tuple[str, str]]:
    """Set each existing table's TTL to its retention setting (ClickHouse 20.1+; nothing on an older
    server). Returns (table, TTL) pairs. On a current server MODIFY TTL also rewrites the parts
    that hold expired rows (a mutation), once."""
    _check_database(database)
    if server_version < TTL_SINCE:
        return []
    engines = dict(execute(f"SELECT name, engine_full FROM system.tables WHERE database = '{database}'"))
    done = []
    for table, days in retention_days(settings).items():
        if table not in engines:
            continue
        if days == 0 and (server_version < REMOVE_TTL_SINCE or " TTL " not in engines[table]):
            if " TTL " not in engines[table]:
                done.append((table, "none"))
            continue
        if not dry_run:
            execute(ttl_statement(database, table, days))
        done.append((table, "none" if days == 0 else f"{TABLES[table][1]} + {days} days"))
    return done
