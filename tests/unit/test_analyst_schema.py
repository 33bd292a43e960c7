"""The analyst's schema on a current ClickHouse engine (chdb, in-process): the rollups of migration
003, the TTLs and comments of 005, retention by dropped partitions, and every cookbook query and
Grafana panel accepted by the engine (on empty tables; tests/e2e/test_analyst.py runs them on data)."""

import datetime as dt
import re

import pytest

from aimass import grafana
from aimass.clickhouse import retention
from aimass.clickhouse.migrate import MIGRATIONS_DIR, discover, migrate
from aimass.settings import Settings
from analyst import DASHBOARDS, Chdb, cookbook

pytest.importorskip("chdb")
DB = "analyst"
CURRENT = (26, 9)


@pytest.fixture(scope="module")
def chdb(tmp_path_factory):
    c = Chdb(tmp_path_factory.mktemp("chdb_analyst"))
    migrate(c.execute, DB, CURRENT)
    yield c
    c.close()


# ---------------------------------------------------------------- the cookbook, statically
def test_the_cookbook_answers_the_questions_asked():
    qs = cookbook()
    assert len(qs) >= 15
    assert [q.number for q in qs] == list(range(1, len(qs) + 1))
    titles = {q.title for q in qs}
    for must in ("Busiest zones", "Violations per hour by rule", "Latency percentiles by stage",
                 "Cameras that stopped sending", "Model comparison", "Dead letters by reason", "Incidents still open",
                 "Mean incident duration per rule", "Detections per class per hour", "Sensor extremes"):
        assert must in titles
    for q in qs:
        assert len(q.text) > 20 and q.sql.lstrip().upper().startswith("SELECT"), q.title
        assert ";" not in q.sql, f"{q.title}: one statement, no ';' (the tests run it as it is)"


# ---------------------------------------------------------------- 003 and 005 on a current engine
def test_005_ttls_are_the_retention_settings_defaults():
    [m] = [m for m in discover() if m.name == "retention_comments"]
    assert m.requires >= (20, 1)
    ttls = {t: (col, int(days)) for t, col, days in
            re.findall(r"ALTER TABLE \{db\}\.(\w+) MODIFY TTL (\w+) \+ toIntervalDay\((\d+)\)", m.sql)}
    defaults = {t: (col, Settings.model_fields[field].default) for t, (field, col) in retention.TABLES.items()}
    assert ttls == defaults


def test_every_analyst_table_and_column_has_a_comment_and_a_ttl(chdb):
    for table in retention.TABLES:
        [(comment, engine)] = chdb.execute(f"SELECT comment, engine_full FROM system.tables "
                                           f"WHERE database = '{DB}' AND name = '{table}'")
        assert comment, f"{table} has no comment"
        assert " TTL " in engine, f"{table} has no TTL"
        bare = chdb.execute(f"SELECT name FROM system.columns WHERE database = '{DB}' AND table = '{table}' "
                            f"AND comment = ''")
        assert bare == [], f"{table}: columns without a comment: {bare}"


def test_rollups_fill_from_inserts(chdb):
    chdb.execute(f"INSERT INTO {DB}.frames (date, captured, captured_ms, site_id, camera_id, seq, jpeg_bytes, objects, "
                 f"sent_ms, detector_in_ms, decoded_ms, inferred_ms, detector_out_ms, sink_in_ms) VALUES "
                 f"(today(), now(), 1000, 's', 'c', 1, 100, 2, 1010, 1020, 1025, 1050, 1051, 1100), "
                 f"(today(), now(), 1200, 's', 'c', 2, 300, 0, 0, 0, 0, 0, 0, 1300)")
    chdb.execute(f"INSERT INTO {DB}.violations (date, at, at_ms, violation_id, event, site_id, rule_id, zone_id, "
                 f"camera_id) VALUES (today(), now(), 1, 'v1', 'start', 's', 'r', 'z', 'c'), "
                 f"(today(), now(), 2, 'v1', 'end', 's', 'r', 'z', 'c')")
    chdb.execute(f"INSERT INTO {DB}.sensor_readings (date, captured, captured_ms, site_id, sensor_id, seq, value) "
                 f"VALUES (today(), now(), 1, 's', 't', 1, 20.5), (today(), now(), 2, 's', 't', 2, 24.5)")
    assert chdb.execute(f"SELECT sum(frames), sum(objects), sum(jpeg_bytes) FROM {DB}.camera_minutes "
                        f"WHERE site_id = 's'") == [(2, 2, 400)]
    # Only the frame with the gateway's stamps counts for latency: one value, 100 ms end to end.
    assert chdb.execute(f"SELECT quantilesMerge(0.5, 0.95, 0.99)(end_to_end_ms)[1], "
                        f"quantilesMerge(0.5, 0.95, 0.99)(transport_ms)[1] FROM {DB}.latency_minutes "
                        f"WHERE site_id = 's'") == [(100, 10)]
    assert chdb.execute(f"SELECT zone_id, rule_id, sum(starts), sum(ends) FROM {DB}.violation_minutes "
                        f"WHERE site_id = 's' GROUP BY zone_id, rule_id") == [("z", "r", 1, 1)]
    assert chdb.execute(f"SELECT countMerge(readings), minMerge(value_min), maxMerge(value_max), avgMerge(value_avg) "
                        f"FROM {DB}.sensor_minutes WHERE site_id = 's'") == [(2, 20.5, 24.5, 22.5)]


