"""NanoDet (GFL head) outputs: per stride, class scores [N, A, C] (sigmoid applied) and box-side
distributions [N, A, 4 * (reg_max + 1)] (logits over distance bins). No NMS inside the graph.

Decode, for the whole batch at once: keep (image, cell, class) triples over the threshold for mapped
classes only, take per side the expected distance Σ softmax(logits)·[0..reg_max]·stride around the
cell centre, then NMS per site label within each frame, then back to each frame's coordinates
(a plain resize as NanoDet was trained, or a letterbox with ``input.resize: letterbox``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from aimass.contracts import DetectedObject
from aimass_detector.adapters.base import Adapter, Size
from aimass_detector.model import ModelError, ModelSpec

# As exported from the TF.js NanoDet-g (see models/nanodet-g-416/model.yaml).
DEFAULT_OUTPUTS = [
    {"stride": 8, "scores": "Identity:0", "boxes": "Identity_3:0"},
    {"stride": 16, "scores": "Identity_1:0", "boxes": "Identity_4:0"},
    {"stride": 32, "scores": "Identity_2:0", "boxes": "Identity_5:0"},
]


def cell_centres(width: int, height: int, strides: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Centres [A, 2] (x, y in input pixels) and stride [A] of every cell, levels in order, each
    level's grid row-major."""
    centres, per_cell = [], []
    for s in strides:
        gw, gh = width // s, height // s
        ys, xs = np.divmod(np.arange(gw * gh), gw)
        centres.append(np.stack([(xs + 0.5) * s, (ys + 0.5) * s], axis=1))
        per_cell.append(np.full(gw * gh, s, dtype=np.float64))
    return np.concatenate(centres), np.concatenate(per_cell)


def softmax_expectation(logits: np.ndarray) -> np.ndarray:
    """[..., B] logits -> Σ softmax · [0..B-1] over the last axis (the expected bin)."""
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e @ np.arange(logits.shape[-1], dtype=e.dtype)) / e.sum(axis=-1)


class NanoDetAdapter(Adapter):
    format = "nanodet"

    def __init__(self, spec: ModelSpec):
        super().__init__(spec)
        try:
            levels = spec.extra.get("outputs") or DEFAULT_OUTPUTS
            self.levels = [(int(o["stride"]), str(o["scores"]), str(o["boxes"])) for o in levels]
            self.reg_max = int(spec.extra.get("reg_max", 10))
            # Bounds the NMS work per image when a frame lights up everywhere (noise, glare).
            self.pre_nms_top_k = int(spec.extra.get("pre_nms_top_k", 1000))
        except (TypeError, KeyError, ValueError, AttributeError) as exc:
            raise ModelError(f"model folder {spec.folder}: nanodet 'outputs' must be a list of "
                             f"{{stride, scores, boxes}} ({exc}). Fix model.yaml.") from None
        biggest = max(s for s, _, _ in self.levels)
        if self.width % biggest or self.height % biggest:
            raise ModelError(f"model folder {spec.folder}: input {self.width}x{self.height} must be a "
                             f"multiple of the largest stride {biggest}. Fix input width/height.")
        self.nms_iou = spec.nms_iou
        self.centres, self.cell_strides = cell_centres(self.width, self.height, [s for s, _, _ in self.levels])

    @property
    def output_names(self) -> list[str]:
        return [name for _, scores, boxes in self.levels for name in (scores, boxes)]

    def check_outputs(self, outputs: dict[str, np.ndarray], batch: int) -> None:
        """Per stride s: scores [batch, (W/s)·(H/s), len(classes)] and boxes [batch, same cells,
        4·(reg_max+1)], both floating point."""
        super().check_outputs(outputs, batch)
        n_cls, bins = len(self.spec.classes), 4 * (self.reg_max + 1)
        for stride, s_name, b_name in self.levels:
            cells = (self.width // stride) * (self.height // stride)
            for name, last, what in ((s_name, n_cls, "scores"), (b_name, bins, "boxes")):
                arr = outputs[name]
                expected = f"[{batch}, {cells}, {last}] ({what} of stride {stride} at {self.width}x{self.height})"
                if arr.ndim == 3 and arr.shape[1:] == (cells, last):
                    self.require_float(name, arr)
                    continue
                other = bins if what == "scores" else n_cls
                if arr.ndim != 3:
                    fix = "Check 'outputs' in model.yaml: this is not a NanoDet head output."
                elif arr.shape[2] == other and arr.shape[2] != last:
                    fix = "It looks like the other output of the pair: swap 'scores' and 'boxes' in 'outputs'."
                elif arr.shape[1] != cells:
                    fix = (f"Stride {stride} at {self.width}x{self.height} has {cells} cells: check each "
                           "output's stride in 'outputs' and input width/height.")
                elif what == "scores":
                    fix = (f"model.yaml lists {n_cls} classes but the model scores {arr.shape[2]}: fix "
                           "'classes' (all the model's classes, in index order).")
                elif arr.shape[2] % 4 == 0:
                    fix = f"Its 4 sides have {arr.shape[2] // 4} bins each: set reg_max: {arr.shape[2] // 4 - 1}."
                else:
                    fix = "Its last dimension is not 4 sides x (reg_max + 1) bins: this is not a NanoDet GFL head."
                raise self.shape_error(name, expected, arr, fix)

    def decode(self, outputs: dict[str, np.ndarray], sizes: Sequence[Size]) -> list[list[DetectedObject]]:
        n = len(sizes)
        # Only the mapped classes' columns are gathered: 6 of 80 for the COCO default map.
        scores = np.concatenate([outputs[s][:, :, self.kept_classes] for _, s, _ in self.levels], axis=1)
        dists = np.concatenate([outputs[b] for _, _, b in self.levels], axis=1)
        if scores.shape[:2] != (n, len(self.centres)) or dists.shape[2] != 4 * (self.reg_max + 1):
            raise ValueError(f"nanodet outputs {scores.shape}/{dists.shape} do not fit batch {n}, "
                             f"{len(self.centres)} cells, reg_max {self.reg_max}")
        img, cell, k = np.nonzero(scores >= self.score_threshold)
        conf = scores[img, cell, k]
        sel = self.top_k_per_image(img, conf, self.pre_nms_top_k)
        img, cell, k, conf = img[sel], cell[sel], k[sel], conf[sel]
        cls = self.kept_classes[k]
        # Expected distance of each side (left, top, right, bottom) in input pixels.
        logits = dists[img, cell].reshape(-1, 4, self.reg_max + 1).astype(np.float64)
        ltrb = softmax_expectation(logits) * self.cell_strides[cell, None]
        c = self.centres[cell]
        size = np.array([self.width, self.height, self.width, self.height], dtype=np.float64)
        # Clipped before NMS (as NanoDet does), so overlap is judged on the boxes that are reported.
        boxes = np.clip(np.concatenate([c - ltrb[:, :2], c + ltrb[:, 2:]], axis=1), 0.0, size)
        # NMS per frame (per site label within it) so each frame stops at its own max_detections.
        keep = self.nms_per_image(n, img, boxes, conf, cls, self.nms_iou)
        boxes = self.to_frame(boxes[keep], img[keep], sizes)
        return self.to_objects(n, img[keep], cls[keep], conf[keep].astype(np.float64), boxes)
