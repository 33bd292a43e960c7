"""The interface every model output format implements, and the helpers they share.

An adapter owns both ends of one model family: ``prepare`` turns BGR frames into the model's input
feeds, ``decode`` turns the raw outputs into ``DetectedObject`` lists with boxes normalised to each
original frame and site labels from the class map. The engine never looks inside either.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Sequence

import numpy as np

from aimass.contracts import DetectedObject
from aimass_detector.model import ModelError, ModelSpec

Size = tuple[int, int]  # (width, height) of an original frame


class Adapter(ABC):
    format: ClassVar[str]  # the ``format`` value in model.yaml

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        self.input_name = spec.input.name
        self.width = spec.input.width
        self.height = spec.input.height
        self.score_threshold = spec.score_threshold
        self.max_detections = spec.max_detections
        # Model class index -> site label; "" where the class is dropped. Kept classes as an index
        # array so decoders can discard the rest before any box maths.
        self.labels = np.array([spec.class_map.get(c, "") for c in spec.classes], dtype=object)
        self.kept_classes = np.flatnonzero(self.labels != "")
        # NMS groups by site label, not model class: a car and a truck box on one vehicle are one
        # "vehicle", not two.
        self.label_group = np.unique(self.labels.astype(str), return_inverse=True)[1]
        if self.kept_classes.size == 0:
            raise ModelError(f"model folder {spec.folder}: class_map maps none of the model's classes, so "
                             "nothing would ever be detected. Add entries such as 'person: person'.")

    @property
    @abstractmethod
    def output_names(self) -> list[str]:
        """The outputs ``decode`` needs, fetched by name."""

    @abstractmethod
    def prepare(self, images: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """BGR uint8 frames (any sizes) -> the feeds for one ``session.run`` of the whole batch."""

    @abstractmethod
    def decode(self, outputs: dict[str, np.ndarray], sizes: Sequence[Size]) -> list[list[DetectedObject]]:
        """Raw outputs of one run -> per frame, its objects (best score first)."""

    def check_session(self, inputs: Sequence, outputs: Sequence) -> None:
        """Fail early, with the names that do exist, when model.yaml and the ONNX graph disagree."""
        in_names = [i.name for i in inputs]
        out_names = [o.name for o in outputs]
        if self.input_name not in in_names:
            raise ModelError(f"model folder {self.spec.folder}: model.yaml input '{self.input_name}' is not "
                             f"an input of the ONNX graph (it has {in_names}). Fix input.name.")
        missing = [n for n in self.output_names if n not in out_names]
        if missing:
            raise ModelError(f"model folder {self.spec.folder}: outputs {missing} named in model.yaml are not "
                             f"in the ONNX graph (it has {out_names}). Fix 'outputs'.")

    def to_objects(self, n_images: int, image_idx: np.ndarray, class_ids: np.ndarray, scores: np.ndarray,
                   boxes: np.ndarray) -> list[list[DetectedObject]]:
        """Flat, already filtered detections -> per-image lists, best score first, at most
        ``max_detections`` each. Boxes are normalised (x1, y1, x2, y2) and are clipped to [0, 1]."""
        result: list[list[DetectedObject]] = [[] for _ in range(n_images)]
        if len(scores) == 0:
            return result
        # Sort by (image, -score) once, then cap per image by rank within the image.
        order = np.lexsort((-scores, image_idx))
        image_idx, class_ids, scores = image_idx[order], class_ids[order], scores[order]
        boxes = np.clip(boxes[order], 0.0, 1.0)
        first = np.searchsorted(image_idx, image_idx, side="left")
        keep = (np.arange(len(order)) - first) < self.max_detections
        labels = self.labels[class_ids[keep]]
        # The one per-object loop: building the output structs (tolist() gives Python floats fast).
        for img, label, cls, score, (x1, y1, x2, y2) in zip(
                image_idx[keep].tolist(), labels.tolist(), class_ids[keep].tolist(), scores[keep].tolist(),
                boxes[keep].tolist()):
            result[img].append(DetectedObject(label, cls, score, x1, y1, x2, y2))
        return result
