"""The registry's monitoring SQL (aimass_registry.monitoring) on a current ClickHouse engine (chdb,
in-process), over rows inserted as the sink inserts them; the same queries run on the local 18.16
server in tests/integration/test_registry.py."""

from __future__ import annotations

import json

import pytest

import registry_dataset as data
from aimass.clickhouse.migrate import migrate
from aimass_registry import monitoring
from aimass_registry.worker import DriftAlerts, drift_event
from aimass.settings import RegistrySettings

chdb_session = pytest.importorskip("chdb.session")
NOW = 1_795_000_030.0


class ChdbClient:
    """What the monitoring functions need of a clickhouse-driver Client, on a chdb session."""

    def __init__(self, sess):
        self.sess = sess

    def execute(self, sql: str, with_column_types: bool = False):
        res = self.sess.query(sql, "JSONCompact")
        text = res.bytes().decode() if hasattr(res, "bytes") else str(res)
        if not text.strip():
            return ([], []) if with_column_types else []
        doc = json.loads(text)
        rows = [tuple(r) for r in doc["data"]]
        return (rows, [(m["name"], m["type"]) for m in doc["meta"]]) if with_column_types else rows


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    sess = chdb_session.Session(str(tmp_path_factory.mktemp("chdb-registry")))
    c = ChdbClient(sess)
    c.execute("SELECT 1")

    def run(sql: str):
        return c.execute(sql)
    migrate(run, "reg", (26, 9))
    for table, rows in data.rows(NOW).items():
        c.execute(data.insert_sql(table, rows, "reg"))
    c.execute("USE reg")  # the monitoring SQL names tables without a database, as the driver's client does
    yield c
    sess.close()


def test_compare_puts_canary_and_active_side_by_side(client):
    columns, rows = monitoring.compare(client, 600, now_s=NOW)
    assert columns == monitoring.COMPARE_COLUMNS
    got = {(r[0], r[9]): dict(zip(columns, r)) for r in rows}
    assert sorted(got) == [("det:1", "person"), ("det:1", "vehicle"), ("det:2", "person"), ("det:2", "vehicle")]
    a, c = got[("det:1", "person")], got[("det:2", "person")]
    assert (a["frames"], a["objects_per_frame"], a["p50_ms"], a["p99_ms"], a["mean_batch"]) == (60, 1.1, 20.0, 20.0, 4.0)
    assert (a["detections_per_frame"], a["median_score"], a["run_failures"]) == (0.1, 0.8, 0)
    assert (c["frames"], c["objects_per_frame"], c["p50_ms"], c["mean_batch"]) == (20, 3.0, 40.0, 1.0)
    assert (c["detections_per_frame"], c["run_failures"], c["load_failures"]) == (2.0, 2, 1)
    assert got[("det:2", "vehicle")]["median_score"] == 0.6
    # the baseline half an hour ago is outside a 10-minute window, inside a 1-hour one
    _, hour = monitoring.compare(client, 3600, now_s=NOW)
    assert {(r[0], r[9]): r[10] for r in hour}[("det:1", "person")] == round(126 / 120, 3)
    assert monitoring.compare(client, 600, site_id="elsewhere", now_s=NOW)[1] == []
    assert monitoring.compare(client, 600, site_id="it's", now_s=NOW)[1] == []  # quoted, not injected


def test_drift_flags_the_label_whose_rate_moved_and_only_it(client):
    columns, rows = monitoring.drift(client, 600, 3600, 0.5, now_s=NOW)
    assert columns == monitoring.DRIFT_COLUMNS
    assert rows == [("det:1", "person", 60, 2.0, 60, 0.1, 0.05)]  # vehicles steady; bags too few; det:2 no baseline
    assert monitoring.drift(client, 600, 3600, 0.99, now_s=NOW)[1] == []  # 95 % down is within a 99 % threshold
    assert monitoring.drift(client, 600, 3600, 0.5, now_s=NOW, min_detections=200)[1] == []


def test_events_newest_first(client):
    columns, rows = monitoring.events(client, limit=3)
    assert columns == monitoring.EVENT_COLUMNS and len(rows) == 3
    _, only = monitoring.events(client, model="det:2")
    assert sorted(r[1] for r in only) == ["load_failed", "run_failed", "run_failed"]


def test_minute_windows_and_durations():
    since, until = monitoring.minute_window(600, now_s=1_795_000_030)
    assert until % 60 == 0 and until - since == 600 and since <= 1_795_000_030 - 540 < until
    assert monitoring.parse_duration("10m") == 600 and monitoring.parse_duration("1h") == 3600
    assert monitoring.parse_duration(90) == 90
    with pytest.raises(ValueError, match="not a duration"):
        monitoring.parse_duration("soon")


def test_drift_alerts_repeat_only_after_the_window_and_forget_what_ended():
    alerts = DriftAlerts(repeat_s=600)
    row = ("det:1", "person", 60, 2.0, 60, 0.1, 0.05)
    assert alerts.update([row], 0) == ([row], [])
    assert alerts.update([row], 300) == ([], [])
    assert alerts.update([row], 600) == ([row], [])
    assert alerts.update([], 700) == ([], [("det:1", "person")])
    event = drift_event(row, RegistrySettings(), "w:1")
    assert event.event == "drift" and event.value == 0.05 and "person: 0.100 detections per frame" in event.detail
