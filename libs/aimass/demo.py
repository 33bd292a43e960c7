"""`aimass demo`: the whole pipeline on the local stack, with a live table and a SQL report.

Starts the broker and ClickHouse, the three workers as child processes, runs the demo site's
simulated cameras and sensors for ``duration`` seconds, waits until every frame sent is in
ClickHouse, prints the report and stops everything it started.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from aimass import reports, runner, stack
from aimass.clickhouse.client import connect, query_rows
from aimass.settings import GatewaySettings
from aimass.site import load_site


class LiveStats:
    """Polls ClickHouse once a second in a thread; the table reads the latest snapshot."""

    def __init__(self, url: str, counters):
        self.url = url
        self.counters = counters  # the simulator's GatewayCounters: what was sent
        self.snapshot: dict = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        client = connect(self.url)
        try:
            while not self._stop.is_set():
                try:
                    self.snapshot = self.poll(client)
                except Exception as exc:  # the table shows it; the demo goes on
                    self.snapshot = {**self.snapshot, "error": str(exc)[:200]}
                self._stop.wait(1.0)
        finally:
            client.disconnect()

    def poll_once(self) -> None:
        client = connect(self.url)
        try:
            self.snapshot = self.poll(client)
        finally:
            client.disconnect()

    def poll(self, client) -> dict:
        _, rows = query_rows(client, "SELECT count(), sum(objects), "
                                     "countIf(sink_in_ms > toFloat64(now()) * 1000 - 5000) FROM frames")
        frames, objects, recent = rows[0]
        _, vrows = query_rows(client, "SELECT countIf(event = 'start') FROM violations")
        _, lat = query_rows(client, reports.latency_by_stage("captured_ms > toFloat64(now()) * 1000 - 10000"))
        return {"frames": frames, "objects": objects or 0, "fps": recent / 5.0, "violations": vrows[0][0],
                "latency": lat}

    def __rich__(self) -> Group:
        return self.render()

    def render(self) -> Group:
        s = self.snapshot
        sent = self.counters.frames
        head = Table(title="AI Mass demo — live", title_justify="left", header_style="bold")
        # Short headers: the table must fit an 80-column terminal.
        for c in ("frames sent", "stored", "fps (5 s)", "lag", "objects", "incidents", "readings"):
            head.add_column(c, justify="right")
        head.add_row(str(sent), str(s.get("frames", 0)), f"{s.get('fps', 0):.1f}",
                     str(max(0, sent - s.get("frames", 0))), str(s.get("objects", 0)), str(s.get("violations", 0)),
                     str(self.counters.readings))
        lat = Table(title="latency per stage, last 10 s (ms)", title_justify="left", header_style="bold")
        for c in ("stage", "n", "p50", "p95", "p99"):
            lat.add_column(c, justify="right" if c != "stage" else "left")
        for row in s.get("latency", []):
            lat.add_row(*(str(v) for v in row))
        parts = [head, lat]
        if s.get("error"):
            parts.append(f"[yellow]ClickHouse poll failed: {s['error']}[/yellow]")
        return Group(*parts)


def _wait_drained(url: str, frames: int, readings: int, deadline_s: float) -> int:
    """Wait until ClickHouse holds every frame and reading sent; returns the frames it holds."""
    client = connect(url)
    try:
        end = time.monotonic() + deadline_s
        n = 0
        while time.monotonic() < end:
            n, r = query_rows(client, "SELECT (SELECT count() FROM frames FINAL), "
                                      "(SELECT count() FROM sensor_readings FINAL)")[1][0]
            if n >= frames and r >= readings:
                break
            time.sleep(0.5)
        return n
    finally:
        client.disconnect()


def print_report(url: str, console: Console) -> None:
    from aimass.cli import print_table
    client = connect(url)
    try:
        for title, sql in (("Violations by rule and camera/sensor", reports.VIOLATIONS_BY_RULE_AND_CAMERA),
                           ("Detections by class", reports.DETECTIONS_BY_CLASS),
                           ("Frames by camera", reports.FRAMES_BY_CAMERA),
                           ("Latency by stage (ms), whole run", reports.latency_by_stage()),
                           ("Dead letters", reports.DEADLETTERS_BY_REASON)):
            cols, rows = query_rows(client, sql)
            print_table(cols, rows, title=title)
    finally:
        client.disconnect()


def run_demo(duration: float, state_dir: Path, console: Console) -> int:
    state_dir = Path(state_dir).resolve()
    settings = GatewaySettings()
    site = load_site(settings.site_file)
    console.print(f"[bold]AI Mass demo[/bold]: site {site.site.id}, {len(site.cameras)} cameras, "
                  f"{len(site.sensors)} sensors, {len(site.rules)} rules, {duration:.0f} s")
    console.print("starting the broker and ClickHouse …")
    # Each demo starts empty: the broker keeps nothing across runs, so old ClickHouse rows would
    # only mix two runs in the report. (A stack from `aimass stack up` keeps its data.)
    stack.down(state_dir)
    shutil.rmtree(state_dir / "clickhouse", ignore_errors=True)
    info = stack.up(state_dir)
    procs = []
    try:
        logs = state_dir / "logs"
        ready = state_dir / "ready"
        shutil.rmtree(ready, ignore_errors=True)
        logs.mkdir(parents=True, exist_ok=True)
        env = {**info.env(), "AIMASS_READY_DIR": str(ready), "AIMASS_SITE_FILE": str(settings.site_file)}
        console.print(f"starting workers (logs in {logs}) …")
        procs = [runner.spawn(n, logs / f"{n}.log", env) for n in runner.STREAM_WORKERS]
        runner.wait_ready(ready, runner.STREAM_WORKERS, procs)

        from aimass_gateway.producer import GatewayProducer
        from aimass_gateway.simulate import simulate
        # The demo's gateway spools under the demo's state dir, emptied here: an interrupted demo's
        # leftovers must not reach the next one's fresh broker.
        shutil.rmtree(state_dir / "gateway-spool", ignore_errors=True)
        gw_settings = info.settings(GatewaySettings, site_file=settings.site_file, spool_dir=state_dir / "gateway-spool")
        gw = GatewayProducer(gw_settings, site.site.id)
        live = LiveStats(info.clickhouse_url, gw.counters)
        live.start()
        # Live re-renders ``live`` (its __rich__) twice a second from the latest snapshot.
        with Live(live, console=console, refresh_per_second=2, transient=False):
            asyncio.run(simulate(site, gw_settings, duration, producer=gw))
            console.print("simulation done; waiting for the pipeline to drain …")
            n = _wait_drained(info.clickhouse_url, gw.counters.frames, gw.counters.readings, 60.0)
            live.stop()
            live.poll_once()  # so the last table shows the drained state
        console.print(f"{n} of {gw.counters.frames} frames sent are in ClickHouse; "
                      f"{gw.counters.readings} sensor readings sent")
        print_report(info.clickhouse_url, console)
        console.print(
            "\nQuery further while a stack runs (`aimass stack up`, then `eval \"$(aimass stack env)\"`):\n"
            "  aimass sql \"SELECT camera_id, count() FROM detections FINAL WHERE label = 'person' GROUP BY camera_id\"\n"
            "  aimass sql \"SELECT * FROM violations FINAL ORDER BY at_ms DESC LIMIT 10\"\n"
            "Tables: frames, detections, violations, sensor_readings, deadletters; their columns are described "
            "in libs/aimass/clickhouse/migrations/001_core.sql.")
        return 0 if n >= gw.counters.frames else 1
    finally:
        runner.stop(procs)
        stack.down(state_dir)
        console.print("stopped the workers, the broker and ClickHouse")
