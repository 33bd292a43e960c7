"""``Detector``: one model folder, ready to turn BGR frames into ``DetectedObject`` lists.

It ties the pieces together and adds nothing of its own: model.yaml + sha256 check + ONNX Runtime
session (model.py), the format's adapter (adapters/), and one ``session.run`` per batch. Not
thread-safe (the adapter reuses its input buffer): the worker calls it from one inference thread.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from aimass.contracts import DetectedObject
from aimass_detector.adapters import Adapter, adapter_for
from aimass_detector.model import ModelSpec, create_session, load_spec
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
        set-up (or, on TensorRT, the engine build)."""
        w, h = self.input_size
        self.detect([np.zeros((h, w, 3), np.uint8)] * batch)
