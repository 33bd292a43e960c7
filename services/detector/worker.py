"""The detector worker: consumes ``frames``, batches them across cameras, runs each frame through the
model version its camera is routed to (serving.py), tracks objects per camera, produces one
``detections`` message per frame (and ``shadow`` results where a shadow model runs).

A batch's JPEG decode and input tensors, and its outputs' decoding, run on a prepare thread (one on
the CPU, several on a GPU: serving.prepare_threads); models run on inference threads that do nothing
else, one per session of a model version (serving.session_layout: on the CPU one single-threaded
session per core), so while they run batches the next is prepared
(ONNX Runtime, simplejpeg and OpenCV release the GIL, and the event loop keeps heartbeating); new
model versions load in another thread beside them. A batch's output messages are delivered before
the batch's input offsets are acknowledged: at least once, and a crash replays the batch. Batches
overlap: the next ones run on the inference threads while this one's outputs are tracked, sent and
delivered, so the model never waits on Kafka.
Each camera's tracker is stored in a state topic after its detections went out (aimass.state), so a
restarted or rebalanced worker resumes the tracks and skips frames whose detections were already sent.

Model routing arrives on the models control topic (aimass.routing): each revision is loaded and
warmed before it is installed between two batches; a revision that fails to load is refused and the
old one keeps serving. A model that fails at run time is withdrawn from the routing (its canary ends,
or its group rolls back), the new revision is published for every worker, and the frames it left are
served again by the fallback.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import faust
from opentelemetry import trace

from aimass import contracts, control, metrics, telemetry
from aimass import routing as R
from aimass.contracts import ContractError, Detections, Frame, ModelEvent, ModelRouting, ShadowResult
from aimass.kafka import DeadLetterSender, make_app, output_topic, raw_topic
from aimass.model_store import ModelStore
from aimass.settings import DetectorSettings
from aimass.state import StateTopic
from aimass_detector.model import ModelError, load_spec
from aimass_detector.preprocess import opencv_on_calling_thread
from aimass_detector.serving import (ModelSet, agreement, detector_loader, finish_batch, prepare_batch, prepare_threads,
                                     resolver, run_batch, serve_batch, session_layout)
from aimass_detector.tracker import Trackers

log = logging.getLogger("aimass.detector")
SERVICE = "detector"
MAX_RERUNS = 3  # fallbacks tried for one batch before its frames are dead-lettered


@dataclass
class Counters:
    frames: int = 0
    batches: int = 0
    objects: int = 0
    stale: int = 0
    replayed: int = 0  # redelivered frames whose detections were already sent
    dead: int = 0
    run_failures: int = 0
    shadow_frames: int = 0


def build_app(settings: DetectorSettings) -> faust.App:
    default = load_spec(settings.model_dir)  # a bad model folder fails here, before the worker joins its group
    app = make_app(SERVICE, settings)
    frames_topic = raw_topic(app, settings, contracts.TOPIC_FRAMES)
    out_topic = output_topic(app, settings, contracts.TOPIC_DETECTIONS)
    shadow_topic = output_topic(app, settings, contracts.TOPIC_SHADOW)
    events_topic = output_topic(app, settings, contracts.TOPIC_MODEL_EVENTS)
    dead = DeadLetterSender(output_topic(app, settings, contracts.TOPIC_DEADLETTER), SERVICE)
    sessions = session_layout(settings)[0]
    # Runs models, nothing else: one thread per session, so as many batches run at once.
    pool = ThreadPoolExecutor(max_workers=sessions, thread_name_prefix="inference")
    preparers = prepare_threads(settings)
    opencv_on_calling_thread()
    # Before and after a run: as many batches prepared (or their outputs decoded) at once as threads.
    preparer = ThreadPoolExecutor(max_workers=preparers, thread_name_prefix="prepare")
    loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-loader")
    models = ModelSet(resolver(ModelStore.from_settings(settings), settings.model_dir), detector_loader(settings),
                      warm_batches=sorted({1, settings.max_batch}))
    counters = Counters()
    trackers = Trackers()
    tracks = StateTopic(app, settings, contracts.TOPIC_STATE_TRACKS, contracts.TOPIC_FRAMES, settings.partitions_frames)
    routed = asyncio.Event()  # set once a routing revision is installed
    switching = asyncio.Lock()  # one routing change at a time (control topic or a run failure)
    worker_id = f"{socket.gethostname()}:{os.getpid()}"
    tracer = telemetry.tracer("aimass.detector")
    m_ = metrics.instruments()

    async def report(event: str, model: str, detail: str = "", value: float = 0.0, revision: int = -1) -> None:
        (log.warning if event in ("load_failed", "switch_refused", "run_failed", "rolled_back") else log.info)(
            "model %s: %s%s", model, event, f": {detail}" if detail else "")
        msg = ModelEvent(at_ms=contracts.now_ms(), event=event, model=model, service=SERVICE, worker=worker_id,
                         revision=revision, detail=detail[:2000], value=value)
        await events_topic.send(model.encode(), contracts.encode(msg))

    async def switch(routing: ModelRouting, executor) -> bool:
        """Load what ``routing`` needs beside the serving models, then install it (between batches:
        the batch loop plans each batch with one revision). False, and nothing changed, if a load failed."""
        loop = asyncio.get_running_loop()
        loaded = {}
        for model in models.missing(routing):
            try:
                det, seconds = await loop.run_in_executor(executor, models.load, model)
            except (ModelError, OSError) as exc:
                await report("load_failed", model, str(exc), revision=routing.revision)
                await report("switch_refused", model, f"routing revision {routing.revision} refused; revision "
                             f"{models.routing.revision if models.routing else '-'} keeps serving", revision=routing.revision)
                return False
            loaded[model] = det
            how = (f"on {', '.join(det.providers)}, {det.sessions} session(s), "
                   f"IO binding {'on' if det.io_binding else 'off'}, {preparers} prepare thread(s)")
            await report("loaded", model, how, value=seconds, revision=routing.revision)
        dropped = models.install(routing, loaded)
        routed.set()
        log.info("routing revision %d installed (%s); unloaded: %s", routing.revision, routing.reason or routing.by,
                 ", ".join(dropped) or "none")
        for model in sorted(R.models_in_use(routing)):
            await report("switched", model, f"revision {routing.revision}: {routing.reason}", revision=routing.revision)
        return True

    # Revisions read while the control topic is replayed at start: only the newest that loads is installed
    # (applied one by one, the worker served frames with a stale revision while a later one loaded). None
    # once caught up.
    backlog: list[ModelRouting] | None = []

    async def on_routing(value: bytes, offset: int) -> None:
        try:
            routing = contracts.decode(value, ModelRouting)
        except ContractError as exc:
            await dead.send(source_topic=settings.topic(contracts.TOPIC_CONTROL_MODELS), original=value, key=b"routing",
                            error=exc, partition=0, offset=offset)
            return
        if backlog is not None:
            backlog.append(routing)
            return
        async with switching:
            if models.routing is None or routing.revision > models.routing.revision:
                await switch(routing, loader)

    @app.task
    async def follow_routing() -> None:
        nonlocal backlog
        caught_up = asyncio.Event()
        follower = asyncio.ensure_future(control.follow(settings, contracts.TOPIC_CONTROL_MODELS, on_routing, caught_up))
        await caught_up.wait()
        async with switching:
            published, backlog = backlog, None
            for routing in sorted(published, key=lambda r: r.revision, reverse=True):
                if await switch(routing, loader):
                    break  # the newest revision whose models load; a refused one said why (model events)
            if models.routing is None:  # nothing published yet: the configured model folder serves everything
                first = R.initial(R.ref(default.name, default.version), by=f"detector {worker_id}",
                                  reason=f"model_dir {settings.model_dir}")
                if not await switch(first, loader):
                    log.error("the configured model %s cannot serve; fix model_dir or publish a routing", settings.model_dir)
        await follower

    async def withdraw(model: str, error: str) -> bool:
        """Take a model that failed at run time out of the routing, here at once and for every worker."""
        counters.run_failures += 1
        await report("run_failed", model, error, revision=models.routing.revision)
        async with switching:
            if model not in R.models_in_use(models.routing):
                return True  # another failure or a newer revision already took it out
            try:
                fallback = R.withdraw(models.routing, model, by=f"detector {worker_id}",
                                      reason=f"{model} failed at run time: {error[:200]}")
            except R.RoutingError as exc:
                await report("switch_refused", model, f"cannot withdraw it: {exc}")
                return False
            if not await switch(fallback, pool):
                return False
        await control.publish(settings, contracts.TOPIC_CONTROL_MODELS, b"routing", contracts.encode(fallback))
        await report("rolled_back", model, fallback.reason, revision=fallback.revision)
        return True

    @app.on_partitions_assigned.connect
    async def on_assigned(sender, assigned, **kwargs) -> None:
        for key in tracks.keys_in(tracks.assigned(assigned)):
            trackers.forget(key.decode())  # another worker owns this camera now

    async def admit(events) -> tuple[list[Frame], list]:
        """Decode a batch's events; dead-letter bad ones; skip redelivered and stale frames."""
        received = contracts.now_ms()
        recording = telemetry.recording()
        frames, ctxs = [], []
        for ev in events:
            m = ev.message
            frame = await dead.decoded(ev, Frame)
            if frame is None:
                counters.dead += 1
                continue
            restored = await tracks.ensure(m.partition)
            for key, data in (restored or {}).items():
                trackers.restore(key.decode(), data)
            if trackers.handled(frame.camera_id, frame.captured_ms, frame.seq):
                counters.replayed += 1
                continue
            if received - frame.captured_ms > settings.max_frame_age_s * 1000:
                counters.stale += 1
                m_.stale_frames.add(1, {"camera": frame.camera_id})
                continue
            frame.stamps["detector_in"] = received
            frames.append(frame)
            # The trace context is read only where spans are made; otherwise its header is passed on as it came.
            ctxs.append((telemetry.extract(m.headers) if recording else None, m))
        return frames, ctxs

    async def infer(frames: list[Frame], ctxs: list):
        """Start the batch: prepared on a prepare thread, run on an inference thread, its outputs
        decoded on a prepare thread (batches may overtake each other there; ``finish`` puts them back in
        order); returns (its batch span, the future of its BatchResult)."""
        loop = asyncio.get_running_loop()
        serve, shadow = models.plan(frames)
        serving = dict(models.models)  # the revision this batch was planned with, whatever is installed next
        if telemetry.recording():
            batch_span = tracer.start_span("inference batch", links=[
                trace.Link(trace.get_current_span(c).get_span_context()) for c, _ in ctxs])
            batch_span.set_attribute("batch.size", len(frames))
        else:
            batch_span = trace.INVALID_SPAN  # nobody sees it; using and ending it cost nothing

        async def run():
            batch = await loop.run_in_executor(preparer, prepare_batch, serving, serve, shadow, frames)
            await loop.run_in_executor(pool, run_batch, serving, batch)
            return await loop.run_in_executor(preparer, finish_batch, serving, batch)
        return batch_span, asyncio.ensure_future(run())

    async def finish(before: asyncio.Future | None, events, frames: list[Frame], ctxs: list, batch_span,
                     future) -> None:
        """Wait for the batch's runs (re-running frames of a model that failed), track, send, wait for
        delivery, store the trackers, then acknowledge the batch's input. Batches finish in order:
        each waits for the one before (``before``) first. A batch that fails is not acknowledged."""
        loop = asyncio.get_running_loop()
        if before is not None:
            await before
        if future is not None:
            with trace.use_span(batch_span, end_on_exit=True):
                result = await future
                for attempt in range(MAX_RERUNS):
                    if not result.failed:
                        break
                    for model, error in result.failed.items():
                        await withdraw(model, error)
                    if not result.unserved:
                        break
                    rerun = [frames[i] for i in result.unserved]
                    serve2, _ = models.plan(rerun)
                    again = await loop.run_in_executor(pool, serve_batch, dict(models.models),
                                                       {m: [result.unserved[j] for j in idx] for m, idx in serve2.items()},
                                                       {}, frames, result.images)
                    for i in result.unserved:
                        result.served[i] = again.served[i]
                    result.failed, result.unserved = again.failed, again.unserved
            await deliver(frames, ctxs, result, batch_span)
        # Only now, after its outputs were delivered, is the batch's input acknowledged (at least once).
        for ev in events:
            if ev.ack():  # the reference ``detect`` added; take_events dropped its own when the loop turned
                app.sensors.on_message_out(ev.message.tp, ev.message.offset, ev.message)

    async def deliver(frames: list[Frame], ctxs: list, result, batch_span) -> None:
        """Track each served frame, send its detections (and shadow results), wait until delivered, then
        store the trackers that reflect them."""
        counters.batches += 1
        runs = {(sv.model, sv.decoded_ms, sv.inferred_ms, sv.batch_size) for sv in result.served if sv.objects is not None}
        for model, decoded_ms, inferred_ms, size in runs:
            m_.inference_ms.record(inferred_ms - decoded_ms, {"model": model})
            m_.batch_size.record(size, {"model": model})
        for model in result.failed:
            m_.model_failures.add(1, {"model": model})
        # Spans for this batch's frames only where it has a span of its own (infer decided, once a batch).
        recording = batch_span.get_span_context().is_valid
        batch_link = [trace.Link(batch_span.get_span_context())] if recording else []
        pending = []
        for i, frame in enumerate(frames):
            ctx, m = ctxs[i]
            served = result.served[i]
            if served.bad_image is not None or served.objects is None:
                counters.dead += 1
                error = (ContractError("bad_jpeg", f"camera {frame.camera_id} seq {frame.seq}: {served.bad_image}")
                         if served.bad_image is not None else
                         ContractError("model_failed", f"camera {frame.camera_id} seq {frame.seq}: no model could "
                                                       f"serve it ({'; '.join(result.failed.values())})"))
                await dead.send(source_topic=m.topic, original=contracts.encode(frame), key=m.key, error=error,
                                partition=m.partition, offset=m.offset)
                continue
            # Frames of one camera come from one partition, in order, so tracking here is sequential.
            objects = trackers.update(frame.camera_id, served.objects, frame.captured_ms, frame.seq)
            counters.frames += 1
            counters.objects += len(objects)
            m_.frames.add(1, {"camera": frame.camera_id, "model": served.model})
            stamps = dict(frame.stamps)
            stamps.update(decoded=served.decoded_ms, inferred=served.inferred_ms, detector_out=contracts.now_ms())
            if recording:
                # This frame's own spans, timed by its stamps: detect > decode, inference (linked to the batch).
                detect_span = telemetry.past_span(tracer, "detect", ctx, stamps["detector_in"], stamps["detector_out"],
                                                  {"camera.id": frame.camera_id, "frame.seq": frame.seq,
                                                   "model": served.model, "objects": len(objects)})
                telemetry.past_span(tracer, "decode", detect_span, stamps["detector_in"], served.decoded_ms)
                telemetry.past_span(tracer, "inference", detect_span, served.decoded_ms, served.inferred_ms,
                                    {"batch.size": served.batch_size, "model": served.model}, links=batch_link)
                headers = dict(telemetry.inject_span(detect_span))
            else:
                # No spans that nobody sees (three took ~36 µs a frame): the frame's trace context
                # travels on as the gateway sent it (0.5 µs; extracting and injecting it again took ~8),
                # so a later stage that exports parents its spans on the gateway's.
                headers = dict(telemetry.carried(m.headers))
            name, version = R.split_ref(served.model)
            out = Detections(site_id=frame.site_id, camera_id=frame.camera_id, seq=frame.seq,
                             captured_ms=frame.captured_ms, width=frame.width, height=frame.height,
                             jpeg_bytes=len(frame.jpeg), model_name=name, model_version=version, objects=objects,
                             batch_size=served.batch_size, stamps=stamps)
            pending.append(await out_topic.send(frame.camera_id.encode(), contracts.encode(out), headers=headers))
        for run in result.shadows:
            for i, shadow_objects in zip(run.indexes, run.objects):
                frame, served = frames[i], result.served[i]
                matched, mean_iou = agreement(served.objects or [], shadow_objects)
                msg = ShadowResult(site_id=frame.site_id, camera_id=frame.camera_id, seq=frame.seq,
                                   captured_ms=frame.captured_ms, model=served.model, shadow=run.model,
                                   objects=served.objects or [], shadow_objects=shadow_objects, matched=matched,
                                   mean_iou=mean_iou, shadow_ms=run.seconds * 1000)
                counters.shadow_frames += 1
                pending.append(await shadow_topic.send(frame.camera_id.encode(), contracts.encode(msg)))
        # Delivered before the batch's input is acknowledged (``finish``), and before the trackers that
        # reflect them are stored.
        await asyncio.gather(*pending)
        for camera_id, partition in {f.camera_id: m.partition for f, (_, m) in zip(frames, ctxs)}.items():
            if camera_id in trackers.cameras:
                tracks.save(partition, camera_id.encode(), trackers.cameras[camera_id].to_state())

    @app.agent(frames_topic)
    async def detect(stream):
        """Batches overlap: the next batches run on the inference threads while this one's outputs are
        tracked, sent and delivered (``finish``, in batch order), so the model waits on no Kafka round
        trip. Each event holds an extra reference until its batch finished, so ``take_events``
        acknowledging it when the loop turns does not commit its offset early."""
        await routed.wait()
        in_flight: deque[asyncio.Task] = deque()
        async for events in stream.take_events(settings.max_batch, within=settings.max_wait_ms / 1000.0):
            if any(not tracks.loaded(ev.message.partition) for ev in events):
                # A partition's stored trackers are about to be restored: let batches in flight finish first.
                while in_flight:
                    await in_flight.popleft()
            for ev in events:
                ev.message.incref()
            frames, ctxs = await admit(events)
            batch_span, future = await infer(frames, ctxs) if frames else (None, None)
            in_flight.append(asyncio.ensure_future(
                finish(in_flight[-1] if in_flight else None, events, frames, ctxs, batch_span, future)))
            # One batch per session running and one per prepare thread being prepared, at most; popping
            # surfaces a failed batch's error.
            while len(in_flight) > sessions + preparers or (in_flight and in_flight[0].done()):
                await in_flight.popleft()

    @app.timer(10.0)
    async def log_counters() -> None:
        log.info("detector: %d frames in %d batches, %d objects, %d stale skipped, %d already handled, %d dead letters, "
                 "%d model run failures, %d shadow frames; serving revision %s",
                 counters.frames, counters.batches, counters.objects, counters.stale, counters.replayed, counters.dead,
                 counters.run_failures, counters.shadow_frames, models.routing.revision if models.routing else "-")

    app.aimass_counters = counters  # for tests
    app.aimass_ready = routed.is_set
    return app
