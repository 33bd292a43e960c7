"""Gateway health: the clock offset (SNTP against a local fake server, the broker's append time),
heartbeats from counters, their contract and row, and the silent-cameras query on a current
ClickHouse engine (chdb)."""

import socket
import time

import pytest

from aimass import contracts, reports
from aimass.clickhouse.schema import COLUMNS
from aimass.contracts import ContractError, Heartbeat
from aimass_gateway.clock import (ClockError, ClockMonitor, broker_sample, ntp_offset, parse_reference, sntp_query,
                                  _from_ntp, _to_ntp)
from aimass_gateway.health import CameraStats, GatewayStats, HeartbeatMaker
from aimass_sink import rows as R
from chdb_engine import Chdb
from fake_ntp import FakeNtp


def test_ntp_arithmetic():
    # server 2 s ahead, 10 ms each way, 5 ms in the server
    offset, rtt = ntp_offset(100.0, 102.010, 102.015, 100.025)
    assert offset == pytest.approx(2.0) and rtt == pytest.approx(0.020)
    assert _from_ntp(_to_ntp(1_795_000_000.25)) == pytest.approx(1_795_000_000.25, abs=1e-6)
    assert parse_reference("ntp://ntp.site.lan") == ("ntp", "ntp.site.lan", 123)
    assert parse_reference("broker")[0] == "broker" and parse_reference("")[0] == "none"
    with pytest.raises(ClockError):
        parse_reference("http://x")


def test_sntp_against_a_skewed_local_server():
    srv = FakeNtp(skew_s=1.5, delay_s=0.02)
    try:
        s = sntp_query("127.0.0.1", srv.port, timeout_s=2)
        assert s.offset_ms == pytest.approx(1500, abs=25) and 0 <= s.rtt_ms < 200
        assert s.source == f"ntp:127.0.0.1:{srv.port}"
        mon = ClockMonitor(f"ntp://127.0.0.1:{srv.port}")
        assert mon.measure_ntp().offset_ms == pytest.approx(1500, abs=25) and mon.last_error == ""
    finally:
        srv.close()
    kod = FakeNtp(skew_s=0, stratum=0)  # "kiss o' death": no time from this server
    try:
        with pytest.raises(ClockError, match="stratum 0"):
            sntp_query("127.0.0.1", kod.port, timeout_s=2)
    finally:
        kod.close()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        mon = ClockMonitor(f"ntp://127.0.0.1:{silent.getsockname()[1]}")
        assert mon.measure_ntp(timeout_s=0.2) is None and "no answer" in mon.last_error


def test_broker_append_time():
    assert broker_sample(1000.0, 1010.0, 1000, 0) is None  # CreateTime: the broker only echoes our clock
    s = broker_sample(1000.0, 1010.0, 1805, 1)  # LogAppendTime
    assert (s.offset_ms, s.rtt_ms, s.source) == (800.0, 10.0, "broker")
    mon = ClockMonitor("broker")
    mon.observe_broker(1000.0, 1010.0, 1805, 1)
    mon.observe_broker(2000.0, 2500.0, 9999, 1)  # a loose round trip does not replace a tight one
    assert mon.sample.offset_ms == 800.0


def test_heartbeats_from_counters_and_their_row():
    hb = HeartbeatMaker("hq", "gw-1", started_ms=1_000_000.0, interval_s=10)
    cam = CameraStats("cam-a", "rtsp://u:***@h/s", frames_read=50, frames_sent=20, frames_skipped=30,
                      bytes_sent=400_000, last_frame_ms=1_009_900.0, errors=2, reconnects=1, last_error="refused")
    h1 = hb.camera(cam, 1_010_000.0)
    assert (h1.fps, h1.read_fps, h1.status) == (2.0, 5.0, "ok")
    cam.frames_read, cam.frames_sent = 60, 22
    h2 = hb.camera(cam, 1_015_000.0)
    assert (h2.fps, h2.read_fps) == (0.4, 2.0)  # over the last interval only
    g = hb.gateway([cam], GatewayStats(readings_sent=7, readings_refused=1), 1_015_000.0, spooling=True,
                   spool_messages=12, spool_bytes=3456, spool_dropped=3, send_errors=0)
    assert (g.camera_id, g.status, g.frames_sent, g.spool_messages, g.readings_refused) == ("", "spooling", 22, 12, 1)
    back = contracts.decode(contracts.encode(h2), Heartbeat)
    assert back == h2
    row = dict(zip(COLUMNS["heartbeats"], R.heartbeat_row(h2, 1_015_100.0)))
    assert (row["at"], row["camera_id"], row["frames_skipped"], row["last_error"], row["sink_in_ms"]) == (
        1015, "cam-a", 30, "refused", 1_015_100.0)
    with pytest.raises(ContractError, match="gateway_id"):
        contracts.decode(contracts.encode(Heartbeat(site_id="s", gateway_id="", at_ms=1.0)), Heartbeat)
    with pytest.raises(ContractError, match="fps"):
        contracts.decode(contracts.encode(Heartbeat(site_id="s", gateway_id="g", at_ms=1.0, fps=float("inf"))), Heartbeat)


pytest.importorskip("chdb.session")


def test_silent_cameras_on_a_current_clickhouse(tmp_path):
    from aimass.clickhouse.migrate import migrate
    sess = Chdb(tmp_path / "chdb")
    execute = sess.execute

    try:
        migrate(execute, "aimass", (26, 9))
        now = time.time() * 1000
        day = time.strftime("%Y-%m-%d", time.gmtime(now / 1000))

        def beat(cam, at, last_frame, status="ok", err=""):
            h = Heartbeat(site_id="hq", gateway_id="gw-1", camera_id=cam, at_ms=at, last_frame_ms=last_frame,
                          status=status, last_error=err)
            vals = ", ".join(repr(v) if not hasattr(v, "isoformat") else f"'{v.isoformat()}'"
                             for v in R.heartbeat_row(h, at))
            execute(f"INSERT INTO aimass.heartbeats ({', '.join(COLUMNS['heartbeats'])}) VALUES ({vals})")

        beat("cam-live", now - 1000, now - 1200)  # fine
        beat("cam-cut", now - 1000, now - 90_000, "reconnecting", "connection refused")  # gateway up, camera not
        beat("cam-gone", now - 120_000, now - 120_500)  # its gateway stopped talking
        beat("", now - 1000, now - 1200)  # the gateway's own heartbeat is not a camera
        # a camera without heartbeats (an older gateway), known from its frames only
        execute("INSERT INTO aimass.frames (date, captured, captured_ms, site_id, camera_id, seq) VALUES "
                f"('{day}', {int(now / 1000) - 300}, {now - 300_000}, 'hq', 'cam-old', 1), "
                f"('{day}', {int(now / 1000) - 1}, {now - 1000}, 'hq', 'cam-live', 1)")
        execute("USE aimass")
        got = execute(reports.silent_cameras(60, now_ms=now))
        assert [(r[1], r[2], r[3], r[5]) for r in got] == [
            ("cam-cut", "gw-1", "reconnecting", "no frames"), ("cam-gone", "gw-1", "ok", "no heartbeat"),
            ("cam-old", "", "", "no frames")]
        assert got[0][4] == "connection refused" and got[0][6] == pytest.approx(90, abs=0.2)
        assert execute(reports.silent_cameras(600, now_ms=now)) == []
        execute(reports.silent_cameras(60))  # the server's own clock: the SQL runs
    finally:
        sess.close()
