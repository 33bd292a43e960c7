"""The migrations on a current ClickHouse engine (chdb, in-process), and the insert columns the sink
uses against the tables they create."""


import pytest

from aimass.clickhouse.migrate import Migration, MigrationError, discover, migrate
from aimass.clickhouse.schema import COLUMNS
from chdb_engine import Chdb

pytest.importorskip("chdb.session")


@pytest.fixture(scope="module")
def chdb_exec(tmp_path_factory):
    engine = Chdb(tmp_path_factory.mktemp("chdb"))
    yield engine.execute
    engine.close()


def test_migrations_apply_once_on_a_current_clickhouse(chdb_exec):
    first = migrate(chdb_exec, "aimass", (26, 9))
    # All but those that need SQL users and roles (006): chdb in-process keeps none (unit/test_clickhouse_users.py).
    assert [m.version for m in first] == [m.version for m in discover() if not m.requires_access_control]
    assert migrate(chdb_exec, "aimass", (26, 9)) == []
    for table, columns in COLUMNS.items():
        names = [r[0] for r in chdb_exec(f"SELECT name FROM system.columns WHERE database = 'aimass' AND table = '{table}'")]
        assert set(columns) <= set(names), f"{table}: {set(columns) - set(names)} missing"


def test_final_folds_a_replayed_row(chdb_exec):
    migrate(chdb_exec, "aimass", (26, 9))
    row = "('2026-11-22', 1795000000, 1795000000000.5, 's', 'c', 7, 0.5)"
    for _ in range(2):
        chdb_exec(f"INSERT INTO aimass.sensor_readings (date, captured, captured_ms, site_id, sensor_id, seq, value) VALUES {row}")
    assert chdb_exec("SELECT count() FROM aimass.sensor_readings FINAL WHERE sensor_id = 'c'") == [(1,)]


def test_changed_applied_migration_is_an_error(chdb_exec, tmp_path):
    p = tmp_path / "900_x.sql"
    m = Migration(900, "x", p, "CREATE TABLE IF NOT EXISTS {db}.x (a UInt8) ENGINE = MergeTree() ORDER BY a;")
    migrate(chdb_exec, "mig", (26, 9), [m])
    changed = Migration(900, "x", p, m.sql + "\n-- edited")
    with pytest.raises(MigrationError, match="900_x.sql was changed"):
        migrate(chdb_exec, "mig", (26, 9), [changed])


def test_newer_server_migration_waits_for_an_upgrade(chdb_exec, tmp_path):
    m = Migration(901, "newer", tmp_path / "901_newer.sql",
                  "-- requires-server: 99.1\nCREATE TABLE IF NOT EXISTS {db}.y (a UInt8) ENGINE = MergeTree() ORDER BY a;")
    assert migrate(chdb_exec, "mig2", (26, 9), [m]) == []
    assert migrate(chdb_exec, "mig2", (99, 1), [m]) == [m]


def test_report_queries_run_on_a_current_clickhouse(chdb_exec):
    from aimass import reports
    migrate(chdb_exec, "aimass", (26, 9))
    chdb_exec("INSERT INTO aimass.frames (date, captured, captured_ms, camera_id, seq, sent_ms, detector_in_ms, "
              "decoded_ms, inferred_ms, detector_out_ms, sink_in_ms) VALUES "
              "('2026-11-22', 1795000000, 1000, 'c', 1, 1010, 1020, 1025, 1050, 1051, 1100)")
    chdb_exec("USE aimass")  # the report SQL names tables without a database, as the sink's client does
    stages = chdb_exec(reports.latency_by_stage())
    assert [s[0] for s in stages][:2] == ["gateway→detector", "decode + model wait"]
    assert stages[0][1:3] == (1, 10) and stages[5][2] == 100  # end to end: sink_in - captured
    for sql in (reports.VIOLATIONS_BY_RULE_AND_CAMERA, reports.DETECTIONS_BY_CLASS, reports.FRAMES_BY_CAMERA,
                reports.DEADLETTERS_BY_REASON):
        chdb_exec(sql)  # raises on SQL this engine rejects