def test_cookbook_and_panels_run_on_a_current_engine(chdb):
    chdb.execute(f"USE {DB}")
    for q in cookbook():
        chdb.execute(q.sql)  # raises on SQL the engine refuses
    now = dt.datetime.now(dt.timezone.utc)
    rng = grafana.TimeRange.of(now - dt.timedelta(hours=6), now)
    for f in DASHBOARDS.glob("*.json"):
        d = grafana.load(f)
        values = {v["name"]: "x" for v in grafana.query_variables(d)}
        for v in grafana.query_variables(d):
            chdb.execute(grafana.expand(grafana.variable_sql(v), rng, values))
        for q in grafana.clickhouse_queries(d):
            chdb.execute(grafana.expand(q.sql, rng, values))


# ---------------------------------------------------------------- retention
def test_partition_last_day():
    assert retention.partition_last_day("20261123") == dt.date(2026, 11, 23)
    assert retention.partition_last_day("202602") == dt.date(2026, 2, 28)
    assert retention.partition_last_day("202402") == dt.date(2024, 2, 29)
    assert retention.partition_last_day("tuple()") is None
    assert retention.partition_last_day("20261399") is None


def test_expired_partitions_are_older_than_the_retention():
    today = dt.date(2026, 11, 23)
    P = retention.Partition
    parts = [P("frames", "20261023", dt.date(2026, 10, 23), 1, 1), P("frames", "20261024", dt.date(2026, 10, 24), 1, 1),
             P("camera_minutes", "202509", dt.date(2025, 9, 30), 1, 1),
             P("camera_minutes", "202510", dt.date(2025, 10, 31), 1, 1),
             P("violations", "20200101", dt.date(2020, 1, 1), 1, 1)]
    days = {"frames": 30, "camera_minutes": 395, "violations": 0}
    gone = retention.expired(parts, days, today)
    # 30 days before the 23rd of November is the 24th of October: that day stays, the 23rd goes;
    # 395 days back is 2025-10-24: September 2025 goes, October (until the 31st) stays; 0 keeps all.
    assert [(p.table, p.partition) for p in gone] == [("frames", "20261023"), ("camera_minutes", "202509")]


@pytest.fixture
def bare(chdb, request):
    """A database without 005's TTLs (the schema an 18.16 server has), in the module's chdb session:
    chdb runs one embedded server per process, so every test shares that session."""
    name = "bare_" + re.sub(r"\W", "_", request.node.name)[:40]
    migrate(chdb.execute, name, CURRENT, [m for m in discover() if m.version <= 3])
    return chdb, name


def test_retention_drops_old_partitions_and_keeps_recent_ones(bare):
    c, db = bare
    today = dt.datetime.now(dt.timezone.utc).date()
    old, recent = today - dt.timedelta(days=45), today - dt.timedelta(days=2)
    for day in (old, recent):
        c.execute(f"INSERT INTO {db}.frames (date, captured, camera_id, seq) VALUES "
                  f"('{day}', toDateTime('{day} 12:00:00'), 'c', 1)")
    c.execute(f"INSERT INTO {db}.violation_minutes (minute, rule_id, starts) VALUES "
              f"(toDateTime('{today - dt.timedelta(days=500)} 00:00:00'), 'r', 1), (now(), 'r', 1)")
    settings = Settings(retention_frames_days=30)
    planned = retention.apply_retention(c.execute, db, settings, dry_run=True)
    assert sorted((p.table, p.last_day) for p in planned) == sorted(
        [("frames", old), ("violation_minutes", retention.partition_last_day((today - dt.timedelta(days=500)).strftime("%Y%m")))])
    assert c.execute(f"SELECT count() FROM {db}.frames") == [(2,)]  # a dry run drops nothing
    gone = retention.apply_retention(c.execute, db, settings)
    assert gone == planned
    assert c.execute(f"SELECT date FROM {db}.frames") == [(recent.isoformat(),)]
    assert c.execute(f"SELECT count() FROM {db}.violation_minutes") == [(1,)]
    assert retention.apply_retention(c.execute, db, settings) == []


def test_ttl_follows_the_settings_on_a_current_server(bare):
    c, db = bare
    done = retention.apply_ttl(c.execute, db, Settings(retention_frames_days=7, retention_deadletters_days=0),
                               CURRENT)
    assert ("frames", "date + 7 days") in done and ("deadletters", "none") in done
    [(engine,)] = c.execute(f"SELECT engine_full FROM system.tables WHERE database = '{db}' AND name = 'frames'")
    assert "TTL date + toIntervalDay(7)" in engine
    assert retention.apply_ttl(c.execute, db, Settings(), (18, 16, 1)) == []  # 18.16: no TTL at all


def test_migration_files_are_numbered_around_the_reserved_004():
    names = [p.name for p in MIGRATIONS_DIR.glob("00[35]_*.sql")]
    assert sorted(names) == ["003_analyst_rollups.sql", "005_retention_comments.sql"]


def test_ttl_of_zero_days_removes_the_tables_ttl(chdb):
    migrate(chdb.execute, "with_ttl", CURRENT)
    done = retention.apply_ttl(chdb.execute, "with_ttl", Settings(retention_deadletters_days=0), CURRENT)
    assert ("deadletters", "none") in done and ("frames", "date + 30 days") in done
    [(engine,)] = chdb.execute("SELECT engine_full FROM system.tables WHERE database = 'with_ttl' AND name = 'deadletters'")
    assert " TTL " not in engine
