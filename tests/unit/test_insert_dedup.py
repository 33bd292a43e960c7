"""Insert deduplication on a current ClickHouse (chdb): a batch the sink retries with the same token is
stored once, even without FINAL (migration 007); 18.16 skips the migration and folds replays with FINAL."""

import datetime

import pytest

from aimass.clickhouse.client import DEDUP_TOKEN_SINCE, dedup_token
from aimass.clickhouse.migrate import discover, migrate
from chdb_engine import Chdb

pytest.importorskip("chdb.session")


def test_a_retried_batch_is_stored_once(tmp_path):
    sess = Chdb(tmp_path)
    execute = sess.execute

    try:
        applied = migrate(execute, "aimass", (26, 9))
        assert 7 in [m.version for m in applied]
        rows = [("2026-11-23", 1795000000, 1795000000000.5, "s", "t", seq, 1.0) for seq in range(3)]
        token = dedup_token("sensor_readings", rows)
        values = ", ".join(f"('{d}', {c}, {ms}, '{s}', '{sid}', {seq}, {v})" for d, c, ms, s, sid, seq, v in rows)
        for _ in range(2):  # the insert applied, its answer lost, the sink retries the same batch
            execute(f"INSERT INTO aimass.sensor_readings (date, captured, captured_ms, site_id, sensor_id, seq, value) "
                    f"SETTINGS insert_deduplication_token = '{token}' VALUES {values}")
        assert execute("SELECT count() FROM aimass.sensor_readings") == [(3,)]  # no FINAL needed
    finally:
        sess.close()


def test_tokens_follow_the_rows_and_the_server_version():
    a = [(1, "x"), (2, "y")]
    assert dedup_token("t", a) == dedup_token("t", list(a)) != dedup_token("t", a[:1]) != dedup_token("u", a[:1])
    # Values that print alike but are stored differently give different tokens.
    assert len({dedup_token("t", [(v,)]) for v in (1, "1", 1.0, 0.1 + 0.2, 0.3, -0.0, 0.0)}) == 7
    # The sink's own value types, and one MessagePack lacks (taken by its repr), give stable tokens.
    row = (datetime.date(2026, 11, 24), 1795000000, 1795000000000.5, "cam-1", ["person"], complex(1, 2))
    assert dedup_token("t", [row]) == dedup_token("t", [tuple(row)]) != dedup_token("t", [row[:-1] + (complex(1, 3),)])
    assert (18, 16, 1) < DEDUP_TOKEN_SINCE <= (26, 9)
    assert next(m for m in discover() if m.version == 7).requires == DEDUP_TOKEN_SINCE
