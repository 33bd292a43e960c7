"""What the bench feeds the pipeline: encoded frames of the demo scenes, detection messages with moving
objects, and cameras paced in real time. Everything is generated up front, so producing it costs the
measured workers nothing but the broker's time."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from aimass import contracts
from aimass.contracts import DetectedObject, Detections, Frame
from aimass.kafka import partition_for, start_producer
from aimass.settings import Settings
from aimass.site import Camera, Site

SITE_ID = "bench"


@dataclass(frozen=True)
class EncodedFrame:
    camera_id: str
    width: int
    height: int
    jpeg: bytes


def cameras(site: Site, n: int, spread: int = 0, scenes: Sequence[str] = ()) -> list[Camera]:
    """``n`` scripted cameras: the site's own, then copies of them under new ids (cam-gate-2, ...).

    With ``spread`` partitions, camera i's id (its message key) lands on partition i % spread, renaming
    a site camera to a copy where its own id does not: workers that split a topic's partitions then get
    equal shares of the cameras (the demo's four ids hash to partitions 0, 1, 0, 3 of four). ``scenes``
    (site camera ids) sets whose scene camera i shows, in turn; by default the site's order."""
    return [cam for _, cam in _placed(site, n, spread, scenes)]


def site_with(site: Site, n: int, spread: int = 0, scenes: Sequence[str] = ()) -> Site:
    """``site`` with ``cameras(site, n, spread, scenes)`` as its cameras, and each of them watched by the
    rules of the site camera it copies: the first copy that stands in for an original left out (renamed
    to land on another partition) takes over its rules, ids unchanged; any other gets copies of them,
    with ids ending ``:<camera id>``. The sensor and correlation rules stay as they are."""
    placed = _placed(site, n, spread, scenes)
    shown = {cam.id for _, cam in placed}
    rules = [r for r in site.rules if getattr(r, "camera", None) is None or r.camera in shown]
    owned = set(shown)  # site cameras whose rules some camera already holds under the rules' own ids
    for base, cam in placed:
        if cam.id == base.id:
            continue
        camera_rules = [r for r in site.rules if getattr(r, "camera", None) == base.id]
        if base.id in owned:  # copies, under ids of their own
            rules += [r.model_copy(update={"camera": cam.id, "id": f"{r.id}:{cam.id}"}) for r in camera_rules]
        else:  # it stands in for its original: the rules as they are
            owned.add(base.id)
            rules += [r.model_copy(update={"camera": cam.id}) for r in camera_rules]
    return site.model_copy(update={"cameras": [cam for _, cam in placed], "rules": rules})


def _placed(site: Site, n: int, spread: int, scenes: Sequence[str]) -> list[tuple[Camera, Camera]]:
    """(the site camera whose scene it shows, the camera) for ``cameras``."""
    scripted = [site.camera(s) for s in scenes] if scenes else [c for c in site.cameras if c.scene is not None]
    if not all(scripted):
        raise ValueError(f"scenes {list(scenes)}: not all of them are cameras of site {site.site.id}")
    out: list[tuple[Camera, Camera]] = []
    for i in range(n):
        base = scripted[i % len(scripted)]
        ids = (base.id if k == 1 else f"{base.id}-{k}" for k in itertools.count(i // len(scripted) + 1))
        if spread:
            taken = {c.id for _, c in out}
            ids = (c for c in ids if c not in taken and partition_for(c.encode(), spread) == i % spread)
        cam_id = next(ids)
        out.append((base, base if cam_id == base.id else base.model_copy(update={"id": cam_id})))
    return out


def render(cams: Sequence[Camera], frames_per_camera: int, fps: float = 5.0, quality: int = 80) -> dict[str, list[EncodedFrame]]:
    """Each camera's scene at ``fps`` for ``frames_per_camera`` frames, JPEG-encoded as the gateway does.
    Copies of a camera (see ``cameras``) share its frames: a scene renders the same whatever the id, and
    rendering is ~20 ms a frame here, seconds for the scaling section's many cameras."""
    from aimass_gateway.producer import encode_jpeg
    from aimass_gateway.scene import SceneRenderer

    out: dict[str, list[EncodedFrame]] = {}
    rendered: dict[str, list[EncodedFrame]] = {}  # the scene and size, as JSON -> its frames
    for cam in cams:
        scene = cam.model_dump_json(include={"scene", "width", "height"})
        if scene not in rendered:
            renderer = SceneRenderer(cam)
            frames = []
            for k in range(frames_per_camera):
                image, _ = renderer.render(k / fps)
                frames.append(EncodedFrame(cam.id, image.shape[1], image.shape[0], encode_jpeg(image, quality)))
            rendered[scene] = frames
        out[cam.id] = [replace(f, camera_id=cam.id) for f in rendered[scene]]
    return out


def interleave(frames: dict[str, list[EncodedFrame]]) -> list[tuple[int, EncodedFrame]]:
    """(seq, frame) in the order a gateway sends them: round robin over cameras."""
    longest = max(len(v) for v in frames.values())
    return [(k, v[k]) for k in range(longest) for v in frames.values() if k < len(v)]


def frame_message(f: EncodedFrame, seq: int, captured_ms: float, site_id: str = SITE_ID) -> bytes:
    return contracts.encode(Frame(site_id=site_id, camera_id=f.camera_id, seq=seq, captured_ms=captured_ms,
                                  width=f.width, height=f.height, jpeg=f.jpeg,
                                  stamps={"captured": captured_ms, "sent": contracts.now_ms()}))


def detection_messages(camera_ids: Sequence[str], per_camera: int, objects: int = 3, fps: float = 5.0,
                       site_id: str = SITE_ID, seed: int = 0) -> list[tuple[bytes, bytes]]:
    """(key, value) detection messages as the detector sends them: ``objects`` tracked objects per
    frame walking across each camera's view (so zones, lines and dwell rules have work to do)."""
    rng = random.Random(seed)
    t0 = contracts.now_ms() - per_camera / fps * 1000  # in the recent past: nothing is stale
    out = []
    starts = {c: [(rng.random(), rng.random(), rng.uniform(-0.02, 0.02), rng.uniform(-0.01, 0.01))
                  for _ in range(objects)] for c in camera_ids}
    for k in range(per_camera):
        t = t0 + k * 1000 / fps
        for cam in camera_ids:
            objs = []
            for j, (x, y, vx, vy) in enumerate(starts[cam]):
                cx, cy = (x + vx * k) % 1.0, (y + vy * k) % 1.0
                objs.append(DetectedObject("person" if j % 3 else "vehicle", 0 if j % 3 else 2, 0.8,
                                           max(0.0, cx - 0.05), max(0.0, cy - 0.1), min(1.0, cx + 0.05),
                                           min(1.0, cy + 0.1), track_id=1000 * (j + 1)))
            d = Detections(site_id=site_id, camera_id=cam, seq=k, captured_ms=t, width=512, height=384,
                           jpeg_bytes=30000, model_name="bench", model_version="1", objects=objs, batch_size=4,
                           stamps={"captured": t, "sent": t + 5, "detector_in": t + 10, "decoded": t + 12,
                                   "inferred": t + 30, "detector_out": t + 31})
            out.append((cam.encode(), contracts.encode(d)))
    return out


def traceparent(i: int) -> bytes:
    """A W3C trace context of a trace of its own (the i-th), as every message of the pipeline carries."""
    return f"00-{i + 1:032x}-{i + 1:016x}-01".encode()


async def produce(settings: Settings, topic: str, messages: Sequence[tuple[bytes, bytes]],
                  traced: bool = False) -> float:
    """Send ``messages`` (key, value) to ``topic`` as fast as the broker takes them; returns seconds.
    Each key goes to the partition the default partitioner gives it (``partition_for``), as the
    workers' own producers would put it, in order; messages are appended to one batch per partition
    and sent a full batch at a time: ~3x as fast as one ``send`` per message for detections (180-210k
    against 58-61k messages/s here; frames x1.3-1.5), which keeps short the backlog that held workers
    wait through (``Namespace.held``). ``traced``: each with a ``traceparent`` header of its own, as the
    gateway starts one per frame and each stage passes it on."""
    producer = await start_producer(settings)
    t = time.perf_counter()
    try:
        name = settings.topic(topic)
        partitions = len(await producer.partitions_for(name))
        batches: dict[int, object] = {}
        pending = []
        for i, (key, value) in enumerate(messages):
            p = partition_for(key, partitions)
            batch = batches.get(p)
            headers = [("traceparent", traceparent(i))] if traced else []
            if batch is None or batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                if batch is not None:  # full: sent, and the message starts the next one
                    pending.append(await producer.send_batch(batch, name, partition=p))
                batch = batches[p] = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                    raise ValueError(f"a {len(value)}-byte message does not fit an empty producer batch")
        for p, batch in batches.items():
            pending.append(await producer.send_batch(batch, name, partition=p))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - t


@dataclass
class Paced:
    sent: int  # frames
    behind_s: float  # how late the cameras' last frames went out against their clocks (~0: kept pace)


async def paced_cameras(settings: Settings, frames: dict[str, list[EncodedFrame]], fps: float, seconds: float,
                        site_id: str = SITE_ID) -> Paced:
    """Send each camera's frames (looped) at ``fps`` for ``seconds``, stamped with the capture time
    they are sent at, as a live gateway would. Where this process cannot send as fast as the cameras
    ask (many cameras at a GPU's rates), ``behind_s`` says by how much, so nobody reads the sender's
    limit as the worker's."""
    producer = await start_producer(settings, linger_ms=0)
    sent, behind = 0, 0.0
    try:
        async def camera(cam_id: str, offset: float) -> None:
            nonlocal sent, behind
            loop = asyncio.get_running_loop()
            start = loop.time() + offset
            k, late = 0, 0.0
            while k / fps < seconds:
                delay = start + k / fps - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)  # the camera's own frame clock, not a readiness wait
                late = loop.time() - (start + k / fps)
                f = frames[cam_id][k % len(frames[cam_id])]
                await producer.send(settings.topic(contracts.TOPIC_FRAMES), key=cam_id.encode(),
                                    value=frame_message(f, k, contracts.now_ms(), site_id))
                sent += 1
                k += 1
            behind = max(behind, late)  # its last frame's: a hiccup caught up with is no lag
        ids = list(frames)
        await asyncio.gather(*[camera(c, i / fps / len(ids)) for i, c in enumerate(ids)])
        await producer.flush()
    finally:
        await producer.stop()
    return Paced(sent, behind)
