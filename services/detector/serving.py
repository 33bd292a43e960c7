"""The models a detector worker serves, and one batch of frames run through them.

``ModelSet`` holds the loaded model versions and the routing revision they serve (aimass.routing).
A new revision is loaded and warmed beside the old one (``load``, in a loader thread, while batches
go on) and installed in one assignment between batches (``install``): each frame is served by exactly
one revision. A revision whose models do not all load is refused as a whole and the old one keeps
serving.

``run_batch`` (in the inference thread) decodes and runs each model's share of a batch: a frame goes
to the model its camera's group routes it to (active or canary), and, where the group has a shadow,
also to the shadow, whose results are only compared. A model that raises at run time is reported in
the result (``failed``) with the frames it left unserved, so the worker can withdraw it from the
routing and serve them with the fallback: no frame is lost and none is served twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aimass import routing as R
from aimass.contracts import DetectedObject, Frame, ModelRouting, now_ms
from aimass_detector.engine import Detector, DetectorPool
from aimass_detector.model import GpuOptions, ModelError, load_spec
from aimass_detector.preprocess import BadImage
from aimass_detector.tracker import iou_matrix

Resolve = Callable[[str], Path]  # model ref -> a model folder
Model = Detector | DetectorPool  # what serves a model version: both detect, warm up and name themselves


def detector_options(settings) -> dict:
    """``Detector.from_folder`` keyword arguments from a ``DetectorSettings``."""
    return {
        "providers": [p for p in settings.providers.split(",") if p] or None,
        "threads": settings.threads or None,
        "gpu": GpuOptions(device_id=settings.detector_device_id,
                          cudnn_conv_algo_search=settings.detector_cudnn_conv_algo_search,
                          trt_fp16=settings.detector_trt_fp16),
        "io_binding": settings.detector_io_binding,
    }


def detector_loader(settings) -> Callable[[Path], DetectorPool]:
    """How the worker loads a model folder: ``detector_sessions`` sessions of it, as one ``DetectorPool``."""
    options = detector_options(settings)
    return lambda folder: DetectorPool.from_folder(folder, sessions=settings.detector_sessions, **options)


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
    def __init__(self, resolve: Resolve, load: Callable[[Path], Model]):
        self.resolve = resolve
        self._load = load
        self.routing: ModelRouting | None = None
        self.models: dict[str, Model] = {}

    def missing(self, routing: ModelRouting) -> list[str]:
        return sorted(R.models_in_use(routing) - set(self.models))

    def load(self, model: str) -> tuple[Model, float]:
        """Load, check and warm one model (blocking: run it in a thread). Returns it and the seconds it took."""
        t0 = time.perf_counter()
        det = self._load(self.resolve(model))
        if R.ref(det.name, det.version) != model:
            raise ModelError(f"the folder for {model} holds {det.name}:{det.version}")
        det.warmup()
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


def decode_batch(models: dict[str, Model], serve: dict[str, list[int]], frames: list[Frame]) -> list[np.ndarray | None]:
    """Each served frame's JPEG decoded for its model (blocking: the decode thread, so a batch decodes
    while the one before it runs on the inference thread). None where it fails: ``run_batch`` tries
    again and records why."""
    images: list[np.ndarray | None] = [None] * len(frames)
    for model, idx in serve.items():
        for i in idx:
            try:
                images[i] = models[model].decode_jpeg(frames[i].jpeg)
            except BadImage:
                pass
    return images


def run_batch(models: dict[str, Model], serve: dict[str, list[int]], shadow: dict[str, list[int]],
              frames: list[Frame], images: list[np.ndarray | None] | None = None) -> BatchResult:
    """Decode and run each model's share (blocking: the inference thread). ``images`` carries frames
    already decoded (a re-run after a failure), None entries to decode."""
    result = BatchResult([Served() for _ in frames])
    images = list(images) if images is not None else [None] * len(frames)
    for model, idx in serve.items():
        det = models[model]
        for i in idx:
            if images[i] is None and result.served[i].bad_image is None:
                try:
                    images[i] = det.decode_jpeg(frames[i].jpeg)
                except BadImage as exc:
                    result.served[i].bad_image = exc
        ok = [i for i in idx if images[i] is not None]
        # Stamped "decoded" when the run starts, so decoded -> inferred is the model alone (the per-version
        # latency); a batch decoded ahead (decode_batch) has its wait counted in the decode stage.
        decoded = now_ms()
        if not ok:
            continue
        try:
            outputs = det.detect([images[i] for i in ok])
        except Exception as exc:  # ONNX Runtime raises its own types; any of them means this model failed
            result.failed[model] = f"{type(exc).__name__}: {exc}"[:2000]
            result.unserved += ok
            continue
        inferred = now_ms()
        for i, objects in zip(ok, outputs):
            result.served[i] = Served(model, objects, None, decoded, inferred, len(ok))
    for model, idx in shadow.items():
        ok = [i for i in idx if images[i] is not None and result.served[i].objects is not None]
        if not ok or model not in models:
            continue
        t0 = time.perf_counter()
        try:
            outputs = models[model].detect([images[i] for i in ok])
        except Exception as exc:
            result.failed[model] = f"{type(exc).__name__}: {exc}"[:2000]
            continue
        result.shadows.append(ShadowRun(model, ok, outputs, time.perf_counter() - t0))
    result.images = images
    return result


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
