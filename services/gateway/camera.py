"""`aimass gateway camera`: one real camera (file, folder, RTSP/HTTP URL or webcam) to Kafka."""

from __future__ import annotations

import asyncio
import logging
import time

from aimass import contracts
from aimass.settings import GatewaySettings
from aimass_gateway.producer import GatewayProducer
from aimass_gateway.sources import open_source, resize_to_width

log = logging.getLogger("aimass.gateway")


async def run_camera(settings: GatewaySettings, site_id: str, camera_id: str, source: str, *, fps: float,
                     width: int | None, seconds: float | None = None, loop: bool = False) -> GatewayProducer:
    """Sample ``source`` at ``fps`` (frames in between are read and dropped), resize to ``width``,
    JPEG-encode and send. Stops at the end of a file, after ``seconds``, or on cancellation."""
    frames = open_source(source, loop=loop)
    period = 1.0 / fps
    aloop = asyncio.get_running_loop()
    async with GatewayProducer(settings, site_id) as gw:
        t0 = time.monotonic()
        next_due = t0
        seq = 0
        while seconds is None or time.monotonic() - t0 < seconds:
            image = await aloop.run_in_executor(None, next, frames, None)
            if image is None:
                break
            now = time.monotonic()
            if now < next_due:
                # Live sources run at their own pace: drop frames between samples. Files would race
                # ahead, so wait for the slot instead.
                if "://" in source or source.isdigit():
                    continue
                await asyncio.sleep(next_due - now)
            next_due = max(next_due + period, time.monotonic() - period)
            await gw.send_frame(camera_id, seq, contracts.now_ms(), resize_to_width(image, width))
            seq += 1
    log.info("camera %s: sent %d frames (%d bytes)", camera_id, gw.counters.frames, gw.counters.frame_bytes)
    return gw
