"""`aimass gateway simulate`: a simulated site. Cameras render real photographs moved along the site
file's scripted paths (aimass_gateway.scene); sensors follow their scripted steps. Both are sent
through the same producer a real gateway uses, at the configured pace.

The scripts are the ground truth: ``--truth FILE`` writes what each frame shows as JSON lines.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from pathlib import Path
from typing import IO

from aimass import contracts
from aimass.settings import GatewaySettings
from aimass.site import Camera, Sensor, Site
from aimass_gateway.gating import GateConfig, MotionGate
from aimass_gateway.producer import GatewayProducer, encode_jpeg
from aimass_gateway.scene import SceneRenderer

log = logging.getLogger("aimass.gateway")


def sensor_value(sensor: Sensor, t: float, rng: random.Random) -> float:
    """The scripted value at ``t`` seconds: the last step at or before ``t`` (else the base), plus
    Gaussian noise."""
    sim = sensor.simulate
    value = sim.base
    for step in sim.steps:
        if step.at <= t:
            value = step.value
    return value + (rng.gauss(0.0, sim.noise) if sim.noise else 0.0)


async def _paced(period_s: float, seconds: float, t0: float):
    """Yield (k, t) on an absolute schedule so the pace does not drift; late ticks are skipped."""
    k = 0
    while True:
        due = t0 + k * period_s
        if due - t0 >= seconds:
            return
        now = time.monotonic()
        if due > now:
            await asyncio.sleep(due - now)
        elif now - due > period_s:  # fell behind by more than a tick: skip to the present
            k = int((now - t0) / period_s)
            continue
        yield k, due - t0
        k += 1


async def run_camera(gw: GatewayProducer, cam: Camera, seconds: float, t0: float, truth: IO | None,
                     gate: GateConfig | None = None) -> None:
    renderer = SceneRenderer(cam)
    motion = MotionGate(gate) if gate is not None else None
    loop = asyncio.get_running_loop()
    async for k, t in _paced(1.0 / cam.fps, seconds, t0):
        captured = contracts.now_ms()
        image, gts = await loop.run_in_executor(None, renderer.render, t)
        if motion is not None and not motion.decide(image, t).send:
            gw.counters.frames_skipped += 1  # seq k is not sent: the gap says the gate held it back
            continue
        jpeg = encode_jpeg(image, gw.settings.jpeg_quality)
        await gw.send_frame(cam.id, k, captured, image, jpeg=jpeg)
        if truth is not None:
            truth.write(json.dumps({"camera_id": cam.id, "seq": k, "t": round(t, 3), "captured_ms": captured,
                                    "objects": [g.as_dict() for g in gts]}) + "\n")


async def run_sensor(gw: GatewayProducer, sensor: Sensor, seconds: float, t0: float, seed: int) -> None:
    rng = random.Random(f"{seed}:{sensor.id}")
    async for k, t in _paced(sensor.period_s, seconds, t0):
        await gw.send_reading(sensor.id, k, contracts.now_ms(), sensor_value(sensor, t, rng), sensor.unit)


async def simulate(site: Site, settings: GatewaySettings, seconds: float, *, truth_file: Path | None = None,
                   seed: int = 0, producer: GatewayProducer | None = None,
                   gate: GateConfig | None = None) -> GatewayProducer:
    """Run every scripted camera and sensor of ``site`` for ``seconds``; returns the producer (its
    counters say what was sent). With ``gate``, each camera sends only what its motion gate lets
    through (aimass_gateway.gating)."""
    cams = [c for c in site.cameras if c.scene is not None]
    sensors = [s for s in site.sensors if s.simulate is not None]
    truth = open(truth_file, "w") if truth_file else None
    gw = producer or GatewayProducer(settings, site.site.id)
    try:
        async with gw:
            t0 = time.monotonic()
            await asyncio.gather(*[run_camera(gw, c, seconds, t0, truth, gate) for c in cams],
                                 *[run_sensor(gw, s, seconds, t0, seed) for s in sensors])
    finally:
        if truth:
            truth.close()
    log.info("simulated %d cameras and %d sensors for %.0f s: %d frames (%d bytes), %d readings, %d send errors",
             len(cams), len(sensors), seconds, gw.counters.frames, gw.counters.frame_bytes, gw.counters.readings,
             gw.counters.send_errors)
    return gw
