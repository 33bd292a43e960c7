"""Sensor readings at the edge: from MQTT (a subscription per sensor topic), from HTTP pushes
(``POST /v1/readings``) and from simulations, each converted to the sensor's declared unit and
checked (a finite number, within the unit's plausible range and the sensor's own min/max) before it
is sent. A refused reading is counted, logged and sent to the dead-letter topic with its original
bytes and the reason (through the same producer, so it waits in the spool like anything else while
the broker is away).

Every reading is stamped with the gateway's clock when it arrived (MQTT and HTTP carry no trusted
capture time of their own).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import threading
import time
from collections.abc import Callable
from urllib.parse import unquote, urlsplit

from aimass import contracts
from aimass_gateway.config import GatewayFile, MqttBinding, SensorConfig
from aimass_gateway.health import GatewayStats
from aimass_gateway.producer import GatewayProducer
from aimass_gateway.units import BadReading, UnitError, check_value, convert

log = logging.getLogger("aimass.gateway")

MAX_PAYLOAD = 64 * 1024
_TRUE = {"true", "on", "open", "yes", "1"}
_FALSE = {"false", "off", "closed", "no", "0"}


# ------------------------------------------------------------------ pure: payloads and values
def _number(v, what: str) -> float:
    if isinstance(v, bool):
        return 1.0 if v else 0.0
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        t = v.strip().lower()
        if t in _TRUE:
            return 1.0
        if t in _FALSE:
            return 0.0
        try:
            return float(t)
        except ValueError:
            pass
    raise BadReading("bad_payload", f"{what} {v!r:.80} is not a number, true/false or on/off")


def _dig(obj, path: str):
    for part in path.split("."):
        if not isinstance(obj, dict) or part not in obj:
            raise BadReading("bad_payload", f"the payload has no {path!r}")
        obj = obj[part]
    return obj


def parse_payload(payload: bytes, binding: MqttBinding) -> tuple[float, str | None]:
    """(raw value, unit named by the payload or None) from an MQTT payload: a bare number, true/false,
    on/off, or JSON (a number, or an object with the value under ``binding.field``)."""
    if len(payload) > MAX_PAYLOAD:
        raise BadReading("too_large", f"payload of {len(payload)} bytes; the limit is {MAX_PAYLOAD}")
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise BadReading("bad_payload", "the payload is not UTF-8 text") from None
    try:
        doc = json.loads(text)
    except ValueError:
        doc = text
    unit = None
    if isinstance(doc, dict):
        if not binding.field:
            raise BadReading("bad_payload", "a JSON object payload needs the sensor's mqtt.field to name the value")
        obj, doc = doc, _dig(doc, binding.field)
        if binding.unit_field:
            u = _dig(obj, binding.unit_field)
            unit = str(u) if u is not None else None
    return _number(doc, "the value"), unit


def to_reading(sensor: SensorConfig, raw: float, raw_unit: str | None = None) -> float:
    """The value to send for ``raw``: scaled, converted from the device's unit to the sensor's, and
    checked. Raises BadReading with the reason."""
    if not math.isfinite(raw):
        raise BadReading("not_finite", f"value {raw} is not a finite number")
    v = raw * sensor.scale + sensor.offset
    from_unit = raw_unit if raw_unit else (sensor.input_unit if sensor.input_unit is not None else sensor.unit)
    try:
        v = convert(v, from_unit, sensor.unit)
    except UnitError as exc:
        raise BadReading("bad_unit", str(exc)) from None
    return check_value(v, sensor.unit, sensor.min, sensor.max)


# ------------------------------------------------------------------ the hub every source feeds
class SensorHub:
    def __init__(self, config: GatewayFile, gw: GatewayProducer, stats: GatewayStats | None = None):
        self.sensors = {s.id: s for s in config.sensors}
        self.by_topic = {s.mqtt.topic: s for s in config.sensors if s.mqtt is not None}
        self.gw = gw
        self.stats = stats or GatewayStats()
        self._seq: dict[str, int] = {}

    async def submit(self, sensor_id: str, raw, raw_unit: str | None, *, source: str, original: bytes,
                     captured_ms: float | None = None) -> str:
        """Convert, check and send one reading; returns "" when sent, else the refusal reason."""
        captured_ms = contracts.now_ms() if captured_ms is None else captured_ms
        sensor = self.sensors.get(sensor_id)
        try:
            if sensor is None:
                raise BadReading("unknown_sensor", f"sensor {sensor_id!r:.80} is not in the gateway file")
            value = to_reading(sensor, _number(raw, "the value"), raw_unit)
        except BadReading as exc:
            await self.refuse(sensor_id, exc, source=source, original=original)
            return exc.reason
        seq = self._seq.get(sensor.id, 0)
        self._seq[sensor.id] = seq + 1
        await self.gw.send_reading(sensor.id, seq, captured_ms, value, sensor.unit)
        self.stats.readings_sent += 1
        return ""

    async def refuse(self, key: str, exc: BadReading, *, source: str, original: bytes) -> None:
        self.stats.readings_refused += 1
        log.warning("reading from %s for %s refused: %s (%s)", source, key, exc, exc.reason)
        await self.gw.send_deadletter(source=source, key=key[:contracts.MAX_ID_LEN] or "?", original=original,
                                      reason=exc.reason, detail=str(exc))

    async def on_mqtt(self, topic: str, payload: bytes, received_ms: float) -> None:
        sensor = self.by_topic.get(topic)
        if sensor is None:
            return
        try:
            raw, unit = parse_payload(payload, sensor.mqtt)
        except BadReading as exc:
            await self.refuse(sensor.id, exc, source=f"mqtt:{topic}", original=payload)
            return
        await self.submit(sensor.id, raw, unit, source=f"mqtt:{topic}", original=payload, captured_ms=received_ms)


# ------------------------------------------------------------------ MQTT
def parse_mqtt_url(url: str) -> tuple[str, int, str | None]:
    """``mqtt://[user@]host[:port]`` -> (host, port, user)."""
    p = urlsplit(url)
    if p.scheme not in ("mqtt", "tcp") or not p.hostname:
        raise ValueError(f"MQTT URL {url!r}: use mqtt://[user@]host[:port]")
    if p.password:
        raise ValueError("keep the MQTT password out of the URL: set AIMASS_MQTT_PASSWORD")
    return p.hostname, p.port or 1883, unquote(p.username) if p.username else None


