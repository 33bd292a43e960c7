"""Test helpers for the analyst's side: the cookbook's queries (parsed from docs/analyst-cookbook.md,
the one place they live), a chdb database (a current ClickHouse engine in-process) built by the same
migrations, and copying a server database's rows into it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from aimass.clickhouse import export
from aimass.clickhouse.schema import COLUMNS
from chdb_engine import Chdb

REPO = Path(__file__).resolve().parents[1]
COOKBOOK = REPO / "docs" / "analyst-cookbook.md"
DASHBOARDS = REPO / "deploy" / "grafana" / "dashboards"


@dataclass(frozen=True)
class CookbookQuery:
    number: int
    title: str
    text: str   # what it answers, in words
    sql: str


_QUERY = re.compile(r"^### (\d+)\. (.+?)\n(.*?)```sql\n(.*?)```", re.M | re.S)


def cookbook(path: Path = COOKBOOK) -> list[CookbookQuery]:
    """Every ``### N. Title`` section of the cookbook with its text and its ```sql block."""
    return [CookbookQuery(int(m.group(1)), m.group(2).strip(), " ".join(m.group(3).split()), m.group(4).strip())
            for m in _QUERY.finditer(path.read_text())]


def copy_tables(client, database: str, chdb: Chdb, chdb_database: str) -> dict[str, int]:
    """Copy every base table the sink writes (schema.COLUMNS) from a server database into the chdb
    database of the same schema, through Parquet files; returns rows per table. The materialized
    views of the chdb database fill its rollups from these inserts, as the server's did."""
    present = {r[0] for r in client.execute(f"SELECT name FROM system.tables WHERE database = '{database}'")}
    copied = {}
    for table, columns in COLUMNS.items():
        if table not in present:
            continue
        cols = ", ".join(columns)
        rows, types = client.execute(f"SELECT {cols} FROM {database}.{table}", with_column_types=True)
        copied[table] = len(rows)
        if not rows:
            continue
        f = chdb.folder / f"{table}.parquet"
        export.write_parquet(f, [n for n, _ in types], [t for _, t in types], rows)
        chdb.execute(f"INSERT INTO {chdb_database}.{table} ({cols}) SELECT {cols} FROM file('{f}', 'Parquet')")
    return copied
