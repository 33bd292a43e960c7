"""RT-DETR-style exports (RT-DETR, RT-DETRv2, D-FINE, DEIM, Ultralytics RT-DETR), format ``rtdetr``:
a fixed set of Q queries per image, each with one box and class scores, and no NMS (the model's
set prediction does not produce duplicates).

In: float32 NCHW, usually RGB 0..1 (``mean: [0, 0, 0]``, ``std: [255, 255, 255]``), plain resize.
Out, names set in model.yaml ``outputs``:
- ``boxes`` [N, Q, 4]: ``box_format`` cxcywh (default) or xyxy, ``box_units`` normalised to the
  input (default) or input pixels;
- ``scores`` [N, Q, C] (``scores: sigmoid`` (default) or ``logits``);
- optionally ``labels`` [N, Q] (class index per query, as exports with their post-processor inside
  give), in which case ``scores`` may be [N, Q] (the score of that label);
- one combined [N, Q, 4+C] tensor (Ultralytics' RT-DETR export): give the same name for ``boxes``
  and ``scores``.
Exports whose post-processor scales boxes by an extra "original size" input (lyuwenyu's RT-DETR
``orig_target_sizes``) name it in ``size_input``: it is fed the model input's (width, height), so
the boxes come out in input pixels (``box_units: pixels``).

Decode: best class per query, score threshold, kept classes only, then the best ``max_detections``
per frame.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from aimass.contracts import DetectedObject
from aimass_detector.adapters.base import Adapter, Size
from aimass_detector.model import ModelError, ModelSpec

DEFAULT_OUTPUTS = {"boxes": "boxes", "scores": "scores", "labels": None}
BOX_FORMATS = ("cxcywh", "xyxy")
BOX_UNITS = {"normalised": "normalised", "normalized": "normalised", "pixels": "pixels"}
SCORE_KINDS = ("sigmoid", "logits")
# ONNX Runtime's type string of the size input -> the numpy dtype to feed.
_SIZE_DTYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32}


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-x) without overflow warnings for large |x|."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


class RtDetrAdapter(Adapter):
    format = "rtdetr"

    def __init__(self, spec: ModelSpec):
        super().__init__(spec)
        self.require_nchw_float()
        where = f"model folder {spec.folder}"
        outputs = spec.extra.get("outputs") or {}
        if not isinstance(outputs, dict) or set(outputs) - set(DEFAULT_OUTPUTS):
            raise ModelError(f"{where}: rtdetr 'outputs' must be a mapping with keys boxes, scores and "
                             f"optionally labels (got {outputs!r}). Fix model.yaml.")
        names = {**DEFAULT_OUTPUTS, **outputs}
        self.boxes_name, self.scores_name = str(names["boxes"]), str(names["scores"])
        self.labels_name = str(names["labels"]) if names["labels"] else None
        self.combined = self.boxes_name == self.scores_name
        if self.combined and self.labels_name:
            raise ModelError(f"{where}: rtdetr outputs name one combined boxes+scores tensor and a labels "
                             "output; a combined [N, Q, 4+C] tensor carries its classes. Drop outputs.labels.")
        self.box_format = str(spec.extra.get("box_format", "cxcywh")).lower()
        units = str(spec.extra.get("box_units", "normalised")).lower()
        self.score_kind = str(spec.extra.get("scores", "sigmoid")).lower()
        if self.box_format not in BOX_FORMATS or units not in BOX_UNITS or self.score_kind not in SCORE_KINDS:
            raise ModelError(f"{where}: rtdetr box_format '{self.box_format}', box_units '{units}', scores "
                             f"'{self.score_kind}': allowed are box_format {'|'.join(BOX_FORMATS)}, box_units "
                             f"normalised|pixels, scores {'|'.join(SCORE_KINDS)}. Fix model.yaml.")
        self.box_units = BOX_UNITS[units]
        self.size_input = str(spec.extra["size_input"]) if spec.extra.get("size_input") else None
        self._size_dtype = np.int64

    @property
    def output_names(self) -> list[str]:
        names = [self.boxes_name] if self.combined else [self.boxes_name, self.scores_name]
        return names + ([self.labels_name] if self.labels_name else [])

    @property
    def feed_names(self) -> list[str]:
        return [self.input_name] + ([self.size_input] if self.size_input else [])

    def check_session(self, inputs: Sequence, outputs: Sequence) -> None:
        super().check_session(inputs, outputs)
        if self.size_input:
            found = [i for i in inputs if i.name == self.size_input]
            if not found:
                raise ModelError(f"model folder {self.spec.folder}: size_input '{self.size_input}' is not an "
                                 f"input of the ONNX graph (it has {[i.name for i in inputs]}). Fix or drop "
                                 "size_input in model.yaml.")
            kind = getattr(found[0], "type", "tensor(int64)")
            if kind not in _SIZE_DTYPES:
                raise ModelError(f"model folder {self.spec.folder}: size_input '{self.size_input}' is {kind}; "
                                 "the detector feeds int64, int32 or float32 (width, height) pairs.")
            self._size_dtype = _SIZE_DTYPES[kind]

    def prepare(self, images: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        feeds = super().prepare(images)
        if self.size_input:
            feeds[self.size_input] = np.tile(np.array([[self.width, self.height]], self._size_dtype), (len(images), 1))
        return feeds

    def check_outputs(self, outputs: dict[str, np.ndarray], batch: int) -> None:
        """boxes [batch, Q, 4] and scores [batch, Q, len(classes)], both float (or one combined
        [batch, Q, 4+len(classes)]); with labels: labels [batch, Q] and scores [batch, Q] or
        [batch, Q, len(classes)]."""
        super().check_outputs(outputs, batch)
        n_cls = len(self.spec.classes)
        classes_fix = (f"model.yaml lists {n_cls} classes: fix 'classes' to all the model's class names in index "
                       "order")
        if self.combined:
            arr = outputs[self.boxes_name]
            if arr.ndim != 3 or arr.shape[2] != 4 + n_cls:
                fix = (f"{classes_fix} (the last axis holds {arr.shape[2]} = 4 + {arr.shape[2] - 4} classes)."
                       if arr.ndim == 3 and arr.shape[2] > 4 else
                       "Check 'outputs': one name for boxes and scores means one combined tensor.")
                raise self.shape_error(self.boxes_name, f"[{batch}, Q, {4 + n_cls}] (4 box values + {n_cls} "
                                       "class scores per query)", arr, fix)
            self.require_float(self.boxes_name, arr)
            return
        boxes = outputs[self.boxes_name]
        if boxes.ndim != 3 or boxes.shape[2] != 4:
            raise self.shape_error(self.boxes_name, f"[{batch}, Q, 4] (one box per query)", boxes,
                                   "Check outputs.boxes in model.yaml (it may name the scores or labels).")
        self.require_float(self.boxes_name, boxes)
        q = boxes.shape[1]
        scores = outputs[self.scores_name]
        full = f"[{batch}, {q}, {n_cls}] (a score per class for each of the {q} queries)"
        if self.labels_name:
            labels = outputs[self.labels_name]
            if labels.shape != (batch, q) or not np.issubdtype(labels.dtype, np.number):
                raise self.shape_error(self.labels_name, f"[{batch}, {q}] (a class index per query)", labels,
                                       "Check outputs.labels in model.yaml, or drop it if the model has none.")
            if scores.shape != (batch, q) and scores.shape != (batch, q, n_cls):
                raise self.shape_error(self.scores_name, f"[{batch}, {q}] or {full}", scores,
                                       f"Check outputs.scores in model.yaml; with a score per class, {classes_fix}.")
        elif scores.ndim != 3 or scores.shape[:2] != (batch, q) or scores.shape[2] != n_cls:
            if scores.ndim == 3 and scores.shape[:2] == (batch, q):
                fix = f"{classes_fix} (the model scores {scores.shape[2]})."
            elif scores.ndim == 2:
                fix = "One score per query needs the class of each query: name it in outputs.labels."
            else:
                fix = "Check outputs.scores in model.yaml: boxes and scores must have the same queries."
            raise self.shape_error(self.scores_name, full, scores, fix)
        self.require_float(self.scores_name, scores)

    def decode(self, outputs: dict[str, np.ndarray], sizes: Sequence[Size]) -> list[list[DetectedObject]]:
        n = len(sizes)
        if self.combined:
            both = outputs[self.boxes_name]
            boxes, scores = both[..., :4], both[..., 4:]
        else:
            boxes, scores = outputs[self.boxes_name], outputs[self.scores_name]
        if boxes.shape[0] != n or scores.shape[0] != n or boxes.ndim != 3:
            self.check_outputs(outputs, n)
        if self.labels_name:
            lab = outputs[self.labels_name]
            cls = (lab if np.issubdtype(lab.dtype, np.integer) else np.rint(lab)).astype(np.int64)
            known = (cls >= 0) & (cls < len(self.labels))
            if scores.ndim == 3:
                scores = np.take_along_axis(scores, np.where(known, cls, 0)[..., None], axis=2)[..., 0]
            conf = scores
        else:
            cls = scores.argmax(axis=2)  # [N, Q]
            conf = np.take_along_axis(scores, cls[..., None], axis=2)[..., 0]
            known = np.ones(cls.shape, dtype=bool)
        if self.score_kind == "logits":
            conf = sigmoid(conf)  # monotonic: the best logit is the best probability
        valid = known & (conf >= self.score_threshold)
        valid[known] &= self.kept_mask[cls[known]]
        img, q = np.nonzero(valid)
        b = boxes[img, q].astype(np.float64)
        if self.box_format == "cxcywh":
            half = b[:, 2:] / 2
            b = np.concatenate([b[:, :2] - half, b[:, :2] + half], axis=1)
        if self.box_units == "pixels" or self.resize_mode == "letterbox":
            if self.box_units == "normalised":  # normalised to the padded input: via input pixels
                b = b * [self.width, self.height, self.width, self.height]
            b = self.to_frame(b, img, sizes)
        # to_objects sorts each frame best first and keeps its best max_detections.
        return self.to_objects(n, img, cls[img, q], conf[img, q].astype(np.float64), b)