class MqttSubscriber:
    """A paho-mqtt client on its own network thread, subscribed (QoS 1) to every sensor topic of the
    gateway file; reconnects and resubscribes by itself. Messages are handed to the event loop."""

    def __init__(self, url: str, password: str, topics: list[str], handler: Callable, client_id: str,
                 loop: asyncio.AbstractEventLoop, queue_size: int = 10_000):
        import paho.mqtt.client as mqtt

        self.host, self.port, user = parse_mqtt_url(url)
        self.topics = topics
        self.handler = handler
        self.loop = loop
        self.queue: asyncio.Queue = asyncio.Queue(queue_size)
        self.dropped = 0
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        if user is not None:
            self.client.username_pw_set(user, password or None)
        self.client.reconnect_delay_set(0.5, 30)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on_message
        self._task: asyncio.Task | None = None
        self._stopping = False

    def _on_connect(self, client, userdata, flags, reason_code, properties=None):
        if reason_code.is_failure:
            log.warning("MQTT broker %s:%d refused the connection: %s", self.host, self.port, reason_code)
            return
        log.info("MQTT: connected to %s:%d, subscribing to %d topics", self.host, self.port, len(self.topics))
        self.connected.set()
        if self.topics:
            client.subscribe([(t, 1) for t in self.topics])

    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None):
        self.connected.clear()
        self.subscribed.clear()
        if not self._stopping:
            log.warning("MQTT: disconnected from %s:%d (%s); reconnecting", self.host, self.port, reason_code)

    def _on_message(self, client, userdata, msg):
        item = (msg.topic, bytes(msg.payload), contracts.now_ms())
        self.loop.call_soon_threadsafe(self._put, item)

    def _put(self, item) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1

    async def _pump(self) -> None:
        while True:
            topic, payload, received = await self.queue.get()
            try:
                await self.handler(topic, payload, received)
            except Exception:
                log.exception("MQTT message on %s could not be handled", topic)

    def start(self) -> "MqttSubscriber":
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()
        self._task = self.loop.create_task(self._pump())
        return self

    async def stop(self) -> None:
        self._stopping = True
        self.client.disconnect()
        await self.loop.run_in_executor(None, self.client.loop_stop)
        if self._task is not None:
            while not self.queue.empty():  # what already arrived is still sent
                await asyncio.sleep(0.01)
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


