"""`aimass gateway run`: one gateway process for a whole box. Every camera of the gateway file in
its own loop (aimass_gateway.camera), the sensors (MQTT, HTTP push, simulations; aimass_gateway.sensors),
heartbeats for the gateway and each camera, the clock offset, and one producer with its spool for all
of them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from aimass import contracts
from aimass.settings import GatewaySettings
from aimass.site import load_site
from aimass_gateway.camera import CameraRunner
from aimass_gateway.clock import ClockMonitor
from aimass_gateway.config import GatewayFile
from aimass_gateway.health import GatewayStats, HeartbeatMaker
from aimass_gateway.producer import GatewayProducer
from aimass_gateway.sensors import MqttSubscriber, SensorHub, run_simulated, start_http_push

log = logging.getLogger("aimass.gateway")


class Gateway:
    def __init__(self, settings: GatewaySettings, config: GatewayFile):
        if config.gateway_id and config.gateway_id != settings.gateway_id:
            settings = settings.model_copy(update={"gateway_id": config.gateway_id})
        self.settings = settings
        self.config = config
        self._site = None
        if any(c.source.startswith("scene:") for c in config.cameras) or config.site_id is None:
            self._site = load_site(config.site_file or settings.site_file)
        self.site_id = config.site_id or self._site.site.id
        self.stats = GatewayStats()
        self.clock = ClockMonitor(settings.clock_reference)
        self.started_ms = contracts.now_ms()
        self.heartbeats = HeartbeatMaker(self.site_id, settings.gateway_id, self.started_ms,
                                         settings.heartbeat_interval_s)
        self.gw: GatewayProducer | None = None
        self.cameras: list[CameraRunner] = []
        self.hub: SensorHub | None = None
        self.mqtt: MqttSubscriber | None = None
        self.http_port: int | None = None
        self.stop_event = asyncio.Event()

    def _renderer(self, camera_id: str):
        from aimass_gateway.scene import SceneRenderer
        cam = self._site.camera(camera_id) if self._site else None
        if cam is None or cam.scene is None:
            raise ValueError(f"scene:{camera_id}: the site file has no camera {camera_id!r} with a scene")
        return SceneRenderer(cam)

    # ------------------------------------------------------------------ status
    def status(self) -> dict:
        gw = self.gw
        clock = self.clock.sample
        return {
            "gateway_id": self.settings.gateway_id, "site_id": self.site_id,
            "uptime_s": round((contracts.now_ms() - self.started_ms) / 1000, 1),
            "spooling": bool(gw and gw.spooling), "spool_messages": gw.spool_messages if gw else 0,
            "spool_bytes": gw.spool_bytes if gw else 0, "spool_dropped": gw.spool_dropped if gw else 0,
            "send_errors": gw.counters.send_errors if gw else 0,
            "readings_sent": self.stats.readings_sent, "readings_refused": self.stats.readings_refused,
            "clock_offset_ms": None if clock is None else round(clock.offset_ms, 1),
            "clock_source": "" if clock is None else clock.source,
            "cameras": [{"camera_id": c.stats.camera_id, "source": c.stats.source, "state": c.stats.state,
                         "frames_read": c.stats.frames_read, "frames_sent": c.stats.frames_sent,
                         "frames_skipped": c.stats.frames_skipped, "bytes_sent": c.stats.bytes_sent,
                         "last_frame_ms": c.stats.last_frame_ms, "errors": c.stats.errors,
                         "reconnects": c.stats.reconnects, "last_error": c.stats.last_error}
                        for c in self.cameras],
        }

    # ------------------------------------------------------------------ heartbeats and clock
    async def send_heartbeats(self) -> None:
        gw = self.gw
        now = contracts.now_ms()
        clock = self.clock.sample
        for c in self.cameras:
            await gw.send_heartbeat(self.heartbeats.camera(c.stats, now, clock))
        hb = self.heartbeats.gateway([c.stats for c in self.cameras], self.stats, now, spooling=gw.spooling,
                                     spool_messages=gw.spool_messages, spool_bytes=gw.spool_bytes,
                                     spool_dropped=gw.spool_dropped, send_errors=gw.counters.send_errors,
                                     clock=clock, clock_error=self.clock.last_error)
        await gw.send_heartbeat(hb, on_ack=self._observe_broker)

    def _observe_broker(self, send_ms: float, ack_ms: float, md) -> None:
        self.clock.observe_broker(send_ms, ack_ms, md.timestamp, md.timestamp_type)

    async def _heartbeat_loop(self) -> None:
        interval = self.settings.heartbeat_interval_s
        while True:
            try:
                await self.send_heartbeats()
            except Exception:
                log.exception("heartbeat failed")
            await asyncio.sleep(interval)

    async def _clock_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            s = await loop.run_in_executor(None, self.clock.measure_ntp)
            if s is not None and not self.clock.last_error:
                log.info("clock: %+.1f ms against %s (round trip %.1f ms)", s.offset_ms, s.source, s.rtt_ms)
            elif self.clock.last_error:
                log.warning("clock: %s", self.clock.last_error)
            await asyncio.sleep(self.settings.clock_check_s)

    # ------------------------------------------------------------------ run
    async def run(self, seconds: float | None = None, on_tick: Callable[["Gateway"], None] | None = None,
                  producer: GatewayProducer | None = None) -> "Gateway":
        s = self.settings
        background: list[asyncio.Task] = []
        http_runner = None
        async with (producer or GatewayProducer(s, self.site_id)) as gw:
            self.gw = gw
            self.cameras = [CameraRunner(c, gw, self._renderer(c.source[6:]) if c.source.startswith("scene:") else None)
                            for c in self.config.cameras if c.enabled]
            self.hub = SensorHub(self.config, gw, self.stats)
            loop = asyncio.get_running_loop()
            try:
                if s.mqtt_url and self.hub.by_topic:
                    self.mqtt = MqttSubscriber(s.mqtt_url, s.mqtt_password.get_secret_value(),
                                               sorted(self.hub.by_topic), self.hub.on_mqtt,
                                               f"aimass-{s.gateway_id}", loop).start()
                elif self.hub.by_topic:
                    log.warning("the gateway file binds %d sensors to MQTT topics but AIMASS_MQTT_URL is not set",
                                len(self.hub.by_topic))
                if s.http_push_port:
                    http_runner, self.http_port = await start_http_push(self.hub, s.http_push_host,
                                                                        s.http_push_port, self.status)
                background.append(loop.create_task(self._heartbeat_loop()))
                if self.clock.kind == "ntp":
                    background.append(loop.create_task(self._clock_loop()))
                if on_tick is not None:
                    async def tick():
                        while True:
                            on_tick(self)
                            await asyncio.sleep(1.0)
                    background.append(loop.create_task(tick()))
                work = [loop.create_task(c.run(seconds, self.stop_event)) for c in self.cameras]
                work += [loop.create_task(run_simulated(self.hub, x, seconds, self.stop_event))
                         for x in self.config.sensors if x.simulate is not None]
                if seconds is not None and not work:
                    work.append(loop.create_task(asyncio.sleep(seconds)))
                if work:
                    done_or_stop = loop.create_task(self.stop_event.wait())
                    await asyncio.wait([done_or_stop, loop.create_task(asyncio.wait(work))],
                                       return_when=asyncio.FIRST_COMPLETED)
                    self.stop_event.set()
                    await asyncio.gather(*work, return_exceptions=True)
                    done_or_stop.cancel()
                else:
                    await self.stop_event.wait()
            finally:
                self.stop_event.set()
                if self.mqtt is not None:
                    await self.mqtt.stop()
                if http_runner is not None:
                    await http_runner.cleanup()
                for t in background:
                    t.cancel()
                await asyncio.gather(*background, return_exceptions=True)
                try:
                    await self.send_heartbeats()  # the last word: counters as they ended
                except Exception:
                    log.exception("last heartbeat failed")
                if on_tick is not None:
                    on_tick(self)
        return self


def load(settings: GatewaySettings, path: Path) -> Gateway:
    from aimass_gateway.config import load_gateway_file
    return Gateway(settings, load_gateway_file(path))
