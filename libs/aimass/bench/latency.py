"""Latency: cameras at real-time pace (half of the detector's measured capacity) through the whole
stack (detector, rules, sink). Per stage from the stamps each frame carries into ClickHouse; capture ->
violation as the violations topic delivers it to a consumer here; capture -> row as a poller here
first sees the frame's row in ClickHouse (polled every 100 ms, so up to that much is the poller's).

The percentiles are of the frames captured after the first ``warmup_s``: the three workers start just
before the cameras, and their first batches run cold beside the others' start-up (first fetches,
first calls, caches): over the first ~2 s capture -> detections took up to 0.8 s, then p99 0.13-0.14 s,
and those few frames were the whole p99. The warm-up frames are reported apart, not dropped."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass

from aimass import contracts
from aimass.bench import probe, workload
from aimass.bench.detector import DetectorOptions
from aimass.bench.fleet import Fleet, Namespace
from aimass.clickhouse.client import connect
from aimass.contracts import Violation
from aimass.site import Site

STAGES = [  # (name, from stamp column, to stamp column) in the frames table
    ("gateway -> detector (Kafka)", "sent_ms", "detector_in_ms"),
    ("decode + model wait", "detector_in_ms", "decoded_ms"),
    ("inference (batch)", "decoded_ms", "inferred_ms"),
    ("track + produce", "inferred_ms", "detector_out_ms"),
    ("detector -> sink (Kafka + batch)", "detector_out_ms", "sink_in_ms"),
    ("capture -> detections", "captured_ms", "detector_out_ms"),
]


@dataclass
class LatencyOptions:
    cameras: int = 4
    seconds: float = 30.0
    fps_per_camera: float | None = None  # None: half the capacity, spread over the cameras
    detector: DetectorOptions | None = None  # the run's providers, threads, sessions and batch (None: defaults)
    warmup_s: float = 3.0  # frames captured this soon after the cameras start are reported apart


class _RowWatch:
    """When each frame's row is first seen in ClickHouse (capture -> row)."""

    def __init__(self, ns: Namespace, interval_s: float = 0.1):
        self.url, self.interval_s = ns.clickhouse_url, interval_s
        self.latencies: list[tuple[float, float]] = []  # (captured ms, capture -> row ms)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "_RowWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        client = connect(self.url)
        seen: set[tuple[str, int]] = set()
        since = contracts.now_ms()
        try:
            while not self._stop.wait(self.interval_s):
                rows = client.execute(f"SELECT camera_id, seq, captured_ms FROM frames WHERE captured_ms >= {since}")
                now = contracts.now_ms()
                for cam, seq, captured in rows:
                    if (cam, seq) not in seen:
                        seen.add((cam, seq))
                        self.latencies.append((captured, now - captured))
        finally:
            client.disconnect()


def stage_latencies(ns: Namespace, steady_from_ms: float) -> tuple[dict[str, dict[str, float]], list[float]]:
    """Percentiles per stage of the frames captured from ``steady_from_ms`` on, and the capture ->
    detections latencies of those before it (the warm-up)."""
    client = connect(ns.clickhouse_url)
    try:
        cols = sorted({c for _, a, b in STAGES for c in (a, b)})
        rows = client.execute(f"SELECT {', '.join(cols)} FROM frames FINAL")
    finally:
        client.disconnect()
    idx = {c: i for i, c in enumerate(cols)}
    captured = idx["captured_ms"]
    steady = [r for r in rows if r[captured] >= steady_from_ms]
    out = {}
    for name, a, b in STAGES:
        values = [r[idx[b]] - r[idx[a]] for r in steady if r[idx[a]] > 0 and r[idx[b]] > 0]
        out[name] = probe.percentiles(values)
    warmup = [r[idx["detector_out_ms"]] - r[captured] for r in rows if r[captured] < steady_from_ms]
    return out, warmup


def run(fleet: Fleet, opts: LatencyOptions, capacity_fps: float, site: Site | None = None) -> dict:
    site = site or fleet.site
    cams = workload.cameras(site, opts.cameras)
    fps = opts.fps_per_camera or max(0.2, capacity_fps / 2 / opts.cameras)
    frames = workload.render(cams, 100)  # 20 s of each scene: its scripted incidents happen
    ns = fleet.namespace("latency", site=site.model_copy(update={"cameras": cams}))
    for kind in ("sink", "rules"):
        ns.start(kind)
    ns.start("detector", (opts.detector or DetectorOptions()).worker_env())
    violations: list[tuple[float, float]] = []  # (captured ms, capture -> violation ms)

    def on_violation(t: float, value: bytes) -> None:
        v = contracts.decode(value, Violation)
        if v.source_seq >= 0 and v.stamps.get("captured"):  # raised by a frame, not a clock tick
            violations.append((v.stamps["captured"], t - v.stamps["captured"]))

    steady_from = contracts.now_ms() + opts.warmup_s * 1000
    with probe.TopicWatch(ns.settings(), contracts.TOPIC_VIOLATIONS, on_violation), _RowWatch(ns) as rows:
        sent = asyncio.run(workload.paced_cameras(ns.settings(), frames, fps, opts.seconds, site.site.id)).sent
        end = time.monotonic() + 30
        while len(rows.latencies) < sent and time.monotonic() < end:
            time.sleep(0.2)  # the poller's own pace; bounded by the deadline
    detector = next(w for w in ns.workers if w.name.startswith("detector"))
    rss = probe.rss_mb(detector.proc.pid)
    ns.stop()
    stages, warmup = stage_latencies(ns, steady_from)

    def steady(pairs: list[tuple[float, float]]) -> dict[str, float]:
        values = [lat for captured, lat in pairs if captured >= steady_from]
        return {**probe.percentiles(values), "n": len(values)}
    return {"cameras": opts.cameras, "fps_per_camera": round(fps, 2), "offered_fps": round(fps * opts.cameras, 1),
            "capacity_fps": round(capacity_fps, 1), "seconds": opts.seconds, "frames_sent": sent,
            "frames_in_clickhouse": len(rows.latencies), "detector_rss_mb": round(rss, 1), "warmup_s": opts.warmup_s,
            "stages_ms": stages, "capture_to_violation_ms": steady(violations), "capture_to_row_ms": steady(rows.latencies),
            "warmup_capture_to_detections_ms": {**probe.percentiles(warmup), "n": len(warmup)}}
