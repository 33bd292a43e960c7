"""What a gateway sends: frames, sensor readings and heartbeats, stamped and traced, to Kafka, with
store and forward when the broker is unreachable.

While Kafka answers, messages go straight to it, pipelined (no wait per message). When a message is
not acknowledged within ``send_timeout_s`` (or fails), the producer switches to the on-disk spool
(aimass_gateway.spool): the messages still in flight are failed over to it, the Kafka client is
abandoned, and everything after goes to the spool too, so nothing overtakes what is waiting. A
drain task reconnects with back-off, sends the spool's oldest message alone until one gets through,
then sends the rest in order in batches, deleting each batch once Kafka acknowledged it; when the
spool is empty, sending is direct again. Each message keeps the number it got when it was first
handed over, so the spool holds the original order (per camera and sensor, and overall). The spool
is bounded; past its bound the oldest messages are dropped and counted. Without a spool
(``spool_max_bytes=0``) a failed send is counted and logged, never fatal.

Delivery is at least once: a message whose request was on the wire when the connection broke may
arrive twice (the tables deduplicate on ids from the source).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import simplejpeg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import (InvalidTopicError, KafkaTimeoutError, MessageSizeTooLargeError, RecordTooLargeError,
                             TopicAuthorizationFailedError)

from aimass import contracts, telemetry
from aimass.contracts import DeadLetter, Frame, Heartbeat, SensorReading
from aimass.kafka import client_options
from aimass.settings import GatewaySettings
from aimass_gateway.sources import Backoff
from aimass_gateway.spool import Spool

log = logging.getLogger("aimass.gateway")

# Errors that sending again will not cure: such a message is dropped and counted, not spooled.
PERMANENT = (MessageSizeTooLargeError, RecordTooLargeError, InvalidTopicError, TopicAuthorizationFailedError)
DRAIN_BATCH = 256
DRAIN_BATCH_BYTES = 4 * 1024 * 1024


@dataclass
class GatewayCounters:
    frames: int = 0
    frame_bytes: int = 0
    frames_skipped: int = 0  # read but held back by a motion gate
    readings: int = 0
    heartbeats: int = 0
    deadletters: int = 0
    send_errors: int = 0  # messages lost: refused for good, or failed with no spool
    spooled: int = 0  # messages written to the spool
    resent: int = 0  # spooled messages delivered later
    per_camera: dict[str, int] = field(default_factory=dict)


def encode_jpeg(image_bgr: np.ndarray, quality: int) -> bytes:
    return simplejpeg.encode_jpeg(np.ascontiguousarray(image_bgr), quality=quality, colorspace="BGR")


@dataclass
class _Msg:
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    t0: float  # monotonic time handed to Kafka
    on_ack: Callable | None = None


class GatewayProducer:
    def __init__(self, settings: GatewaySettings, site_id: str, *, spool: bool = True):
        self.settings = settings
        self.site_id = site_id
        self.counters = GatewayCounters()
        self.spool: Spool | None = None
        self._use_spool = spool and settings.spool_max_bytes > 0
        self._producer: AIOKafkaProducer | None = None
        self._n = 0  # the next message number (order of hand-over)
        self._inflight: dict[int, _Msg] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._spooling = False
        self._drainer: asyncio.Task | None = None
        self._watchdog: asyncio.Task | None = None
        self._closing = False
        self._tracer = telemetry.tracer("aimass.gateway")

    # ------------------------------------------------------------------ life cycle
    async def __aenter__(self) -> "GatewayProducer":
        if self._use_spool:
            s = self.settings
            self.spool = Spool(s.spool_folder(), s.spool_max_bytes, s.spool_max_messages)
            self._n = self.spool.next_seq()
        connected = await self._connect()
        if not connected and self.spool is None:
            raise ConnectionError(f"cannot reach Kafka at {self.settings.kafka_bootstrap}")
        if self.spool is not None and (len(self.spool) or not connected):
            self._start_spooling("messages left from an earlier run" if connected else "Kafka is unreachable")
        self._watchdog = asyncio.create_task(self._watch())
        return self

    async def __aexit__(self, *exc) -> None:
        await self.flush(self.settings.send_timeout_s)
        self._closing = True
        for t in (self._watchdog, self._drainer):
            if t is not None and not t.done():
                t.cancel()  # (a cancel that lands as a wait_for completes can be lost: the loops also stop on _closing)
                await asyncio.wait({t}, timeout=self.settings.send_timeout_s + 6.0)
        if self._producer is not None:
            await self._stop_producer(self._producer)
            self._producer = None
        if self.spool is not None:
            if len(self.spool):
                log.warning("%d messages stay in the spool %s and go out when the gateway runs again",
                            len(self.spool), self.spool.folder)
            self.spool.close()

    async def _connect(self) -> bool:
        """A Kafka client as aimass.kafka.start_producer makes it, with the gateway's send timeout."""
        s = self.settings
        p = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, max_request_size=s.kafka_max_request_bytes,
                             linger_ms=5, enable_idempotence=False, acks="all",
                             request_timeout_ms=int(s.send_timeout_s * 1000), retry_backoff_ms=200,
                             **client_options(s))
        try:
            await asyncio.wait_for(p.start(), s.send_timeout_s)
        except Exception as exc:
            log.debug("cannot connect to Kafka: %s", exc)
            await self._stop_producer(p)
            return False
        self._producer = p
        return True

    @staticmethod
    async def _stop_producer(p: AIOKafkaProducer) -> None:
        acc = getattr(p, "_message_accumulator", None)
        if acc is not None and hasattr(acc, "fail_all"):
            # Whatever it still holds was failed over to the spool (or is lost without one); without
            # this, stop() waits for the broker to take it.
            acc.fail_all(KafkaTimeoutError("the gateway stopped using this connection"))
        try:
            await asyncio.wait_for(p.stop(), 5.0)
        except Exception as exc:
            log.debug("closing a Kafka client: %s", exc)

    async def flush(self, timeout_s: float | None = None) -> None:
        """Wait until what was handed over is acknowledged or spooled, and, while spooling and Kafka
        is reachable, until the spool is drained (at most ``timeout_s``, default: no limit)."""
        end = None if timeout_s is None else time.monotonic() + timeout_s

        async def settled():
            while self._inflight or (self._spooling and self._producer is not None):
                await asyncio.sleep(0.02)
        try:
            await asyncio.wait_for(settled(), None if end is None else max(0.0, end - time.monotonic()))
        except asyncio.TimeoutError:
            pass

    # ------------------------------------------------------------------ state
    @property
    def spooling(self) -> bool:
        return self._spooling

    @property
    def spool_messages(self) -> int:
        return len(self.spool) if self.spool is not None else 0

    @property
    def spool_bytes(self) -> int:
        return self.spool.bytes if self.spool is not None else 0

    @property
    def spool_dropped(self) -> int:
        return self.spool.dropped if self.spool is not None else 0

    # ------------------------------------------------------------------ messages
    async def send_frame(self, camera_id: str, seq: int, captured_ms: float, image_bgr: np.ndarray,
                         jpeg: bytes | None = None, quality: int | None = None) -> int:
        """Encode (unless ``jpeg`` is given) and send one frame; returns its JPEG size."""
        with self._tracer.start_as_current_span("capture") as span:
            span.set_attribute("camera.id", camera_id)
            span.set_attribute("frame.seq", seq)
            jpeg = jpeg if jpeg is not None else encode_jpeg(image_bgr, quality or self.settings.jpeg_quality)
            h, w = image_bgr.shape[:2]
            msg = Frame(site_id=self.site_id, camera_id=camera_id, seq=seq, captured_ms=captured_ms,
                        width=w, height=h, jpeg=jpeg, gateway_id=self.settings.gateway_id,
                        stamps={"captured": captured_ms, "sent": contracts.now_ms()})
            await self._send(self.settings.topic(contracts.TOPIC_FRAMES), camera_id, contracts.encode(msg))
        self.counters.frames += 1
        self.counters.frame_bytes += len(jpeg)
        self.counters.per_camera[camera_id] = self.counters.per_camera.get(camera_id, 0) + 1
        return len(jpeg)

    async def send_reading(self, sensor_id: str, seq: int, captured_ms: float, value: float, unit: str = "") -> None:
        with self._tracer.start_as_current_span("reading") as span:
            span.set_attribute("sensor.id", sensor_id)
            msg = SensorReading(site_id=self.site_id, sensor_id=sensor_id, seq=seq, captured_ms=captured_ms,
                                value=value, unit=unit, gateway_id=self.settings.gateway_id,
                                stamps={"captured": captured_ms, "sent": contracts.now_ms()})
            await self._send(self.settings.topic(contracts.TOPIC_SENSORS), sensor_id, contracts.encode(msg))
        self.counters.readings += 1

    async def send_heartbeat(self, hb: Heartbeat, on_ack: Callable | None = None) -> None:
        """``on_ack(send_ms, ack_ms, record_metadata)`` when Kafka acknowledged it directly."""
        await self._send(self.settings.topic(contracts.TOPIC_HEARTBEATS), hb.gateway_id, contracts.encode(hb),
                         on_ack=on_ack, traced=False)
        self.counters.heartbeats += 1

    async def send_deadletter(self, *, source: str, key: str, original: bytes, reason: str, detail: str) -> None:
        """Input refused at the edge (a sensor reading that failed validation), with its original bytes."""
        msg = DeadLetter(source_topic=source, key=key.encode(), reason=reason, detail=detail[:2000],
                         service="gateway", at_ms=contracts.now_ms(), original=original[:contracts.MAX_SMALL_MESSAGE_BYTES // 2])
        await self._send(self.settings.topic(contracts.TOPIC_DEADLETTER), key, contracts.encode(msg), traced=False,
                         extra_headers=[("aimass-reason", reason.encode()), ("aimass-service", b"gateway"),
                                        ("aimass-source-topic", source.encode())])
        self.counters.deadletters += 1

    async def send_raw(self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]] = ()) -> None:
        """Send bytes as they are, with ``headers`` (tests and tools that need malformed input)."""
        await self._submit(topic, key, value, list(headers))

    async def _send(self, topic: str, key: str, value: bytes, *, on_ack: Callable | None = None, traced: bool = True,
                    extra_headers: list[tuple[str, bytes]] | None = None) -> None:
        headers = (telemetry.inject() if traced else []) + (extra_headers or [])
        await self._submit(topic, key.encode(), value, headers, on_ack)

    # ------------------------------------------------------------------ direct or spooled
    async def _submit(self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]],
                      on_ack: Callable | None = None) -> None:
        n = self._n
        self._n += 1
        msg = _Msg(topic, key, value, headers, time.monotonic(), on_ack)
        if self._spooling or self._producer is None:
            self._to_spool(n, msg, None)
            return
        self._inflight[n] = msg
        self._idle.clear()
        producer = self._producer
        send_ms = contracts.now_ms()
        try:
            fut = await asyncio.wait_for(producer.send(topic, value, key=key, headers=headers),
                                         self.settings.send_timeout_s)
        except Exception as exc:  # queue full, no metadata, broker gone, too large: spooled or counted
            self._failed(n, exc)
            return
        except asyncio.CancelledError:  # the caller is going away: keep the message, not a hole in the order
            self._failed(n, KafkaTimeoutError("cancelled while handing over"))
            raise
        fut.add_done_callback(lambda f: self._done(n, f, send_ms))

    def _done(self, n: int, fut: asyncio.Future, send_ms: float) -> None:
        if fut.cancelled() or fut.exception() is not None:
            self._failed(n, fut.exception() if not fut.cancelled() else KafkaTimeoutError("cancelled"))
            return
        msg = self._inflight.pop(n, None)
        if not self._inflight:
            self._idle.set()
        if msg is not None and msg.on_ack is not None:
            try:
                msg.on_ack(send_ms, contracts.now_ms(), fut.result())
            except Exception:
                log.exception("acknowledgement callback failed")

    def _failed(self, n: int, exc: BaseException | None) -> None:
        msg = self._inflight.pop(n, None)
        if not self._inflight:
            self._idle.set()
        if msg is None:
            return  # already failed over
        if isinstance(exc, PERMANENT):
            self.counters.send_errors += 1
            log.error("Kafka refused a message for %s for good (%s); dropped", msg.topic, type(exc).__name__)
            return
        self._to_spool(n, msg, exc)

    def _to_spool(self, n: int, msg: _Msg, exc: BaseException | None) -> None:
        if self.spool is None:
            self.counters.send_errors += 1
            log.warning("send to %s failed: %s", msg.topic, exc)
            return
        dropped = self.spool.put(n, msg.topic, msg.key, msg.value, msg.headers)
        self.counters.spooled += 1
        if dropped:
            log.warning("spool full (%d messages, %d bytes): dropped the %d oldest (%d dropped in all)",
                        len(self.spool), self.spool.bytes, dropped, self.spool.dropped)
        self._start_spooling(f"{type(exc).__name__}: {exc}" if exc is not None else "")

    def _start_spooling(self, reason: str) -> None:
        if self._spooling:
            return
        self._spooling = True
        log.warning("Kafka is not taking messages (%s): storing them in the spool %s until it is back",
                    reason or "unreachable", self.spool.folder)
        if self._producer is not None:
            # Fail over what the client still holds (its callbacks spool it, in its original order)
            # and stop using the client: a new one is made when Kafka answers again.
            old, self._producer = self._producer, None
            asyncio.get_running_loop().create_task(self._stop_producer(old))
        self._drainer = asyncio.get_running_loop().create_task(self._drain())

    async def _watch(self) -> None:
        """Fail over when the oldest message in flight waited longer than the send timeout (a client
        that cannot reach its broker holds messages without ever failing them)."""
        timeout = self.settings.send_timeout_s
        while not self._closing:
            await asyncio.sleep(min(1.0, timeout / 4))
            if self._inflight and self.spool is not None and not self._spooling:
                oldest = next(iter(self._inflight.values()))
                if time.monotonic() - oldest.t0 > timeout:
                    self._start_spooling(f"no acknowledgement within {timeout:g} s")

    async def _drain(self) -> None:
        backoff = Backoff(0.2, max(1.0, min(10.0, self.settings.send_timeout_s)))
        probe = True
        while not self._closing:
            await self._idle.wait()  # what was in flight has been acknowledged or spooled
            if self._producer is None and not await self._connect():
                await asyncio.sleep(backoff.next_delay())
                continue
            rows = self.spool.peek(1 if probe else DRAIN_BATCH, DRAIN_BATCH_BYTES)
            if not rows:
                self._spooling = False
                log.info("Kafka takes messages again: the spool is empty, sending directly")
                return
            ok, dropped = await self._send_rows(rows)
            done = [r.seq for r in rows[:ok + dropped]]
            self.spool.remove(done)
            self.counters.resent += ok
            if ok + dropped < len(rows):
                probe = True
                await asyncio.sleep(backoff.next_delay())
            else:
                if probe and ok:
                    log.info("Kafka answers again: sending the %d spooled messages in order", len(self.spool))
                probe = False
                backoff.reset()

    async def _send_rows(self, rows) -> tuple[int, int]:
        """Send spooled messages in order; returns (delivered, dropped for good) of the leading run
        that went through. What failed stays in the spool for the next attempt."""
        producer = self._producer
        futs = []
        for r in rows:
            try:
                futs.append(await asyncio.wait_for(producer.send(r.topic, r.value, key=r.key, headers=r.headers),
                                                   self.settings.send_timeout_s))
            except Exception as exc:
                futs.append(exc)
                break
        pending = [f for f in futs if isinstance(f, asyncio.Future)]
        if pending:
            await asyncio.wait(pending, timeout=self.settings.send_timeout_s)
        ok = dropped = 0
        for f in futs:
            exc = f if isinstance(f, BaseException) else (
                None if f.done() and not f.cancelled() and f.exception() is None else
                (f.exception() if f.done() and not f.cancelled() else KafkaTimeoutError("no acknowledgement")))
            if exc is None:
                ok += 1
            elif isinstance(exc, PERMANENT):
                dropped += 1
                self.counters.send_errors += 1
                log.error("Kafka refused a spooled message for good (%s); dropped", type(exc).__name__)
            else:
                log.debug("spooled message not delivered yet: %s", exc)
                break
        if ok + dropped < len(rows):
            # The client may hold the rest; a new one starts clean (no duplicates behind our back).
            self._producer = None
            await self._stop_producer(producer)
        return ok, dropped
