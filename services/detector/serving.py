"""The models a detector worker serves, and one batch of frames run through them.

``ModelSet`` holds the loaded model versions and the routing revision they serve (aimass.routing).
A new revision is loaded and warmed beside the old one (``load``, in a loader thread, while batches
go on) and installed in one assignment between batches (``install``): each frame is served by exactly
one revision. A revision whose models do not all load is refused as a whole and the old one keeps
serving.

A batch goes through three stages, each model's share of it at once: ``prepare_batch`` (JPEG decode
and input tensors, on a prepare thread), ``run_batch`` (the model runs, on an inference thread) and
``finish_batch`` (outputs to objects, on a prepare thread again), so the inference threads only run
models: while they run batches, the next are prepared and the last ones decoded. A frame goes to the
model its camera's group routes it to (active or canary), and, where the group has a shadow, also to
the shadow, whose results are only compared. A model that raises is reported in the result
(``failed``) with the frames it left unserved, so the worker can withdraw it from the routing and
serve them with the fallback: no frame is lost and none is served twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aimass import routing as R
from aimass.contracts import DetectedObject, Frame, ModelRouting, now_ms
from aimass.processes import usable_cores
from aimass_detector.engine import Detector, DetectorPool
from aimass_detector.model import GpuOptions, ModelError, choose_providers, load_spec
from aimass_detector.preprocess import BadImage
from aimass_detector.tracker import iou_matrix

Resolve = Callable[[str], Path]  # model ref -> a model folder
Model = Detector | DetectorPool  # what serves a model version: both detect, warm up and name themselves


# Auto layout on the CPU: one session per core, at most this many. Each runs a whole batch, so more
# sessions means more batches in flight and each frame waiting longer for a single-threaded run.
MAX_AUTO_SESSIONS = 4
MAX_AUTO_PREPARE = 4  # prepare threads a GPU worker takes by itself


def requested_providers(settings) -> list[str] | None:
    """The ``providers`` setting as a list; None (empty setting) for the best available."""
    return [p for p in settings.providers.split(",") if p] or None


def on_gpu(settings) -> bool:
    """Whether the worker's sessions run on a GPU provider (CUDA or TensorRT) under these settings."""
    return choose_providers(requested_providers(settings))[0] != "CPUExecutionProvider"


