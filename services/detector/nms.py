"""Greedy non-maximum suppression in numpy.

Per-group NMS uses the offset trick: each group's boxes are shifted by ``group * span`` (span larger
than any box extent), so boxes of different groups never overlap and one class-agnostic pass
suppresses only within groups. A group can be a class, or image*classes + class to run a whole
batch in one pass. Each loop turn keeps one box and drops everything overlapping it with one
vectorised IoU, so the loop runs once per kept box (bounded by ``max_detections``), never per pair.
"""

from __future__ import annotations

import numpy as np


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (x1, y1, x2, y2) box with each of ``boxes`` [K, 4]."""
    ix1 = np.maximum(box[0], boxes[:, 0])
    iy1 = np.maximum(box[1], boxes[:, 1])
    ix2 = np.minimum(box[2], boxes[:, 2])
    iy2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float,
        max_detections: int | None = None) -> np.ndarray:
    """Indices of the boxes kept, best score first. A box is suppressed when its IoU with a kept,
    higher-scoring box is strictly greater than ``iou_threshold`` (as torchvision does)."""
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    boxes = np.asarray(boxes, dtype=np.float64)
    # Stable sort so equal scores keep input order: deterministic output.
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    limit = len(order) if max_detections is None else max_detections
    keep: list[int] = []
    while order.size and len(keep) < limit:
        best = order[0]
        keep.append(int(best))
        rest = order[1:]
        order = rest[iou(boxes[best], boxes[rest]) <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, groups: np.ndarray, iou_threshold: float,
                max_detections: int | None = None) -> np.ndarray:
    """NMS independently within each group id (class, or image and class); indices kept, best first.
    ``max_detections`` caps the total across groups."""
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    boxes = np.asarray(boxes, dtype=np.float64)
    span = float(boxes.max() - boxes.min()) + 1.0
    shifted = boxes + (np.asarray(groups, dtype=np.float64) * span)[:, None]
    return nms(shifted, scores, iou_threshold, max_detections)
