"""`aimass gateway run` on the real broker and ClickHouse: an HTTP MJPEG camera served by the test is
cut and restored (the gateway reconnects by itself and frames keep arriving on Kafka; its heartbeats
reach ClickHouse and the silent-cameras query lists the camera while it is cut), and sensor readings
from a real MQTT broker (Debian's mosquitto) and HTTP pushes arrive converted, bad ones dead-lettered.

RTSP is not served here: no package on PyPI or Debian gives this machine a small RTSP server that works
offline without a stack of GStreamer/FFmpeg packages (Debian's ffmpeg cannot serve RTSP alone;
mediamtx is not packaged). RTSP URLs go through OpenCV's FFmpeg backend with open/read timeouts
(tests/unit/test_gateway_sources.py: a hung and a refusing port), and the reconnect loop they run in
is the same Grabber this test drives over HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from typer.testing import CliRunner

from aimass import contracts, reports, stack
from aimass.cli import app
from aimass.clickhouse.client import query_rows
from aimass.processes import free_port, stop_pid
from aimass.settings import GatewaySettings
from aimass.site import Camera
from aimass_gateway.config import parse_gateway_file
from aimass_gateway.fleet import Gateway
from aimass_gateway.producer import encode_jpeg
from aimass_gateway.scene import SceneRenderer
from conftest import read_topic, wait_until
from fake_ntp import FakeNtp

pytestmark = pytest.mark.integration


# ------------------------------------------------------------------ an MJPEG camera the test can cut
class MjpegCamera:
    """An HTTP MJPEG camera on a fixed port (multipart/x-mixed-replace, 10 fps) showing a person walking
    across the demo yard. ``cut()`` drops every connection and stops listening; ``restore()`` listens again."""

    def __init__(self):
        cam = Camera(id="cam-http", width=256, height=192, scene={"background": "yard", "actors": [
            {"id": "p", "asset": "person_1", "label": "person", "height": 0.5, "repeat_s": 4,
             "path": [{"t": 0, "x": 0.1, "y": 0.9}, {"t": 4, "x": 0.9, "y": 0.9}]}]})
        r = SceneRenderer(cam)
        self.jpegs = [encode_jpeg(r.render(k / 10)[0], 70) for k in range(40)]
        self.port = free_port()
        self.served = 0
        self._cut = threading.Event()
        self.httpd: ThreadingHTTPServer | None = None

    def restore(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                k = 0
                try:
                    while not owner._cut.is_set():
                        jpeg = owner.jpegs[k % len(owner.jpegs)]
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                                         % len(jpeg) + jpeg + b"\r\n")
                        self.wfile.flush()
                        owner.served += 1
                        k += 1
                        time.sleep(0.1)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self._cut.clear()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def cut(self) -> None:
        self._cut.set()
        self.httpd.shutdown()
        self.httpd.server_close()


class GatewayThread:
    """A Gateway running in its own event loop in a thread, as `aimass gateway run` runs it."""

    def __init__(self, gateway: Gateway):
        self.gateway = gateway
        self.error: BaseException | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._main, daemon=True)

    def _main(self):
        async def run():
            self.loop = asyncio.get_running_loop()
            await self.gateway.run()
        try:
            asyncio.run(run())
        except BaseException as exc:  # shown by stop()
            self.error = exc

    def start(self) -> "GatewayThread":
        self.thread.start()
        wait_until(lambda: self.loop is not None and self.gateway.gw is not None or self.error, 20, "the gateway started")
        assert self.error is None, self.error
        return self

    def stop(self) -> None:
        if self.loop is not None and self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.gateway.stop_event.set)
        self.thread.join(30)
        assert not self.thread.is_alive(), "the gateway did not stop"
        assert self.error is None, self.error


def _frame_seqs(ns) -> list[int]:
    return [contracts.decode(r.value, contracts.Frame).seq for r in asyncio.run(read_topic(ns, contracts.TOPIC_FRAMES))]


def test_an_mjpeg_camera_that_drops_comes_back_and_went_silent_meanwhile(ns, ns_ch, workers, tmp_path):
    workers.start("sink")
    cam = MjpegCamera()
    cam.restore()
    cfg = parse_gateway_file(f"""
