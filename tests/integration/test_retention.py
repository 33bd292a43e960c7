"""Retention on ClickHouse 18.16 (no TTL there): `aimass retention` drops the partitions older than
each table's AIMASS_RETENTION_*_DAYS and keeps the rest."""

import datetime as dt

import pytest
from typer.testing import CliRunner

from aimass.cli import app
from aimass.clickhouse.client import server_version

pytestmark = pytest.mark.integration


def test_retention_drops_old_partitions_on_the_local_server(ns, ns_ch):
    assert server_version(ns_ch) < (20, 1), "this test is about a server without TTL"
    today = dt.datetime.now(dt.timezone.utc).date()
    old, kept = today - dt.timedelta(days=40), today - dt.timedelta(days=3)
    ns_ch.execute("INSERT INTO frames (date, captured, captured_ms, camera_id, seq) VALUES",
                  [(d, dt.datetime(d.year, d.month, d.day, 12), 0.0, "c", i) for i, d in enumerate((old, kept))])
    month = today.replace(day=1) - dt.timedelta(days=430)
    ns_ch.execute("INSERT INTO violation_minutes (minute, rule_id, starts) VALUES",
                  [(dt.datetime(month.year, month.month, 1), "r", 1), (dt.datetime.now(), "r", 1)])
    env = {"AIMASS_CLICKHOUSE_URL": ns.clickhouse_url, "AIMASS_RETENTION_FRAMES_DAYS": "30"}

    r = CliRunner().invoke(app, ["retention", "--dry-run"], env=env)
    assert r.exit_code == 0, r.output
    assert old.strftime("%Y%m%d") in r.output and month.strftime("%Y%m") in r.output
    assert ns_ch.execute("SELECT count() FROM frames") == [(2,)]

    r = CliRunner().invoke(app, ["retention"], env=env)
    assert r.exit_code == 0, r.output
    assert ns_ch.execute("SELECT date FROM frames") == [(kept,)]
    assert ns_ch.execute("SELECT count() FROM violation_minutes") == [(1,)]
    # The camera_minutes rollup of the dropped frame lives in a month partition that is kept.
    assert ns_ch.execute("SELECT sum(frames) FROM camera_minutes") == [(2,)]

    r = CliRunner().invoke(app, ["retention", "--ttl"], env=env)
    assert r.exit_code == 0, r.output  # --ttl does nothing on 18.16: nothing to set, nothing to drop
    assert ns_ch.execute("SELECT count() FROM frames") == [(1,)]
