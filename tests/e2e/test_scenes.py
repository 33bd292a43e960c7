"""End to end: scripted scenes through the gateway simulator, the real detector, the rules and the
sink, checked by SQL against ClickHouse.

One run of tests/e2e/site.yaml holds three scenes at once (cheaper than three runs):
- cam-in: a person walks into the restricted zone, stays ~5 s, leaves -> exactly one intrusion;
- cam-out: the same walk stops short of the zone -> no violation;
- temp-1: the temperature crosses 40 °C once -> exactly one sensor violation.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from aimass import contracts
from aimass.clickhouse.client import query_rows
from aimass.settings import GatewaySettings
from aimass.site import load_site
from aimass_gateway.simulate import simulate
from conftest import wait_until

pytestmark = pytest.mark.e2e
SITE = Path(__file__).with_name("site.yaml")
SCENE_S = 13.0


@pytest.fixture(scope="module")
def scene_run(local_stack, tmp_path_factory):
    """Run the scenes once for the module; yields (namespace, client, t_start_ms, t_end_ms, sent)."""
    from aimass import stack
    from aimass.clickhouse.client import connect
    from conftest import Namespace, Workers

    ns = Namespace(local_stack)
    stack.prepare(ns.settings())
    tmp = tmp_path_factory.mktemp("e2e")
    w = Workers(tmp, {**ns.env, "AIMASS_SITE_FILE": str(SITE)})
    client = connect(ns.clickhouse_url)
    try:
        w.start("detector", "rules", "sink")
        t0 = contracts.now_ms()
        gw = asyncio.run(simulate(load_site(SITE), ns.settings(GatewaySettings), SCENE_S))
        t1 = contracts.now_ms()
        sent = gw.counters.frames
        assert sent >= 2 * 5 * SCENE_S * 0.9, f"the simulator sent only {sent} frames"
        wait_until(lambda: query_rows(client, "SELECT count() FROM frames FINAL")[1][0][0] >= sent, 90,
                   f"{sent} frames in ClickHouse")
        wait_until(lambda: query_rows(client, "SELECT count() FROM sensor_readings FINAL")[1][0][0]
                   >= gw.counters.readings, 30, "all sensor readings in ClickHouse")
        # The rules close cam-in's incident clear_frames after the person left (t≈12 s); its end
        # event is the last violation the scenes produce.
        wait_until(lambda: query_rows(client, "SELECT count() FROM violations FINAL WHERE rule_id = "
                                              "'intrusion-cam-in' AND event = 'end'")[1][0][0] >= 1, 30,
                   "the end of cam-in's intrusion", )
        yield ns, client, t0, t1, w
    finally:
        w.stop()
        client.disconnect()


def _rows(client, sql):
    return query_rows(client, sql)[1]


def test_person_entering_the_zone_is_one_violation(scene_run):
    ns, client, t0, t1, w = scene_run
    rows = _rows(client, "SELECT camera_id, zone_id, rule_type, label, at_ms, started_ms FROM violations FINAL "
                         "WHERE rule_id = 'intrusion-cam-in' AND event = 'start'")
    assert len(rows) == 1, (rows, w.logs("rules"))
    camera, zone, rule_type, label, at_ms, started_ms = rows[0]
    assert (camera, zone, rule_type, label) == ("cam-in", "restricted", "zone_intrusion", "person")
    # The person reaches the zone edge about 2.4 s in and leaves it about 10 s in.
    assert t0 + 1500 <= started_ms <= at_ms <= t0 + 9000, (t0, started_ms, at_ms)


def test_person_staying_outside_is_no_violation(scene_run):
    ns, client, *_ = scene_run
    assert _rows(client, "SELECT count() FROM violations FINAL WHERE camera_id = 'cam-out'") == [(0,)]
    # ...although the detector did see the person on that camera:
    persons = _rows(client, "SELECT uniqExact(seq) FROM detections FINAL WHERE camera_id = 'cam-out' AND label = 'person'")
    assert persons[0][0] >= 30


def test_sensor_crossing_its_threshold_is_one_violation(scene_run):
    ns, client, t0, t1, w = scene_run
    rows = _rows(client, "SELECT sensor_id, rule_type, value, at_ms FROM violations FINAL "
                         "WHERE rule_id = 'temp-high' AND event = 'start'")
    assert len(rows) == 1, rows
    sensor, rule_type, value, at_ms = rows[0]
    assert (sensor, rule_type) == ("temp-1", "sensor_threshold")
    assert value > 40
    assert t0 + 4000 <= at_ms <= t0 + 6500


def test_every_frame_has_stage_timestamps_in_order(scene_run):
    ns, client, *_ = scene_run
    rows = _rows(client, "SELECT countIf(NOT (captured_ms <= sent_ms AND sent_ms <= detector_in_ms AND "
                         "detector_in_ms <= decoded_ms AND decoded_ms <= inferred_ms AND inferred_ms <= detector_out_ms "
                         "AND detector_out_ms <= sink_in_ms)), count() FROM frames FINAL")
    bad, total = rows[0]
    assert total > 0 and bad == 0


def test_demo_report_queries_run_on_the_scene_data(scene_run):
    from aimass import reports
    ns, client, *_ = scene_run
    stages = _rows(client, reports.latency_by_stage())
    assert [s[0] for s in stages] == [name for name, _ in reports.STAGES] + ["capture→violation (rules)"]
    assert all(s[1] > 0 for s in stages)
    for sql in (reports.VIOLATIONS_BY_RULE_AND_CAMERA, reports.DETECTIONS_BY_CLASS, reports.FRAMES_BY_CAMERA):
        assert _rows(client, sql), sql
    assert _rows(client, reports.DEADLETTERS_BY_REASON) == []


def test_a_walking_person_keeps_one_track_id(scene_run):
    ns, client, *_ = scene_run
    # cam-out's walker is seen in most frames: one dominant track id carries most of its detections.
    rows = _rows(client, "SELECT track_id, count() AS n FROM detections FINAL WHERE camera_id = 'cam-out' "
                         "AND label = 'person' GROUP BY track_id ORDER BY n DESC")
    total = sum(n for _, n in rows)
    assert rows[0][0] > 0 and rows[0][1] >= 0.8 * total, rows
    # ...and the intrusion names the track that caused it.
    [(track,)] = _rows(client, "SELECT track_id FROM violations FINAL WHERE rule_id = 'intrusion-cam-in' AND event = 'start'")
    assert track > 0
