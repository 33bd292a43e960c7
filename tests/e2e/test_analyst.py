"""The analyst's side against the demo's data: every cookbook query (docs/analyst-cookbook.md) and
every Grafana panel (deploy/grafana/dashboards) runs on ClickHouse 18.16 and on a current ClickHouse
(chdb) and must return rows; `aimass sql` writes its formats from the real server.

The demo's data: the demo site (services/gateway/sites/demo.yaml) simulated for 30 s through the real
detector, rules and sink into a namespace database on the session's 18.16 server, once for this
module, plus what the demo lacks and two queries need: two malformed messages the real workers
dead-letter, and one frame of a camera `cam-retired` an hour old (a camera that stopped sending).
The same rows are then copied into chdb, whose tables come from the same migrations; its materialized
views fill its rollups from them.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import json
import math
import time

import pytest
from typer.testing import CliRunner

from aimass import contracts, grafana
from aimass.cli import app
from aimass.clickhouse.client import connect, insert, query_rows
from aimass.clickhouse.migrate import migrate
from aimass.clickhouse.schema import COLUMNS
from aimass.settings import DEFAULT_SITE_FILE, GatewaySettings
from aimass.site import load_site
from aimass_gateway.simulate import simulate
from analyst import DASHBOARDS, Chdb, cookbook, copy_tables
from conftest import wait_until

pytestmark = pytest.mark.e2e
SECONDS = 30.0  # the demo's first incident ends 25 s in (gate-intrusion): mean durations need one
ENGINES = ("clickhouse-18.16", "chdb")
QUERIES = cookbook()
PANELS = [q for f in sorted(DASHBOARDS.glob("*.json")) for q in grafana.clickhouse_queries(grafana.load(f))]


class Demo:
    def __init__(self, ns, client, chdb: Chdb, start_ms: float, end_ms: float, sent: int, copied: dict):
        self.ns, self.client, self.chdb = ns, client, chdb
        self.start_ms, self.end_ms, self.sent, self.copied = start_ms, end_ms, sent, copied

    def run(self, engine: str, sql: str) -> list[tuple]:
        return self.client.execute(sql) if engine == "clickhouse-18.16" else self.chdb.execute(sql)

    def time_range(self) -> grafana.TimeRange:
        # From before the workers started (their model events) to a minute past now.
        start = dt.datetime.fromtimestamp(self.start_ms / 1000 - 60, dt.timezone.utc)
        end = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=60)
        return grafana.TimeRange.of(start, end, max_data_points=200)


async def _bad_input(ns) -> None:
    """Two messages the workers must refuse: not a Frame (detector), an empty reading (rules)."""
    from aimass.kafka import start_producer
    p = await start_producer(ns.settings())
    try:
        await p.send_and_wait(ns.topic_prefix + contracts.TOPIC_FRAMES, b"\xc1 not a frame", key=b"cam-x")
        await p.send_and_wait(ns.topic_prefix + contracts.TOPIC_SENSORS, b"", key=b"temp-x")
    finally:
        await p.stop()


def _retired_camera_frame(site_id: str) -> tuple:
    ms = contracts.now_ms() - 3_600_000
    row = {c: 0 for c in COLUMNS["frames"]}
    row.update(date=dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).date(), captured=int(ms // 1000),
               captured_ms=ms, site_id=site_id, camera_id="cam-retired", seq=41, width=512, height=384,
               jpeg_bytes=31000, model_name="nanodet-g-416", model_version="1", batch_size=1,
               sent_ms=ms + 4, detector_in_ms=ms + 9, decoded_ms=ms + 14, inferred_ms=ms + 40, detector_out_ms=ms + 42,
               sink_in_ms=ms + 55)
    return tuple(row[c] for c in COLUMNS["frames"])


def _count(client, sql: str) -> int:
    return query_rows(client, sql)[1][0][0]


@pytest.fixture(scope="module")
def demo(local_stack, tmp_path_factory):
    from aimass import stack
    from conftest import Namespace, Workers

    ns = Namespace(local_stack)
    stack.prepare(ns.settings())
    tmp = tmp_path_factory.mktemp("analyst")
    # On a busy machine the detector may fall behind; it must still serve every frame (not skip the
    # late ones, as it does past max_frame_age_s), or the demo's data would be a different set each run.
    w = Workers(tmp, {**ns.env, "AIMASS_SITE_FILE": str(DEFAULT_SITE_FILE), "AIMASS_MAX_FRAME_AGE_S": "600"})
    client = connect(ns.clickhouse_url)
    chdb = None
    try:
        start_ms = contracts.now_ms()
        w.start("detector", "rules", "sink")
        site = load_site(DEFAULT_SITE_FILE)
        gw_settings = ns.settings(GatewaySettings, site_file=DEFAULT_SITE_FILE, state_dir=tmp)  # its own spool
        gw = asyncio.run(simulate(site, gw_settings, SECONDS))
        sent = gw.counters.frames
        assert sent >= 4 * 5 * SECONDS * 0.9 and gw.counters.send_errors == 0, gw.counters
        asyncio.run(_bad_input(ns))
        insert(client, "frames", COLUMNS["frames"], [_retired_camera_frame(site.site.id)])
        wait_until(lambda: _count(client, "SELECT count() FROM frames FINAL") >= sent + 1, 120,
                   f"{sent} demo frames in ClickHouse", interval_s=0.5)
        wait_until(lambda: _count(client, "SELECT count() FROM sensor_readings FINAL") >= gw.counters.readings, 30,
                   "every sensor reading in ClickHouse", interval_s=0.5)
        wait_until(lambda: _count(client, "SELECT count() FROM deadletters") >= 2, 30, "two dead letters",
                   interval_s=0.5)
        wait_until(lambda: _count(client, "SELECT count() FROM violations FINAL WHERE event = 'end'") >= 1, 30,
                   "an incident that ended", interval_s=0.5)
        w.stop()  # the rest is SQL: give the CPU to ClickHouse and chdb
        end_ms = contracts.now_ms()

        chdb = Chdb(tmp)
        migrate(chdb.execute, ns.database, (26, 9))
        copied = copy_tables(client, ns.database, chdb, ns.database)
        chdb.execute(f"USE {ns.database}")  # the cookbook and the panels name tables without a database
        yield Demo(ns, client, chdb, start_ms, end_ms, sent, copied)
    except BaseException:
        print(w.logs())
        raise
    finally:
        w.stop()
        client.disconnect()
        if chdb is not None:
            chdb.close()


def _has_data(rows: list[tuple]) -> bool:
    """At least one cell that holds something (a stat panel's single row of 0 or NULL does not)."""
    def some(v) -> bool:
        return not (v is None or v == 0 or v == "" or v == [] or (isinstance(v, float) and math.isnan(v)))
    return any(some(v) for r in rows for v in r)


# ---------------------------------------------------------------- the data itself
def test_demo_rows_are_the_same_on_both_engines(demo):
    assert demo.copied["frames"] >= demo.sent + 1 and demo.copied["detections"] > 0
    assert demo.copied["violations"] > 0 and demo.copied["sensor_readings"] > 0 and demo.copied["deadletters"] >= 2
    for table, n in demo.copied.items():
        assert demo.run("chdb", f"SELECT count() FROM {table}") == [(n,)], table


@pytest.mark.parametrize("engine", ENGINES)
def test_rollups_count_every_inserted_row(demo, engine):
    """The materialized views of 003 saw every insert: their sums equal the base tables' raw counts."""
    run = lambda sql: demo.run(engine, sql)[0][0]  # noqa: E731
    assert run("SELECT sum(frames) FROM camera_minutes") == run("SELECT count() FROM frames")
    assert run("SELECT sum(jpeg_bytes) FROM camera_minutes") == run("SELECT sum(jpeg_bytes) FROM frames")
    assert run("SELECT sum(detections) FROM class_minutes") == run("SELECT count() FROM detections")
    assert run("SELECT sum(starts) FROM violation_minutes") == run("SELECT countIf(event = 'start') FROM violations")
    assert run("SELECT countMerge(readings) FROM sensor_minutes") == run("SELECT count() FROM sensor_readings")
    assert run("SELECT round(maxMerge(value_max), 3) FROM sensor_minutes WHERE sensor_id = 'temp-server'") == \
        run("SELECT round(max(value), 3) FROM sensor_readings WHERE sensor_id = 'temp-server'")
    # Only frames with the gateway's stamps feed latency_minutes: the demo's, and the crafted one.
    p99 = run("SELECT quantilesMerge(0.5, 0.95, 0.99)(end_to_end_ms)[3] FROM latency_minutes")
    assert p99 > 0


def test_rollups_agree_between_engines(demo):
    for sql in ("SELECT camera_id, sum(frames), sum(objects) FROM camera_minutes GROUP BY camera_id ORDER BY camera_id",
                "SELECT label, sum(detections) FROM class_minutes GROUP BY label ORDER BY label",
                "SELECT zone_id, rule_id, sum(starts), sum(ends) FROM violation_minutes GROUP BY zone_id, rule_id "
                "ORDER BY zone_id, rule_id",
                "SELECT sensor_id, countMerge(readings) FROM sensor_minutes GROUP BY sensor_id ORDER BY sensor_id"):
        server = [tuple(r) for r in demo.run("clickhouse-18.16", sql)]
        assert server and server == [tuple(r) for r in demo.run("chdb", sql)], sql


# ---------------------------------------------------------------- the cookbook
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("query", QUERIES, ids=[f"{q.number:02d}" for q in QUERIES])
def test_cookbook_query_returns_rows(demo, query, engine):
    rows = demo.run(engine, query.sql)
    assert rows and _has_data(rows), f"#{query.number} {query.title} returned no data on {engine}"


def _cookbook(title: str):
    return next(q for q in QUERIES if q.title == title)


@pytest.mark.parametrize("engine", ENGINES)
def test_cookbook_finds_the_camera_that_stopped_and_the_refused_input(demo, engine):
    stopped = demo.run(engine, _cookbook("Cameras that stopped sending").sql)
    assert [r[1] for r in stopped] == ["cam-retired"]
    assert 3500 <= int(stopped[0][3]) <= 3600 + (time.time() * 1000 - demo.end_ms) / 1000 + 120
    reasons = {(r[0], r[2]) for r in demo.run(engine, _cookbook("Dead letters by reason").sql)}
    assert {("detector", "bad_encoding"), ("rules", "empty")} <= reasons, reasons


@pytest.mark.parametrize("engine", ENGINES)
def test_cookbook_open_incidents_leave_out_instantaneous_rules(demo, engine):
    open_ = demo.run(engine, _cookbook("Incidents still open").sql)
    assert open_ and not {r[2] for r in open_} & {"line_crossing", "correlation"}
    assert "gate-intrusion" not in {r[1] for r in open_}  # it ended 25 s in
    durations = demo.run(engine, _cookbook("Mean incident duration per rule").sql)
    assert ("gate-intrusion", "zone_intrusion") in {(r[0], r[1]) for r in durations}
    assert all(float(r[3]) > 0 for r in durations)


# ---------------------------------------------------------------- Grafana
@pytest.fixture(scope="module")
def variables(demo):
    """Per engine and dashboard: each variable's value as Grafana would start with it (its query run)."""
    out = {}
    rng = demo.time_range()
    for f in sorted(DASHBOARDS.glob("*.json")):
        d = grafana.load(f)
        for engine in ENGINES:
            values = {}
            for v in grafana.query_variables(d):
                options = [str(r[0]) for r in demo.run(engine, grafana.expand(grafana.variable_sql(v), rng, values))]
                values[v["name"]] = grafana.choose(v, options)
            out[(d["title"], engine)] = values
    return out


def test_dashboard_variables_offer_the_demo_site_and_cameras(variables):
    for (title, engine), values in variables.items():
        assert values["site"] == "hq", (title, engine)
        if "camera" in values:
            assert values["camera"] == "cam-lobby", (title, engine)  # the saved choice is offered


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("panel", PANELS, ids=[f"{p.dashboard.split('/')[-1].strip()}: {p.panel}" for p in PANELS])
def test_grafana_panel_returns_rows(demo, variables, panel, engine):
    sql = grafana.expand(panel.sql, demo.time_range(), variables[(panel.dashboard, engine)])
    assert "$" not in sql, sql
    rows = demo.run(engine, sql)
    what = f"{panel.dashboard} / {panel.panel} returned no data on {engine}:\n{sql}"
    if panel.panel_type == "stat":  # one number, which may rightly be 0 (no frames lost)
        assert len(rows) == 1 and rows[0][0] is not None and not (isinstance(rows[0][0], float) and math.isnan(rows[0][0])), what
    else:
        assert rows and _has_data(rows), what
    if panel.format == 0:  # a time series: its first column is the time
        assert all(r[0] is not None for r in rows)


# ---------------------------------------------------------------- aimass sql
SQL = ("SELECT camera_id, count() AS frames, min(captured) AS first, groupArray(3)(label) AS labels "
       "FROM detections FINAL GROUP BY camera_id ORDER BY camera_id")


def _aimass_sql(demo, *args: str):
    r = CliRunner().invoke(app, ["sql", *args], env={"AIMASS_CLICKHOUSE_URL": demo.ns.clickhouse_url})
    return r


def test_aimass_sql_writes_csv_json_and_parquet(demo, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    expected = demo.client.execute(SQL)
    r = _aimass_sql(demo, SQL, "--format", "csv", "--output", str(tmp_path / "d.csv"))
    assert r.exit_code == 0, r.output
    rows = list(csv.reader(open(tmp_path / "d.csv", newline="")))
    assert rows[0] == ["camera_id", "frames", "first", "labels"]
    assert [(c, int(n)) for c, n, *_ in rows[1:]] == [(c, n) for c, n, *_ in expected]
    assert rows[1][2] == expected[0][2].isoformat(sep=" ") and json.loads(rows[1][3]) == expected[0][3]

    r = _aimass_sql(demo, SQL, "--format", "json")
    assert r.exit_code == 0, r.output
    objs = [json.loads(line) for line in r.stdout.splitlines()]
    assert [(o["camera_id"], o["frames"]) for o in objs] == [(c, n) for c, n, *_ in expected]

    r = _aimass_sql(demo, SQL, "--format", "parquet", "--output", str(tmp_path / "d.parquet"))
    assert r.exit_code == 0, r.output
    t = pq.read_table(tmp_path / "d.parquet")
    first = t.schema.field("first").type  # Parquet keeps seconds as milliseconds
    assert str(t.schema.field("frames").type) == "uint64" and pa.types.is_timestamp(first) and first.tz == "UTC"
    assert t.column("first").to_pylist()[0] == expected[0][2].replace(tzinfo=dt.timezone.utc)
    assert t.column("camera_id").to_pylist() == [e[0] for e in expected]
    assert t.column("labels").to_pylist()[0] == expected[0][3]

    r = _aimass_sql(demo, SQL, "--output", str(tmp_path / "d.txt"))
    assert r.exit_code == 0, r.output
    text = (tmp_path / "d.txt").read_text()
    assert "camera_id" in text and all(e[0] in text for e in expected)


def test_aimass_sql_reports_a_refused_query_in_one_line(demo):
    r = _aimass_sql(demo, "SELECT no_such_column FROM frames", "--format", "csv")
    assert r.exit_code == 1
    assert "ClickHouse refused the query" in r.output and "no_such_column" in r.output
    assert "Stack trace" not in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("engine", ENGINES)
def test_macros_outside_the_dashboards_expand_to_what_each_server_runs(demo, engine):
    """$__timeInterval and the _ms macros need toStartOfInterval / fromUnixTimestamp64Milli: the plugin's
    expansion on a current server, the legacy one (aimass.grafana, legacy=True) on 18.16."""
    sql = ("SELECT $__timeInterval(captured) AS time, count() AS frames FROM frames "
           "WHERE $__timeFilter(captured) GROUP BY time ORDER BY time")
    rows = demo.run(engine, grafana.expand(sql, demo.time_range(), legacy=engine == "clickhouse-18.16"))
    assert rows and sum(int(r[1]) for r in rows) >= demo.sent
    if engine == "chdb":
        ms = grafana.expand("SELECT count() FROM frames WHERE $__timeFilter_ms(toDateTime64(captured_ms / 1000, 3))",
                            demo.time_range())
        assert int(demo.run(engine, ms)[0][0]) >= demo.sent
