"""The detector worker: consumes ``frames``, batches them across cameras, runs the ONNX model,
tracks objects per camera, produces one ``detections`` message per frame.

Decode and inference run in one worker thread (ONNX Runtime and simplejpeg release the GIL), so the
event loop keeps heartbeating while a batch runs. A batch's output messages are delivered before the
batch's input offsets are acknowledged: at least once, and a crash replays the batch. Each camera's
tracker is stored in a state topic after its detections went out (aimass.state), so a restarted or
rebalanced worker resumes the tracks and skips frames whose detections were already sent.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import faust
import numpy as np
from opentelemetry import trace

from aimass import contracts, telemetry
from aimass.contracts import ContractError, Detections, Frame
from aimass.kafka import DeadLetterSender, make_app, raw_topic
from aimass.settings import DetectorSettings
from aimass.state import StateTopic
from aimass_detector.engine import Detector
from aimass_detector.model import load_spec
from aimass_detector.preprocess import BadImage
from aimass_detector.tracker import Trackers

log = logging.getLogger("aimass.detector")
SERVICE = "detector"


@dataclass
class Counters:
    frames: int = 0
    batches: int = 0
    objects: int = 0
    stale: int = 0
    replayed: int = 0  # redelivered frames whose detections were already sent
    dead: int = 0


def _decode_all(det: Detector, frames: list[Frame]) -> tuple[list[np.ndarray | None], list[Exception | None]]:
    images: list[np.ndarray | None] = []
    errors: list[Exception | None] = []
    for f in frames:
        try:
            images.append(det.decode_jpeg(f.jpeg))
            errors.append(None)
        except BadImage as exc:
            images.append(None)
            errors.append(exc)
    return images, errors


def build_app(settings: DetectorSettings, detector: Detector | None = None) -> faust.App:
    if detector is None:
        load_spec(settings.model_dir)  # a bad model folder fails here, before the worker joins its group
    app = make_app(SERVICE, settings)
    frames_topic = raw_topic(app, settings, contracts.TOPIC_FRAMES)
    out_topic = raw_topic(app, settings, contracts.TOPIC_DETECTIONS)
    dead = DeadLetterSender(raw_topic(app, settings, contracts.TOPIC_DEADLETTER), SERVICE)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
    counters = Counters()
    trackers = Trackers()
    tracks = StateTopic(app, settings, contracts.TOPIC_STATE_TRACKS, contracts.TOPIC_FRAMES, settings.partitions_frames)
    state: dict[str, Detector] = {}
    tracer = telemetry.tracer("aimass.detector")

    @app.task
    async def load_model() -> None:
        # Loaded after the worker started, in the inference thread, so a slow load does not block
        # the consumer's group join.
        loop = asyncio.get_running_loop()
        m = detector
        if m is None:
            providers = [p for p in settings.providers.split(",") if p] or None
            m = await loop.run_in_executor(pool, lambda: Detector.from_folder(
                settings.model_dir, providers=providers, threads=settings.threads or None))
        await loop.run_in_executor(pool, m.warmup)
        state["model"] = m
        log.info("model %s v%s loaded from %s on providers %s; batch ≤ %d, wait ≤ %.0f ms",
                 m.name, m.version, settings.model_dir, m.providers, settings.max_batch, settings.max_wait_ms)

    async def model() -> Detector:
        while "model" not in state:
            await asyncio.sleep(0.05)  # polls the load task above; the stream waits, nothing is lost
        return state["model"]

    @app.on_partitions_assigned.connect
    async def on_assigned(sender, assigned, **kwargs) -> None:
        for key in tracks.keys_in(tracks.assigned(assigned)):
            trackers.forget(key.decode())  # another worker owns this camera now

    @app.agent(frames_topic)
    async def detect(stream):
        loop = asyncio.get_running_loop()
        async for events in stream.take_events(settings.max_batch, within=settings.max_wait_ms / 1000.0):
            det = await model()
            received = contracts.now_ms()
            frames: list[Frame] = []
            ctxs = []
            for ev in events:
                m = ev.message
                try:
                    frame = contracts.decode(ev.value, Frame)
                except ContractError as exc:
                    counters.dead += 1
                    await dead.send(source_topic=m.topic, original=ev.value, key=m.key, error=exc,
                                    partition=m.partition, offset=m.offset)
                    continue
                restored = await tracks.ensure(m.partition)
                for key, data in (restored or {}).items():
                    trackers.restore(key.decode(), data)
                if trackers.handled(frame.camera_id, frame.captured_ms, frame.seq):
                    counters.replayed += 1
                    continue
                if received - frame.captured_ms > settings.max_frame_age_s * 1000:
                    counters.stale += 1
                    continue
                frames.append(frame)
                ctxs.append((telemetry.extract(m.headers), m))
            if not frames:
                continue

            def run_batch():
                images, errors = _decode_all(det, frames)
                decoded = contracts.now_ms()
                ok = [i for i, img in enumerate(images) if img is not None]
                results = det.detect([images[i] for i in ok]) if ok else []
                return decoded, errors, dict(zip(ok, results))

            with tracer.start_as_current_span("inference", links=[trace.Link(trace.get_current_span(c).get_span_context()) for c, _ in ctxs]) as span:
                span.set_attribute("batch.size", len(frames))
                decoded, errors, results = await loop.run_in_executor(pool, run_batch)
            inferred = contracts.now_ms()
            counters.batches += 1
            pending = []
            for i, frame in enumerate(frames):
                ctx, m = ctxs[i]
                if errors[i] is not None:
                    counters.dead += 1
                    await dead.send(source_topic=m.topic, original=contracts.encode(frame), key=m.key,
                                    error=ContractError("bad_jpeg", f"camera {frame.camera_id} seq {frame.seq}: {errors[i]}"),
                                    partition=m.partition, offset=m.offset)
                    continue
                # Frames of one camera come from one partition, in order, so tracking here is sequential.
                objects = trackers.update(frame.camera_id, results[i], frame.captured_ms, frame.seq)
                counters.frames += 1
                counters.objects += len(objects)
                stamps = dict(frame.stamps)
                stamps.update(detector_in=received, decoded=decoded, inferred=inferred, detector_out=contracts.now_ms())
                out = Detections(site_id=frame.site_id, camera_id=frame.camera_id, seq=frame.seq,
                                 captured_ms=frame.captured_ms, width=frame.width, height=frame.height,
                                 jpeg_bytes=len(frame.jpeg),
                                 model_name=det.name, model_version=det.version, objects=objects,
                                 batch_size=len(frames), stamps=stamps)
                with tracer.start_as_current_span("detect", context=ctx):
                    headers = dict(telemetry.inject())
                pending.append(await out_topic.send(key=frame.camera_id.encode(), value=contracts.encode(out),
                                                    headers=headers, force=True))
            # Delivered before the batch's offsets are acknowledged (when this loop turns), and before
            # the trackers that reflect them are stored.
            await asyncio.gather(*pending)
            for camera_id, partition in {f.camera_id: m.partition for f, (_, m) in zip(frames, ctxs)}.items():
                if camera_id in trackers.cameras:
                    tracks.save(partition, camera_id.encode(), trackers.cameras[camera_id].to_state())

    @app.timer(10.0)
    async def report() -> None:
        log.info("detector: %d frames in %d batches, %d objects, %d stale skipped, %d already handled, %d dead letters",
                 counters.frames, counters.batches, counters.objects, counters.stale, counters.replayed, counters.dead)

    app.aimass_counters = counters  # for tests
    app.aimass_ready = lambda: "model" in state
    return app