def session_layout(settings) -> tuple[int, int | None]:
    """(sessions per model version, intra-op threads per session) for the worker: ``detector_sessions``
    and ``threads`` where set; 0 (the default) is auto. On a GPU: one session, ONNX Runtime's threads.
    On the CPU: one session per core (up to MAX_AUTO_SESSIONS), and the cores shared out among the
    sessions, so 2 cores run 2 single-threaded sessions. Measured (bench/README.md): one session's
    threads wait for each other at every operator, so when the worker's JPEG decoding, event loop or
    broker takes a core from one of them, all wait; single-threaded sessions lose only the time taken."""
    sessions, threads = settings.detector_sessions, settings.threads or None
    if on_gpu(settings):
        return sessions or 1, threads
    cores = usable_cores()
    sessions = sessions or max(1, min(cores, MAX_AUTO_SESSIONS))
    return sessions, threads or max(1, cores // sessions)


def prepare_threads(settings) -> int:
    """Threads for the CPU work around the runs (JPEG decode, input tensors, output decoding): the
    ``detector_prepare_threads`` setting, or auto. On the CPU one: the sessions have the cores. On a GPU
    half the usable cores, up to MAX_AUTO_PREPARE: one thread took ~3.5 ms a frame here (a worker whose
    runs cost nothing did 243-300 frames/s), and JPEG decoding and resizing release the GIL (two threads
    decoded x2 as fast)."""
    if settings.detector_prepare_threads:
        return settings.detector_prepare_threads
    if not on_gpu(settings):
        return 1
    return max(1, min(MAX_AUTO_PREPARE, usable_cores() // 2))


def detector_options(settings) -> dict:
    """``Detector.from_folder`` keyword arguments from a ``DetectorSettings`` (threads per session as
    ``session_layout`` gives them)."""
    return {
        "providers": requested_providers(settings),
        "threads": session_layout(settings)[1],
        "gpu": GpuOptions(device_id=settings.detector_device_id,
                          cudnn_conv_algo_search=settings.detector_cudnn_conv_algo_search,
                          trt_fp16=settings.detector_trt_fp16),
        "io_binding": settings.detector_io_binding,
        "spinning": settings.detector_spinning,
    }


def detector_loader(settings) -> Callable[[Path], DetectorPool]:
    """How the worker loads a model folder: its sessions (``session_layout``), as one ``DetectorPool``."""
    options = detector_options(settings)
    sessions = session_layout(settings)[0]
    return lambda folder: DetectorPool.from_folder(folder, sessions=sessions, **options)


def resolver(store, default_folder: Path) -> Resolve:
    """Refs come from the model store; the configured model folder (model_dir) serves its own ref too,
    so a site runs before anything was pushed."""
    default = load_spec(default_folder)
    default_ref = R.ref(default.name, default.version)

    def resolve(model: str) -> Path:
        if store is not None and store.has(model):
            return store.folder(model)
        if model == default_ref:
            return default.folder
        raise ModelError(f"model {model} is neither in the model store ({getattr(store, 'root', 'none')}) nor the "
                         f"configured model_dir ({default_ref}); push it with `aimass models push` first")

    return resolve


class ModelSet:
    def __init__(self, resolve: Resolve, load: Callable[[Path], Model], warm_batches: Sequence[int] = (1,)):
        self.resolve = resolve
        self._load = load
        self.warm_batches = tuple(warm_batches)
        self.routing: ModelRouting | None = None
        self.models: dict[str, Model] = {}

    def missing(self, routing: ModelRouting) -> list[str]:
        return sorted(R.models_in_use(routing) - set(self.models))

    def load(self, model: str) -> tuple[Model, float]:
        """Load, check and warm one model (blocking: run it in a thread) on each of ``warm_batches``: the
        smallest and the largest batch the worker makes, so the memory for a full batch is taken (and on
        a GPU, kernels chosen and TensorRT's engine built for that range) before serving, not on the
        first full batch; a model that cannot run them fails here. Returns it and the seconds it took."""
        t0 = time.perf_counter()
        det = self._load(self.resolve(model))
        if R.ref(det.name, det.version) != model:
            raise ModelError(f"the folder for {model} holds {det.name}:{det.version}")
        for batch in self.warm_batches:
            det.warmup(batch)
        return det, time.perf_counter() - t0

    def install(self, routing: ModelRouting, loaded: dict[str, Model]) -> list[str]:
        """Switch to ``routing`` with ``loaded`` added; returns the refs no longer needed (dropped)."""
        self.models.update(loaded)
        missing = self.missing(routing)
        if missing:
            raise ModelError(f"routing revision {routing.revision} needs models that are not loaded: {missing}")
        needed = R.models_in_use(routing)
        dropped = sorted(set(self.models) - needed)
        for m in dropped:
            del self.models[m]
        self.routing = routing
        return dropped

    def plan(self, frames: list[Frame]) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
        """(serving model -> frame indexes, shadow model -> frame indexes) under the current routing."""
        assert self.routing is not None
        serve: dict[str, list[int]] = {}
        shadow: dict[str, list[int]] = {}
        for i, f in enumerate(frames):
            model, shadow_model = R.route(self.routing, f.camera_id, f.seq)
            serve.setdefault(model, []).append(i)
            if shadow_model:
                shadow.setdefault(shadow_model, []).append(i)
        return serve, shadow


@dataclass
class Served:
    """One frame's outcome in a batch."""

    model: str = ""
    objects: list[DetectedObject] | None = None
    bad_image: Exception | None = None  # the frame's JPEG could not be decoded
    decoded_ms: float = 0.0
    inferred_ms: float = 0.0
    batch_size: int = 0  # frames in the model run that served it


@dataclass
class ShadowRun:
    model: str
    indexes: list[int]
    objects: list[list[DetectedObject]]
    seconds: float


@dataclass
class BatchResult:
    served: list[Served]
    failed: dict[str, str] = field(default_factory=dict)  # model -> error, for models that raised
    unserved: list[int] = field(default_factory=list)  # frames whose serving model raised
    shadows: list[ShadowRun] = field(default_factory=list)
    images: list[np.ndarray | None] = field(default_factory=list)  # decoded frames, for a re-run of the unserved


@dataclass
class Share:
    """One model's part of a batch (the frames routed to it, or shadowed by it), through the stages."""
    model: str
    indexes: list[int]  # the batch's frames it runs, in order
    shadow: bool = False
    prepared: Any = None  # what the model's ``prepare`` returned
    outputs: Any = None  # what its ``run`` returned
    error: str | None = None  # why the model failed on it
    started_ms: float = 0.0  # its run's start and end
    ended_ms: float = 0.0
    seconds: float = 0.0


@dataclass
class PreparedBatch:
    shares: list[Share]
    images: list[np.ndarray | None]
    bad: dict[int, BadImage]  # frames whose JPEG could not be decoded, and why


def _failure(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:2000]


def prepare_batch(models: dict[str, Model], serve: dict[str, list[int]], shadow: dict[str, list[int]],
                  frames: list[Frame], images: list[np.ndarray | None] | None = None) -> PreparedBatch:
    """Stage 1 (a prepare thread): decode each served frame's JPEG and prepare each model's share of
    the batch. ``images`` carries frames already decoded (a re-run after a failure); a frame whose JPEG
    fails is in no share and recorded with the reason."""
    images = list(images) if images is not None else [None] * len(frames)
    bad: dict[int, BadImage] = {}
    for model, idx in serve.items():
        for i in idx:
            if images[i] is None and i not in bad:
                try:
                    images[i] = models[model].decode_jpeg(frames[i].jpeg)
                except BadImage as exc:
                    bad[i] = exc
    shares = [Share(model, [i for i in idx if images[i] is not None]) for model, idx in serve.items()]
    shares += [Share(model, [i for i in idx if images[i] is not None], shadow=True)
               for model, idx in shadow.items() if model in models]
    for share in shares:
        if share.indexes:
            try:
                share.prepared = models[share.model].prepare([images[i] for i in share.indexes])
            except Exception as exc:  # counts as the model failing on these frames
                share.error = _failure(exc)
    return PreparedBatch(shares, images, bad)


def run_batch(models: dict[str, Model], batch: PreparedBatch) -> None:
    """Stage 2 (the inference thread): one run per prepared share, timed; a model that raises (ONNX
    Runtime has its own exception types: any of them) is recorded on its share."""
    for share in batch.shares:
        if share.prepared is None:
            continue
        # The run's start is the frames' "decoded" stamp, so decoded -> inferred is the model alone (the
        # per-version latency); a batch prepared ahead has its wait counted in the decode stage.
        share.started_ms, t0 = now_ms(), time.perf_counter()
        try:
            share.outputs = models[share.model].run(share.prepared)
        except Exception as exc:
            share.error = _failure(exc)
        share.ended_ms, share.seconds = now_ms(), time.perf_counter() - t0


def finish_batch(models: dict[str, Model], batch: PreparedBatch) -> BatchResult:
    """Stage 3 (a prepare thread): each share's outputs decoded into objects. A model that failed
    (prepare, run or decode) is reported (``failed``) with the frames it left unserved, so the worker
    can serve them with the fallback; a shadow's results are kept for served frames only."""
    result = BatchResult([Served(bad_image=batch.bad.get(i)) for i in range(len(batch.images))], images=batch.images)
    for share in batch.shares:
        objects = None
        if share.outputs is not None and share.error is None:
            try:
                objects = models[share.model].decode(share.prepared, share.outputs)
            except Exception as exc:
                share.error = _failure(exc)
        if share.error is not None:
            result.failed[share.model] = share.error
            if not share.shadow:
                result.unserved += share.indexes
            continue
        if objects is None:
            continue
        if share.shadow:
            kept = [(i, o) for i, o in zip(share.indexes, objects) if result.served[i].objects is not None]
            if kept:
                result.shadows.append(ShadowRun(share.model, [i for i, _ in kept], [o for _, o in kept], share.seconds))
            continue
        for i, o in zip(share.indexes, objects):
            result.served[i] = Served(share.model, o, None, share.started_ms, share.ended_ms, len(share.indexes))
    return result


def serve_batch(models: dict[str, Model], serve: dict[str, list[int]], shadow: dict[str, list[int]],
                frames: list[Frame], images: list[np.ndarray | None] | None = None) -> BatchResult:
    """The three stages in the calling thread: a re-run of the frames a failed model left."""
    batch = prepare_batch(models, serve, shadow, frames, images)
    run_batch(models, batch)
    return finish_batch(models, batch)


def agreement(a: list[DetectedObject], b: list[DetectedObject], min_iou: float = 0.5) -> tuple[int, float]:
    """(pairs of the same label with IoU >= min_iou, their mean IoU): how far a shadow agrees."""
    if not a or not b:
        return 0, 0.0
    boxes_a = np.array([[o.x1, o.y1, o.x2, o.y2] for o in a])
    boxes_b = np.array([[o.x1, o.y1, o.x2, o.y2] for o in b])
    iou = iou_matrix(boxes_a, boxes_b)
    same = np.array([[x.label == y.label for y in b] for x in a])
    iou = np.where(same, iou, 0.0)
    matched = []
    while iou.size and iou.max() >= min_iou:
        r, c = np.unravel_index(int(np.argmax(iou)), iou.shape)
        matched.append(float(iou[r, c]))
        iou[r, :] = 0.0
        iou[:, c] = 0.0
    return len(matched), (sum(matched) / len(matched) if matched else 0.0)
