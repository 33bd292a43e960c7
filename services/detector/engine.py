"""``Detector``: one model folder, ready to turn BGR frames into ``DetectedObject`` lists.

It ties the pieces together and adds nothing of its own: model.yaml + sha256 check + ONNX Runtime
session (model.py), the format's adapter (adapters/), and one ``session.run`` per batch. ``probe``
runs a synthetic batch and checks the real output tensors against the format: the model registry
refuses an upload that fails it. Not thread-safe (the adapter reuses its input buffer): the worker
calls it from one inference thread.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any, Sequence

import cv2
import numpy as np

from aimass.contracts import DetectedObject
from aimass_detector.adapters import Adapter, adapter_for
from aimass_detector.adapters.base import DYNAMIC_BATCH_HINT
from aimass_detector.model import ModelError, ModelSpec, create_session, load_spec
from aimass_detector.preprocess import BadImage, decode_jpeg

__all__ = ["Detector", "BadImage", "decode_jpeg"]


class Detector:
    def __init__(self, spec: ModelSpec, session, adapter: Adapter, providers: Sequence[str]):
        self.spec = spec
        self.session = session
        self.adapter = adapter
        self._providers = list(providers)
        adapter.check_session(session.get_inputs(), session.get_outputs())

    @classmethod
    def from_folder(cls, path: str | os.PathLike, providers: Sequence[str] | None = None,
                    threads: int | None = None) -> "Detector":
        """Load ``path/model.yaml`` and ``model.onnx``; raises ``ModelError`` saying what to fix.
        ``providers`` overrides the TensorRT > CUDA > CPU choice; ``threads`` sets intra-op threads."""
        spec = load_spec(path)
        adapter = adapter_for(spec)  # before the session: a bad format fails without loading weights
        session, in_use = create_session(spec, providers=providers, threads=threads)
        return cls(spec, session, adapter, in_use)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def version(self) -> str:
        return self.spec.version

    @property
    def providers(self) -> list[str]:
        """The ONNX Runtime providers actually in use, best first."""
        return list(self._providers)

    @property
    def input_size(self) -> tuple[int, int]:
        return self.spec.input.width, self.spec.input.height

    def decode_jpeg(self, data: bytes) -> np.ndarray:
        """JPEG -> BGR, decoded at a reduced scale when the frame is much larger than the model
        input (boxes are normalised, so this never changes the result's meaning)."""
        w, h = self.input_size
        return decode_jpeg(data, min_width=w, min_height=h)

    def detect(self, images: Sequence[np.ndarray]) -> list[list[DetectedObject]]:
        """BGR uint8 frames of any sizes -> per frame, its objects (boxes normalised to that frame),
        with one ``session.run`` for the whole batch."""
        if len(images) == 0:
            return []
        feeds = self.adapter.prepare(images)
        names = self.adapter.output_names
        outputs = dict(zip(names, self.session.run(names, feeds)))
        return self.adapter.decode(outputs, [(img.shape[1], img.shape[0]) for img in images])

    def warmup(self, batch: int = 1) -> None:
        """One run on a blank batch, so the first real frame does not pay for allocator and kernel
        set-up (or, on TensorRT, the engine build). Its outputs go through ``check_outputs``, so a
        model whose outputs do not fit its format fails here with ``ModelError``, before serving."""
        w, h = self.input_size
        frames = [np.zeros((h, w, 3), np.uint8)] * batch
        outputs = self._run(frames, self.adapter.output_names)
        self.adapter.check_outputs(outputs, batch)
        self.adapter.decode(outputs, [(w, h)] * batch)

    def _run(self, frames: Sequence[np.ndarray], names: list[str] | None) -> dict[str, np.ndarray]:
        """One ``session.run`` on ``frames``; a failure becomes a ``ModelError`` saying what to fix."""
        feeds = self.adapter.prepare(frames)
        names = names or [o.name for o in self.session.get_outputs()]
        try:
            return dict(zip(names, self.session.run(names, feeds)))
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidArgument/... types
            hint = "Check that model.yaml's input (size, layout, dtype) is what the model was exported with."
            fixed = [i.shape[0] for i in self.session.get_inputs()
                     if i.shape and isinstance(i.shape[0], int) and i.shape[0] != len(frames)]
            if fixed:
                hint = f"The graph's input has a fixed batch of {fixed[0]}. {DYNAMIC_BATCH_HINT}"
            raise ModelError(f"model folder {self.spec.folder}: one run on a batch of {len(frames)} "
                             f"{self.spec.input.width}x{self.spec.input.height} frames failed ({exc}). {hint}") from None

    def probe(self, batch: int = 2, runs: int = 3) -> dict[str, Any]:
        """Run one synthetic batch of ``batch`` frames, check the real output tensors against the
        format (``Adapter.check_outputs``), decode them, then time ``runs`` more runs. Raises
        ``ModelError`` saying what to fix when the model does not fit its model.yaml; otherwise
        returns facts for the registry (JSON-ready)::

            {"name", "version", "format", "providers": [...], "batch": 2,
             "inputs": {name: {"shape": [...], "dtype": "float32"}},      # as fed
             "outputs": {name: {"shape": [...], "dtype": "float32"}},     # every graph output
             "seconds_first_run", "seconds_per_run" (median of ``runs``), "seconds_per_frame",
             "detections": [objects decoded per synthetic frame],
             "metadata": {...}}                                           # the ONNX metadata_props

        The frames are grey scenes with a few flat shapes at the input size and at 16:9 and 9:16
        (so a letterbox pads both ways); what they detect is not judged, only that decoding works.
        """
        if batch < 1 or runs < 1:
            raise ValueError("probe needs batch >= 1 and runs >= 1")
        w, h = self.input_size
        frames = [_synthetic_frame(*size) for size in
                  ([(w, h), (640, 360), (360, 640)] * batch)[:batch]]
        sizes = [(f.shape[1], f.shape[0]) for f in frames]
        feeds = self.adapter.prepare(frames)
        inputs = {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in feeds.items()}
        start = time.perf_counter()
        outputs = self._run(frames, None)
        first = time.perf_counter() - start
        self.adapter.check_outputs(outputs, batch)
        try:
            results = self.adapter.decode({k: outputs[k] for k in self.adapter.output_names}, sizes)
        except ModelError:
            raise
        except Exception as exc:  # a decoder bug or an output check that let something through
            raise ModelError(f"model folder {self.spec.folder}: outputs fit format '{self.spec.format}' but "
                             f"decoding them failed ({type(exc).__name__}: {exc}). Check model.yaml's "
                             "format-specific keys (models/README.md).") from None
        if len(results) != batch:
            raise ModelError(f"model folder {self.spec.folder}: decoding a batch of {batch} gave "
                             f"{len(results)} results. Check the export's batch dimension.")
        names = self.adapter.output_names
        times = []
        feeds = self.adapter.prepare(frames)
        for _ in range(runs):
            t0 = time.perf_counter()
            self.session.run(names, feeds)
            times.append(time.perf_counter() - t0)
        per_run = statistics.median(times)
        meta = self.session.get_modelmeta()
        return {
            "name": self.spec.name,
            "version": self.spec.version,
            "format": self.spec.format,
            "providers": self.providers,
            "batch": batch,
            "inputs": inputs,
            "outputs": {k: {"shape": [int(d) for d in v.shape], "dtype": str(v.dtype)} for k, v in outputs.items()},
            "seconds_first_run": first,
            "seconds_per_run": per_run,
            "seconds_per_frame": per_run / batch,
            "detections": [len(objs) for objs in results],
            "metadata": dict(getattr(meta, "custom_metadata_map", None) or {}),
        }


def _synthetic_frame(width: int, height: int) -> np.ndarray:
    """A grey BGR scene with a darker floor, a light box and a dark disc: deterministic, cheap, and
    not blank, so normalisation and resizing see more than one value."""
    img = np.full((height, width, 3), 128, np.uint8)
    img[height * 2 // 3:] = (90, 90, 90)
    cv2.rectangle(img, (width // 8, height // 4), (width * 3 // 8, height * 3 // 4), (220, 220, 220), -1)
    cv2.circle(img, (width * 2 // 3, height // 2), max(1, min(width, height) // 6), (40, 60, 80), -1)
    return img
