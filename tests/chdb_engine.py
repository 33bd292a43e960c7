"""A current ClickHouse engine in-process (chdb) for the tests that run SQL on both engines."""

from __future__ import annotations

import json
from pathlib import Path


class Chdb:
    """One chdb session; ``execute`` returns rows as tuples, like clickhouse-driver."""

    def __init__(self, folder: Path):
        import chdb.session
        self.folder = Path(folder)
        self.session = chdb.session.Session(str(self.folder / "db"))

    def execute(self, sql: str) -> list[tuple]:
        res = self.session.query(sql, "JSONCompact")
        text = res.bytes().decode() if hasattr(res, "bytes") else str(res)
        return [tuple(r) for r in json.loads(text)["data"]] if text.strip() else []

    def close(self) -> None:
        self.session.close()
