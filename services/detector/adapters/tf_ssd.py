"""TensorFlow Object Detection API SSD exports (e.g. SSDLite-MobileNetV2): uint8 NHWC RGB in, NMS
inside the graph; out come up to M boxes per image as normalised (ymin, xmin, ymax, xmax), scores,
1-based class ids as floats (0 = background) and a valid count per image."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from aimass.contracts import DetectedObject
from aimass_detector.adapters.base import Adapter, Size
from aimass_detector.model import ModelSpec
from aimass_detector.preprocess import pack_nhwc_uint8

DEFAULT_OUTPUTS = {"boxes": "detection_boxes:0", "scores": "detection_scores:0",
                   "classes": "detection_classes:0", "count": "num_detections:0"}


class TfSsdAdapter(Adapter):
    format = "tf_ssd"

    def __init__(self, spec: ModelSpec):
        super().__init__(spec)
        self.names = {**DEFAULT_OUTPUTS, **(spec.extra.get("outputs") or {})}

    @property
    def output_names(self) -> list[str]:
        return [self.names[k] for k in ("boxes", "scores", "classes", "count")]

    def prepare(self, images: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        out = self.buffers.take((len(images), self.height, self.width, 3), np.uint8)
        return {self.input_name: pack_nhwc_uint8(images, self.width, self.height, rgb=self.rgb, out=out,
                                                 resize_mode=self.resize_mode)}

    def check_outputs(self, outputs: dict[str, np.ndarray], batch: int) -> None:
        """boxes [batch, M, 4], scores and classes [batch, M], count [batch] (or [batch, 1])."""
        super().check_outputs(outputs, batch)
        names = self.names
        boxes = outputs[names["boxes"]]
        if boxes.ndim != 3 or boxes.shape[2] != 4:
            raise self.shape_error(names["boxes"], f"[{batch}, M, 4] (ymin, xmin, ymax, xmax)", boxes,
                                   "Check 'outputs' in model.yaml: this is not a TF Object Detection API "
                                   "detection_boxes output.")
        m = boxes.shape[1]
        for key in ("scores", "classes"):
            arr = outputs[names[key]]
            if arr.shape != (batch, m):
                raise self.shape_error(names[key], f"[{batch}, {m}] (one per box of '{names['boxes']}')", arr,
                                       f"Check outputs.{key} in model.yaml (TF OD API detection_{key}).")
        count = outputs[names["count"]]
        if count.shape not in ((batch,), (batch, 1)):
            raise self.shape_error(names["count"], f"[{batch}] (valid boxes per frame)", count,
                                   "Check outputs.count in model.yaml (TF OD API num_detections).")
        for key in ("boxes", "scores"):
            self.require_float(names[key], outputs[names[key]])

    def decode(self, outputs: dict[str, np.ndarray], sizes: Sequence[Size]) -> list[list[DetectedObject]]:
        n = len(sizes)
        boxes = outputs[self.names["boxes"]]
        scores = outputs[self.names["scores"]]
        classes = np.rint(outputs[self.names["classes"]]).astype(np.int64)
        count = outputs[self.names["count"]].astype(np.int64).reshape(-1)
        valid = np.arange(scores.shape[1])[None, :] < count[:, None]
        known = (classes >= 0) & (classes < len(self.labels))
        valid &= known & (scores >= self.score_threshold)
        valid[known] &= self.labels[classes[known]] != ""
        img, j = np.nonzero(valid)
        ymin, xmin, ymax, xmax = boxes[img, j].astype(np.float64).T
        xyxy = np.stack([xmin, ymin, xmax, ymax], axis=1)
        if self.resize_mode == "letterbox":  # normalised to the padded input: via input pixels
            xyxy = self.to_frame(xyxy * [self.width, self.height, self.width, self.height], img, sizes)
        return self.to_objects(n, img, classes[img, j], scores[img, j].astype(np.float64), xyxy)