site_id: site-f
cameras:
  - id: cam-http
    source: http://127.0.0.1:{cam.port}/video.mjpg
    fps: 5
    reconnect: {{initial_s: 0.2, max_s: 0.5, timeout_s: 2}}
""", "gw.yaml")
    ntp = FakeNtp(skew_s=0.75)  # the site's NTP server, 750 ms ahead of this machine's clock
    settings = ns.settings(GatewaySettings, gateway_id="gw-f", heartbeat_interval_s=0.5, spool_dir=tmp_path / "spool",
                           clock_reference=f"ntp://127.0.0.1:{ntp.port}")
    g = GatewayThread(Gateway(settings, cfg)).start()
    stats = lambda: g.gateway.cameras[0].stats  # noqa: E731
    silent = lambda: [r for r in query_rows(ns_ch, reports.silent_cameras(1.5))[1] if r[1] == "cam-http"]  # noqa: E731
    try:
        wait_until(lambda: len(_frame_seqs(ns)) >= 5, 20, "frames from the MJPEG camera on Kafka")
        try:
            wait_until(lambda: query_rows(ns_ch, "SELECT count() FROM heartbeats WHERE camera_id = 'cam-http' "
                                                 "AND status = 'ok' AND frames_sent > 0")[1][0][0] > 0,
                       60, "the camera's heartbeats in ClickHouse")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{workers.logs('sink')}") from None
        assert silent() == []

        cam.cut()
        wait_until(lambda: stats().state == "reconnecting" and stats().errors >= 2, 15,
                   "the gateway noticing the cut and retrying")
        cut_seqs = _frame_seqs(ns)
        rows = wait_until(silent, 20, "the silent-cameras query listing the cut camera")
        (site_id, camera_id, gateway_id, status, last_error, reason, silent_s, *_), = rows
        assert (site_id, gateway_id, status, reason) == ("site-f", "gw-f", "reconnecting", "no frames")
        assert "cannot reach camera" in last_error and silent_s >= 1.5
        cli = CliRunner().invoke(app, ["gateway", "silent", "--after", "1.5"],
                                 env={**ns.env, "COLUMNS": "200"})
        assert cli.exit_code == 3 and "cam-http" in cli.output and "no frames" in cli.output, cli.output

        cam.restore()  # the same URL answers again: the gateway reconnects by itself
        wait_until(lambda: len(_frame_seqs(ns)) >= len(cut_seqs) + 5, 20, "frames again after the restore")
        assert stats().reconnects >= 1 and stats().state in ("ok", "idle")
        wait_until(lambda: silent() == [], 20, "the camera no longer silent")
        seqs = _frame_seqs(ns)
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)  # one camera's frames in order, once each
    finally:
        g.stop()
        ntp.close()
        if not cam._cut.is_set():
            cam.cut()
    # The gateway's own heartbeats: its clock offset as measured, capture times left as they were.
    gw_rows = wait_until(lambda: query_rows(ns_ch, "SELECT status, spool_messages, clock_source, clock_offset_ms, "
                                                   "frames_sent FROM heartbeats FINAL WHERE camera_id = '' "
                                                   "AND clock_source != '' ORDER BY at_ms DESC LIMIT 1")[1],
                         20, "the gateway's heartbeat with its clock offset")
    status, spooled, source, offset_ms, sent = gw_rows[0]
    assert (status, spooled, source) == ("ok", 0, f"ntp:127.0.0.1:{ntp.port}") and sent > 0
    assert offset_ms == pytest.approx(750, abs=50)


# ------------------------------------------------------------------ MQTT and HTTP push
def _mosquitto_binary() -> str | None:
    found = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "install", "-y", "-qq", "mosquitto"], ["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "mosquitto"]):
        if subprocess.run(cmd, env=env, capture_output=True, timeout=300).returncode == 0 and cmd[1] == "install":
            break
    return shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)


@pytest.fixture
def mosquitto(tmp_path):
    """Debian's mosquitto on a free loopback port (installed here when missing and we are root)."""
    exe = _mosquitto_binary()
    if exe is None:
        pytest.skip("no MQTT broker: install Debian's mosquitto (`apt-get install mosquitto`, or `make mosquitto` as root)")
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    with open(tmp_path / "mosquitto.log", "ab") as log:
        proc = subprocess.Popen([exe, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        stack.wait_for_port("127.0.0.1", port, 10, proc)
        yield port
    finally:
        stop_pid(proc.pid)


def test_mqtt_and_http_readings_arrive_converted_and_bad_ones_are_dead_lettered(ns, mosquitto, tmp_path):
    import paho.mqtt.client as mqtt

    http_port = free_port()
    cfg = parse_gateway_file("""
site_id: site-m
sensors:
  - {id: temp-f, unit: C, input_unit: F, min: -20, max: 120, mqtt: {topic: lab/temp}}
  - {id: door-1, mqtt: {topic: lab/door}}
  - {id: hum-1, unit: "%", mqtt: {topic: lab/env, field: humidity}}
""", "gw.yaml")
    settings = ns.settings(GatewaySettings, gateway_id="gw-m", mqtt_url=f"mqtt://127.0.0.1:{mosquitto}",
                           http_push_port=http_port, spool_dir=tmp_path / "spool")
    g = GatewayThread(Gateway(settings, cfg)).start()
    try:
        wait_until(lambda: g.gateway.mqtt is not None and g.gateway.mqtt.subscribed.is_set(), 15,
                   "the gateway subscribed on the MQTT broker")
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-publisher")
        pub.connect("127.0.0.1", mosquitto)
        pub.loop_start()
        for topic, payload in (("lab/temp", b"212"), ("lab/temp", b"98.6"), ("lab/temp", b"500"),
                               ("lab/door", b"open"), ("lab/env", b'{"humidity": 41.5, "t": 20}'),
                               ("lab/env", b"garbage"), ("lab/other", b"1")):
            pub.publish(topic, payload, qos=1).wait_for_publish(5)
        pub.loop_stop()
        pub.disconnect()
        wait_until(lambda: g.gateway.stats.readings_sent + g.gateway.stats.readings_refused >= 6, 15,
                   "the MQTT messages handled")

        req = urllib.request.Request(f"http://127.0.0.1:{g.gateway.http_port}/v1/readings", method="POST",
                                     data=json.dumps([{"sensor_id": "temp-f", "value": 32, "unit": "F"},
                                                      {"sensor_id": "nobody", "value": 1}]).encode())
        answer = json.loads(urllib.request.urlopen(req, timeout=5).read())
        assert answer["accepted"] == 1 and [r["reason"] for r in answer["refused"]] == ["unknown_sensor"]
        status = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{g.gateway.http_port}/v1/status", timeout=5).read())
        assert (status["gateway_id"], status["readings_sent"], status["readings_refused"]) == ("gw-m", 5, 3), status
    finally:
        g.stop()

    readings = [contracts.decode(m.value, contracts.SensorReading)
                for m in asyncio.run(read_topic(ns, contracts.TOPIC_SENSORS))]
    by = {}
    for r in sorted(readings, key=lambda r: (r.sensor_id, r.seq)):
        by.setdefault(r.sensor_id, []).append((round(r.value, 6), r.unit))
    assert by == {"temp-f": [(100.0, "C"), (37.0, "C"), (0.0, "C")], "door-1": [(1.0, "")], "hum-1": [(41.5, "%")]}
    assert all(r.gateway_id == "gw-m" and r.site_id == "site-m" for r in readings)
    dead = [contracts.decode(r.value, contracts.DeadLetter) for r in asyncio.run(read_topic(ns, contracts.TOPIC_DEADLETTER))]
    assert sorted((d.reason, d.original, d.source_topic) for d in dead) == [
        ("bad_payload", b"garbage", "mqtt:lab/env"), ("out_of_range", b"500", "mqtt:lab/temp"),
        ("unknown_sensor", b'{"sensor_id": "nobody", "value": 1}', "http")]
