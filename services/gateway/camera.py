"""One camera's loop: sample its source at its rate, pass each frame through its motion gate,
resize, JPEG-encode and send what the gate lets through, keeping its counters for the heartbeats.

Live sources (RTSP, HTTP, webcams) run in a Grabber thread that reconnects by itself; the loop takes
the newest frame at each tick. Files and folders are read on demand: every frame, slowed to the
camera's fps (a file would race ahead otherwise). Simulated scenes are rendered at the tick's time.

`aimass gateway camera` runs one of these; `aimass gateway run` runs many (aimass_gateway.fleet).
"""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np

from aimass import contracts
from aimass.settings import GatewaySettings
from aimass_gateway.config import CameraConfig, Gating
from aimass_gateway.gating import AdaptiveRate, MotionGate, PassGate
from aimass_gateway.health import CameraStats
from aimass_gateway.producer import GatewayProducer
from aimass_gateway.sources import Backoff, Grabber, SourceError, open_source, parse_source, resize_to_width

log = logging.getLogger("aimass.gateway")


class CameraRunner:
    def __init__(self, cam: CameraConfig, gw: GatewayProducer, renderer=None):
        self.cam = cam
        self.gw = gw
        self.spec = parse_source(cam.source)
        self.renderer = renderer  # a SceneRenderer for scene: sources
        if self.spec.kind == "scene" and renderer is None:
            raise SourceError(f"camera {cam.id}: {cam.source} needs the site file's scene for camera "
                              f"{self.spec.target!r}")
        g = cam.gating
        self.gate = MotionGate(g.gate_config()) if g is not None and g.enabled else PassGate()
        self.rate = AdaptiveRate(cam.fps, cam.idle_fps)
        self.quality = cam.jpeg_quality or gw.settings.jpeg_quality
        self.stats = CameraStats(cam.id, self.spec.label)
        self.seq = 0
        self.grabber: Grabber | None = None
        # Files and folders open now, so a bad one fails with its reason before anything runs.
        self._frames = open_source(cam.source, loop=cam.loop) if self.spec.kind in ("file", "folder") else None

    async def run(self, seconds: float | None = None, stop: asyncio.Event | None = None) -> CameraStats:
        """Until ``seconds`` pass, ``stop`` is set, or a file ends; never raises for a source that
        fails while running (it is counted and, for a live source, reconnected)."""
        end = None if seconds is None else time.monotonic() + seconds
        stop = stop or asyncio.Event()
        try:
            if self.spec.live:
                await self._run_live(end, stop)
            else:
                await self._run_paced(end, stop)
        finally:
            self.stats.state = "stopped"
            if self.grabber is not None:
                await asyncio.get_running_loop().run_in_executor(None, self.grabber.stop)
        return self.stats

    # ------------------------------------------------------------------ one frame
    async def _frame(self, image: np.ndarray, captured_ms: float, t_s: float) -> None:
        s = self.stats
        s.frames_read += 1
        seq, self.seq = self.seq, self.seq + 1  # one number per frame read: a gap is a frame the gate held back
        decision = self.gate.decide(image, t_s)
        if not decision.send:
            s.frames_skipped += 1
            self.gw.counters.frames_skipped += 1
            s.state = "idle"
            return
        s.state = "ok"
        size = await self.gw.send_frame(self.cam.id, seq, captured_ms, resize_to_width(image, self.cam.width),
                                        quality=self.quality)
        s.frames_sent += 1
        s.bytes_sent += size

    def _period(self, t_s: float) -> float:
        return self.rate.period_s(self.gate.active(t_s), self.gw.spooling)

    @staticmethod
    async def _sleep_until(due: float, end: float | None, stop: asyncio.Event) -> bool:
        """Sleep until ``due`` (monotonic); False when the run should end first."""
        if end is not None and due >= end:
            return False
        rest = due - time.monotonic()
        if rest > 0:
            try:
                await asyncio.wait_for(stop.wait(), rest)
                return False
            except asyncio.TimeoutError:
                pass
        return not stop.is_set()

    # ------------------------------------------------------------------ live: a grabber thread
    async def _run_live(self, end: float | None, stop: asyncio.Event) -> None:
        r = self.cam.reconnect
        src, timeout = self.cam.source, r.timeout_s
        min_interval = 1.0 / self.cam.fps
        self.grabber = Grabber(lambda: open_source(src, timeout_s=timeout, min_interval_s=min_interval),
                               self.spec.label, Backoff(r.initial_s, r.max_s, r.factor, r.jitter)).start()
        s, h = self.stats, self.grabber.health
        last_n = 0
        due = time.monotonic()
        while await self._sleep_until(due, end, stop):
            s.errors, s.reconnects, s.last_error, s.last_frame_ms = h.errors, h.reconnects, h.last_error, h.last_frame_ms
            got = self.grabber.latest(last_n, 0.0)
            if got is None:  # nothing new yet: the camera is slower than our rate, or gone
                if h.state == "reconnecting":
                    s.state = "reconnecting"
                due = time.monotonic() + min(0.05, min_interval)
                continue
            last_n, captured_ms, image = got
            t = time.monotonic()
            await self._frame(image, captured_ms, t)
            period = self._period(t)
            due = max(due + period, time.monotonic() - period)

    # ------------------------------------------------------------------ files, folders, scenes
    async def _run_paced(self, end: float | None, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        frames = self._frames
        t0 = due = time.monotonic()
        while await self._sleep_until(due, end, stop):
            t = time.monotonic()
            captured_ms = contracts.now_ms()
            try:
                if frames is None:
                    image, _ = await loop.run_in_executor(None, self.renderer.render, t - t0)
                else:
                    image = await loop.run_in_executor(None, next, frames, None)
            except Exception as exc:  # an unreadable file in a folder, a broken codec
                self.stats.errors += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"[:500]
                log.warning("camera %s: %s", self.cam.id, self.stats.last_error)
                image = None
            if image is None:
                log.info("camera %s: the source %s ended", self.cam.id, self.spec.label)
                return
            self.stats.last_frame_ms = captured_ms
            await self._frame(image, captured_ms, t - t0)
            period = self._period(t - t0)
            due = max(due + period, time.monotonic() - period)


async def run_camera(settings: GatewaySettings, site_id: str, camera_id: str, source: str, *, fps: float,
                     width: int | None, seconds: float | None = None, loop: bool = False,
                     gating: Gating | None = None, jpeg_quality: int | None = None) -> GatewayProducer:
    """Sample ``source`` at ``fps`` (live sources: frames in between are read and dropped; files:
    every frame, at that pace), resize to ``width``, gate, JPEG-encode and send. Stops at the end of
    a file, after ``seconds``, or on cancellation."""
    try:
        parse_source(source)
        cam = CameraConfig(id=camera_id, source=source, fps=fps, width=width, loop=loop, gating=gating,
                           jpeg_quality=jpeg_quality)
    except ValueError as exc:
        raise SourceError(str(exc)) from None
    async with GatewayProducer(settings, site_id) as gw:
        stats = await CameraRunner(cam, gw).run(seconds)
    log.info("camera %s: sent %d frames (%d bytes), skipped %d", camera_id, stats.frames_sent, stats.bytes_sent,
             stats.frames_skipped)
    gw.camera_stats = stats
    return gw
