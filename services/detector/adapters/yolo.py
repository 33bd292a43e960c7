"""Ultralytics YOLOv8 / YOLO11 ONNX exports (``yolo export format=onnx``), format ``yolov8``.

In: float32 NCHW RGB in 0..1 (model.yaml ``mean: [0, 0, 0]``, ``std: [255, 255, 255]``), usually
letterboxed (``input.resize: letterbox``) as Ultralytics trains and predicts. Out: one tensor
[N, 4+C, A]: per anchor (cx, cy, w, h) in input pixels, then C class scores with the sigmoid already
applied and no objectness; NMS is not inside. Some exports (and tools that post-process them) hand
out the transposed [N, A, 4+C]; ``output_layout`` picks one, or ``auto`` reads it off the shape.
YOLOv5/YOLOv7 heads (4 + objectness + C) and -seg/-pose heads are other formats.

Decode, for the whole batch at once: best class per anchor (over all classes, as Ultralytics does:
an anchor whose best class is one the class map drops is dropped, not relabelled), score threshold,
kept classes only, top ``pre_nms_top_k`` per frame, boxes to x1y1x2y2 clipped to the input, NMS per
site label within each frame, then back to each frame's normalised coordinates.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from aimass.contracts import DetectedObject
from aimass_detector.adapters.base import Adapter, Size
from aimass_detector.model import ModelError, ModelSpec

DEFAULT_OUTPUT = "output0"  # what Ultralytics names it
LAYOUTS = ("auto", "channels_first", "anchors_first")  # [N, 4+C, A], [N, A, 4+C]


class YoloV8Adapter(Adapter):
    format = "yolov8"

    def __init__(self, spec: ModelSpec):
        super().__init__(spec)
        self.require_nchw_float()
        outputs = spec.extra.get("outputs") or {}
        if isinstance(outputs, str):
            outputs = {"output": outputs}
        if not isinstance(outputs, dict):
            raise ModelError(f"model folder {spec.folder}: yolov8 'outputs' must be a mapping such as "
                             "{output: output0}. Fix model.yaml.")
        self.output = str(outputs.get("output") or DEFAULT_OUTPUT)
        self.layout = str(spec.extra.get("output_layout", "auto")).lower()
        if self.layout not in LAYOUTS:
            raise ModelError(f"model folder {spec.folder}: output_layout '{self.layout}' is not one of "
                             f"{', '.join(LAYOUTS)} (channels_first = [N, 4+C, A] as Ultralytics exports, "
                             "anchors_first = [N, A, 4+C]). Fix model.yaml.")
        try:
            self.pre_nms_top_k = int(spec.extra.get("pre_nms_top_k", 1000))
        except (TypeError, ValueError):
            raise ModelError(f"model folder {spec.folder}: pre_nms_top_k must be an integer. Fix model.yaml.") from None
        self.channels = 4 + len(spec.classes)
        self.nms_iou = spec.nms_iou

    @property
    def output_names(self) -> list[str]:
        return [self.output]

    def _layout_of(self, shape: tuple[int, ...]) -> str | None:
        """``channels_first`` or ``anchors_first`` for a rank-3 output shape; None when it fits
        neither; ``ambiguous`` when A == 4+C and model.yaml did not say."""
        if len(shape) != 3:
            return None
        first, last = shape[1] == self.channels, shape[2] == self.channels
        if self.layout == "channels_first":
            return "channels_first" if first else None
        if self.layout == "anchors_first":
            return "anchors_first" if last else None
        if first and last:
            return "ambiguous"
        return "channels_first" if first else "anchors_first" if last else None

    def check_outputs(self, outputs: dict[str, np.ndarray], batch: int) -> None:
        """One float tensor [batch, 4+len(classes), A] (or [batch, A, 4+len(classes)]), A >= 1."""
        super().check_outputs(outputs, batch)
        arr = outputs[self.output]
        c, n_cls = self.channels, len(self.spec.classes)
        expected = {"channels_first": f"[{batch}, {c}, A]", "anchors_first": f"[{batch}, A, {c}]"}.get(
            self.layout, f"[{batch}, {c}, A] or [{batch}, A, {c}]") + f" (4 box values + {n_cls} classes per anchor)"
        layout = self._layout_of(arr.shape)
        if layout == "ambiguous":
            raise self.shape_error(self.output, expected, arr,
                                   f"A = 4+C = {c}, so the shape does not say which axis is which: set "
                                   "output_layout: channels_first (Ultralytics) or anchors_first in model.yaml.")
        if layout is None:
            if arr.ndim != 3:
                fix = ("Check 'outputs' in model.yaml: a YOLOv8/YOLO11 detection export has one rank-3 output "
                       "(export with nms=False; end-to-end exports such as YOLOv10/YOLO26 are other formats).")
            elif self.layout != "auto" and c in arr.shape[1:]:
                other = "anchors_first" if self.layout == "channels_first" else "channels_first"
                fix = f"The {c} channels are on the other axis: set output_layout: {other}."
            elif c + 1 in arr.shape[1:]:
                fix = (f"{c + 1} channels is 4 + 1 + {n_cls}: a YOLOv5/YOLOv7 head (box, objectness, classes), "
                       "which format 'yolov8' does not decode, or model.yaml lists one class too few.")
            elif min(arr.shape[1:]) <= 4:
                fix = "Neither axis has room for 4 box values and class scores: this is not a YOLOv8 head."
            else:
                guess = min(arr.shape[1:])  # the class axis is the short one (A is in the thousands)
                fix = (f"model.yaml lists {n_cls} classes; if the {guess}-long axis holds the channels, the "
                       f"model has {guess - 4} classes. Fix 'classes' to the model's own class names in "
                       "index order (Ultralytics stores them in the ONNX metadata 'names'); -seg and -pose "
                       "exports carry extra channels and are not this format.")
            raise self.shape_error(self.output, expected, arr, fix)
        if arr.shape[2 if layout == "channels_first" else 1] < 1:
            raise self.shape_error(self.output, expected, arr, "The output has no anchors: check the export.")
        self.require_float(self.output, arr)

    def decode(self, outputs: dict[str, np.ndarray], sizes: Sequence[Size]) -> list[list[DetectedObject]]:
        n = len(sizes)
        out = outputs[self.output]
        layout = self._layout_of(out.shape)
        if layout not in ("channels_first", "anchors_first") or out.shape[0] != n:
            self.check_outputs(outputs, n)  # raises, saying what is wrong
        if layout == "anchors_first":
            out = out.transpose(0, 2, 1)  # a view: [N, 4+C, A]
        scores = out[:, 4:, :]
        best = scores.max(axis=1)  # [N, A]: one pass over all scores, then work on the few over it
        img, anchor = np.nonzero(best >= self.score_threshold)
        cls = scores[img, :, anchor].argmax(axis=1)  # [K, C] rows -> best class per candidate
        keep = self.kept_mask[cls]
        img, anchor, cls = img[keep], anchor[keep], cls[keep]
        conf = best[img, anchor].astype(np.float64)
        sel = self.top_k_per_image(img, conf, self.pre_nms_top_k)
        img, anchor, cls, conf = img[sel], anchor[sel], cls[sel], conf[sel]
        cx, cy, w, h = out[img, :4, anchor].astype(np.float64).T
        size = np.array([self.width, self.height, self.width, self.height], dtype=np.float64)
        # Clipped before NMS (as Ultralytics does), so overlap is judged on the boxes reported.
        boxes = np.clip(np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1), 0.0, size)
        keep = self.nms_per_image(n, img, boxes, conf, cls, self.nms_iou)
        boxes = self.to_frame(boxes[keep], img[keep], sizes)
        return self.to_objects(n, img[keep], cls[keep], conf[keep], boxes)