# ------------------------------------------------------------------ HTTP push
async def start_http_push(hub: SensorHub, host: str, port: int, status: Callable[[], dict] | None = None):
    """``POST /v1/readings`` with ``{"sensor_id", "value", "unit"?}`` or a list of them (at most 1 MiB);
    ``GET /v1/status`` the gateway's state. Returns (runner, bound port)."""
    from aiohttp import web

    async def readings(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            doc = json.loads(body)
        except ValueError:
            return web.json_response({"error": "bad_request", "reason": "the body is not JSON"}, status=400)
        items = doc if isinstance(doc, list) else [doc]
        accepted, refused = 0, []
        for i, item in enumerate(items):
            if not isinstance(item, dict) or not isinstance(item.get("sensor_id"), str) or "value" not in item:
                refused.append({"index": i, "reason": "bad_payload",
                                "detail": 'each reading is {"sensor_id": ..., "value": ..., "unit": ...}'})
                await hub.refuse(str(item.get("sensor_id", "?")) if isinstance(item, dict) else "?",
                                 BadReading("bad_payload", "not a reading object"), source="http",
                                 original=json.dumps(item).encode()[:MAX_PAYLOAD])
                continue
            unit = item.get("unit")
            reason = await hub.submit(item["sensor_id"], item["value"], str(unit) if unit else None, source="http",
                                      original=json.dumps(item).encode()[:MAX_PAYLOAD])
            if reason:
                refused.append({"index": i, "sensor_id": item["sensor_id"], "reason": reason})
            else:
                accepted += 1
        return web.json_response({"accepted": accepted, "refused": refused}, status=200 if accepted or not refused else 422)

    async def get_status(request: web.Request) -> web.Response:
        return web.json_response(status() if status else {})

    app = web.Application(client_max_size=1024 * 1024)
    app.router.add_post("/v1/readings", readings)
    app.router.add_get("/v1/status", get_status)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    log.info("HTTP push for sensor readings on http://%s:%d/v1/readings", host, bound)
    return runner, bound


# ------------------------------------------------------------------ simulated sensors
async def run_simulated(hub: SensorHub, sensor: SensorConfig, seconds: float | None, stop: asyncio.Event,
                        seed: int = 0) -> None:
    """A simulated sensor (its ``simulate`` steps, in its input unit) through the same checks."""
    from aimass_gateway.simulate import sensor_value

    rng = random.Random(f"{seed}:{sensor.id}")
    t0 = time.monotonic()
    k = 0
    while not stop.is_set():
        due = t0 + k * sensor.period_s
        if seconds is not None and due - t0 >= seconds:
            return
        try:
            await asyncio.wait_for(stop.wait(), max(0.0, due - time.monotonic()))
            return
        except asyncio.TimeoutError:
            pass
        value = sensor_value(sensor, due - t0, rng)
        await hub.submit(sensor.id, value, None, source="simulate", original=str(value).encode())
        k += 1
