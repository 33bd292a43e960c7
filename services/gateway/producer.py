"""What a gateway sends: frames and sensor readings, stamped and traced, to Kafka.

Sends are pipelined (no wait per message); a failed send is counted and logged, never fatal, so a
camera loop keeps its pace while the broker hiccups. (The bounded on-disk buffer for long outages
is the gateway issue's work.)
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import numpy as np
import simplejpeg

from aimass import contracts, telemetry
from aimass.contracts import Frame, SensorReading
from aimass.kafka import start_producer
from aimass.settings import GatewaySettings

log = logging.getLogger("aimass.gateway")


@dataclass
class GatewayCounters:
    frames: int = 0
    frame_bytes: int = 0
    readings: int = 0
    send_errors: int = 0
    per_camera: dict[str, int] = field(default_factory=dict)


def encode_jpeg(image_bgr: np.ndarray, quality: int) -> bytes:
    return simplejpeg.encode_jpeg(np.ascontiguousarray(image_bgr), quality=quality, colorspace="BGR")


class GatewayProducer:
    def __init__(self, settings: GatewaySettings, site_id: str):
        self.settings = settings
        self.site_id = site_id
        self.counters = GatewayCounters()
        self._producer = None
        self._pending: set[asyncio.Future] = set()
        self._tracer = telemetry.tracer("aimass.gateway")

    async def __aenter__(self) -> "GatewayProducer":
        self._producer = await start_producer(self.settings)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.flush()
        await self._producer.stop()

    async def flush(self) -> None:
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
        await self._producer.flush()

    def _track(self, fut: asyncio.Future) -> None:
        self._pending.add(fut)

        def done(f: asyncio.Future) -> None:
            self._pending.discard(f)
            if f.cancelled() or f.exception() is not None:
                self.counters.send_errors += 1
                log.warning("send failed: %s", "cancelled" if f.cancelled() else f.exception())
        fut.add_done_callback(done)

    async def send_frame(self, camera_id: str, seq: int, captured_ms: float, image_bgr: np.ndarray,
                         jpeg: bytes | None = None) -> None:
        with self._tracer.start_as_current_span("capture") as span:
            span.set_attribute("camera.id", camera_id)
            span.set_attribute("frame.seq", seq)
            jpeg = jpeg if jpeg is not None else encode_jpeg(image_bgr, self.settings.jpeg_quality)
            h, w = image_bgr.shape[:2]
            msg = Frame(site_id=self.site_id, camera_id=camera_id, seq=seq, captured_ms=captured_ms,
                        width=w, height=h, jpeg=jpeg, gateway_id=self.settings.gateway_id,
                        stamps={"captured": captured_ms, "sent": contracts.now_ms()})
            await self._send(self.settings.topic(contracts.TOPIC_FRAMES), camera_id, contracts.encode(msg))
        self.counters.frames += 1
        self.counters.frame_bytes += len(jpeg)
        self.counters.per_camera[camera_id] = self.counters.per_camera.get(camera_id, 0) + 1

    async def send_reading(self, sensor_id: str, seq: int, captured_ms: float, value: float, unit: str = "") -> None:
        with self._tracer.start_as_current_span("reading") as span:
            span.set_attribute("sensor.id", sensor_id)
            msg = SensorReading(site_id=self.site_id, sensor_id=sensor_id, seq=seq, captured_ms=captured_ms,
                                value=value, unit=unit, gateway_id=self.settings.gateway_id,
                                stamps={"captured": captured_ms, "sent": contracts.now_ms()})
            await self._send(self.settings.topic(contracts.TOPIC_SENSORS), sensor_id, contracts.encode(msg))
        self.counters.readings += 1

    async def send_raw(self, topic: str, key: bytes, value: bytes) -> None:
        """Send bytes as they are (tests and tools that need malformed input)."""
        self._track(await self._producer.send(topic, value, key=key))

    async def _send(self, topic: str, key: str, value: bytes) -> None:
        headers = telemetry.inject()
        try:
            fut = await self._producer.send(topic, value, key=key.encode(), headers=headers)
        except Exception as exc:  # buffer full, message too large, broker gone: counted, not fatal
            self.counters.send_errors += 1
            log.warning("could not queue a message for %s: %s", topic, exc)
            return
        self._track(fut)
