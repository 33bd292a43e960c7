"""The interface every model output format implements, and the helpers they share.

An adapter owns both ends of one model family: ``prepare`` turns BGR frames into the model's input
feeds, ``decode`` turns the raw outputs into ``DetectedObject`` lists with boxes normalised to each
original frame and site labels from the class map, and ``check_outputs`` says, before anything is
decoded, whether the tensors a real run produced fit the format at all (the registry refuses an
upload that fails it). The engine never looks inside any of them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Sequence

import numpy as np

from aimass.contracts import DetectedObject
from aimass_detector.model import ModelError, ModelSpec
from aimass_detector.nms import batched_nms
from aimass_detector.preprocess import InputBuffers, boxes_to_frame, pack_nchw

Size = tuple[int, int]  # (width, height) of an original frame

# ONNX Runtime's type strings for the input dtypes model.yaml can declare.
_ORT_TYPES = {"float32": "tensor(float)", "uint8": "tensor(uint8)"}
DYNAMIC_BATCH_HINT = ("Export the model with a dynamic batch dimension (Ultralytics: dynamic=True; "
                      "torch.onnx.export: dynamic_axes={input: {0: 'batch'}, each output: {0: 'batch'}}): "
                      "the detector batches frames across cameras.")


def describe(arr) -> str:
    """``float32[2, 84, 8400]``: how an output came out, for error messages."""
    shape = getattr(arr, "shape", None)
    if shape is None:
        return f"a {type(arr).__name__}, not a tensor"
    return f"{getattr(arr, 'dtype', '?')}[{', '.join(str(d) for d in shape)}]"


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
        self.kept_mask = self.labels != ""
        if self.kept_classes.size == 0:
            raise ModelError(f"model folder {spec.folder}: class_map maps none of the model's classes, so "
                             "nothing would ever be detected. Add entries such as 'person: person'.")
        self.resize_mode = spec.input.resize
        self.rgb = spec.input.channels == "RGB"
        self.buffers = InputBuffers()  # the image input's batch tensors, taken by prepare, given back by release

    @property
    @abstractmethod
    def output_names(self) -> list[str]:
        """The outputs ``decode`` needs, fetched by name."""

    def prepare(self, images: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """BGR uint8 frames (any sizes) -> the feeds for one ``session.run`` of the whole batch. This
        default feeds float32 NCHW normalised by model.yaml's mean and std; formats fed otherwise
        override it."""
        out = self.buffers.take((len(images), 3, self.height, self.width), np.float32)
        return {self.input_name: pack_nchw(images, self.width, self.height, self.spec.input.mean, self.spec.input.std,
                                           rgb=self.rgb, out=out, resize_mode=self.resize_mode)}

    def release(self, feeds: dict[str, np.ndarray]) -> None:
        """Give the image input of ``prepare``'s feeds back for reuse, once the run that read them is over."""
        self.buffers.give(feeds[self.input_name])

    @abstractmethod
    def decode(self, outputs: dict[str, np.ndarray], sizes: Sequence[Size]) -> list[list[DetectedObject]]:
        """Raw outputs of one run -> per frame, its objects (best score first)."""

    @property
    def feed_names(self) -> list[str]:
        """The graph inputs ``prepare`` feeds (the image, plus any extra input a format needs)."""
        return [self.input_name]

    def check_session(self, inputs: Sequence, outputs: Sequence) -> None:
        """Fail early, with the names that do exist, when model.yaml and the ONNX graph disagree:
        input and output names, every input the graph requires being fed, and the image input's
        dtype, rank, channel count and (when the graph fixes them) height and width. Output shapes
        are only known for sure after a run: see ``check_outputs``."""
        where = f"model folder {self.spec.folder}"
        in_names = [i.name for i in inputs]
        out_names = [o.name for o in outputs]
        if self.input_name not in in_names:
            raise ModelError(f"{where}: model.yaml input '{self.input_name}' is not "
                             f"an input of the ONNX graph (it has {in_names}). Fix input.name.")
        missing = [n for n in self.output_names if n not in out_names]
        if missing:
            raise ModelError(f"{where}: outputs {missing} named in model.yaml are not "
                             f"in the ONNX graph (it has {out_names}). Fix 'outputs'.")
        unfed = [n for n in in_names if n not in self.feed_names]
        if unfed:
            raise ModelError(f"{where}: the ONNX graph also needs inputs {unfed}, which format "
                             f"'{self.format}' does not feed (it feeds {self.feed_names}). Export the model "
                             "with the image as its only input, or use a format that feeds the others.")
        inp = inputs[in_names.index(self.input_name)]
        dtype, layout = self.spec.input.dtype, self.spec.input.layout
        want = _ORT_TYPES[dtype]
        got = getattr(inp, "type", want)
        if got != want:
            extra = " float16 inputs are not supported: export in float32 (Ultralytics: half=False)." \
                if "float16" in got else ""
            raise ModelError(f"{where}: input '{self.input_name}' is {got} in the ONNX graph but model.yaml "
                             f"says dtype {dtype} ({want}). Fix input.dtype to match the graph.{extra}")
        shape = getattr(inp, "shape", None)
        if shape is None:
            return
        pattern = "[N, 3, H, W]" if layout == "NCHW" else "[N, H, W, 3]"
        if len(shape) != 4:
            raise ModelError(f"{where}: input '{self.input_name}' has rank {len(shape)} ({list(shape)}); "
                             f"an image batch with layout {layout} is {pattern}. Check input.name and the export.")
        c_axis, h_axis, w_axis = (1, 2, 3) if layout == "NCHW" else (3, 1, 2)
        if isinstance(shape[c_axis], int) and shape[c_axis] != 3:
            other = "NHWC" if layout == "NCHW" else "NCHW"
            other_c = 3 if layout == "NCHW" else 1
            hint = f"set input.layout: {other}" if shape[other_c] == 3 else \
                "the detector feeds 3-channel colour images"
            raise ModelError(f"{where}: input '{self.input_name}' is {list(shape)}, which is not {pattern} "
                             f"(input.layout {layout}): {hint}.")
        fixed_h, fixed_w = shape[h_axis], shape[w_axis]
        if (isinstance(fixed_h, int) and fixed_h != self.height) or (isinstance(fixed_w, int) and fixed_w != self.width):
            raise ModelError(f"{where}: the ONNX graph takes a fixed {fixed_w}x{fixed_h} input ({list(shape)}) "
                             f"but model.yaml says {self.width}x{self.height}. Set input width: {fixed_w} and "
                             f"height: {fixed_h}, or export the model at the size you want.")

    def check_outputs(self, outputs: dict[str, np.ndarray], batch: int) -> None:
        """Raise ``ModelError`` when the tensors of a real run on ``batch`` frames do not fit this
        format (what was expected, what came out, what to fix). The base checks that every output
        the format reads is there, is a tensor, and has one row per frame; formats add their
        shapes and channel counts (and call this first)."""
        where = f"model folder {self.spec.folder}"
        missing = [n for n in self.output_names if n not in outputs]
        if missing:
            raise ModelError(f"{where}: a run gave no outputs {missing} (it gave {sorted(outputs)}). "
                             "Fix 'outputs' in model.yaml.")
        for name in self.output_names:
            arr = outputs[name]
            if not isinstance(arr, np.ndarray):
                raise ModelError(f"{where}: format '{self.format}' expects output '{name}' to be a tensor, "
                                 f"the model gave {describe(arr)}. Fix 'outputs' in model.yaml.")
            if arr.ndim == 0 or arr.shape[0] != batch:
                raise ModelError(f"{where}: format '{self.format}' expects output '{name}' to have one row per "
                                 f"frame (first dimension {batch} for a batch of {batch}), the model gave "
                                 f"{describe(arr)}. {DYNAMIC_BATCH_HINT}")

    def shape_error(self, name: str, expected: str, arr, fix: str) -> ModelError:
        """The ``check_outputs`` error: output ``name`` should be ``expected`` but came out as ``arr``."""
        return ModelError(f"model folder {self.spec.folder}: format '{self.format}' expects output '{name}' "
                          f"shaped {expected}, the model gave {describe(arr)}. {fix}")

    def require_float(self, name: str, arr) -> None:
        if not np.issubdtype(arr.dtype, np.floating):
            raise ModelError(f"model folder {self.spec.folder}: format '{self.format}' expects output '{name}' "
                             f"to be floating point, the model gave {describe(arr)}. Check 'outputs' in "
                             "model.yaml: this looks like another output.")

    # ---- helpers the decoders share ----------------------------------------------------------

    def to_frame(self, boxes: np.ndarray, image_idx: np.ndarray, sizes: Sequence[Size]) -> np.ndarray:
        """(x1, y1, x2, y2) in model-input pixels -> normalised to each box's original frame, undoing
        the stretch or the letterbox of ``prepare``."""
        return boxes_to_frame(boxes, image_idx, sizes, self.width, self.height, self.resize_mode)

    @staticmethod
    def top_k_per_image(image_idx: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
        """Indices of the ``k`` best scores of each image (all of them where an image has fewer);
        bounds the NMS work when a frame lights up everywhere (noise, glare)."""
        if len(scores) <= k:
            return np.arange(len(scores))
        order = np.lexsort((-scores, image_idx))
        ranked = image_idx[order]
        rank = np.arange(len(order)) - np.searchsorted(ranked, ranked, side="left")
        return order[rank < k]

    def nms_per_image(self, n_images: int, image_idx: np.ndarray, boxes: np.ndarray, scores: np.ndarray,
                      class_ids: np.ndarray, iou: float) -> np.ndarray:
        """Indices kept by NMS per site label within each frame, each frame capped at
        ``max_detections`` (so a frame that lights up everywhere costs at most that many greedy
        turns). The loop is over frames, never boxes."""
        kept = []
        for i in range(n_images):
            idx = np.flatnonzero(image_idx == i)
            if idx.size:
                kept.append(idx[batched_nms(boxes[idx], scores[idx], self.label_group[class_ids[idx]], iou,
                                            self.max_detections)])
        return np.concatenate(kept) if kept else np.zeros(0, dtype=np.int64)

    def require_nchw_float(self) -> None:
        """For formats whose ``prepare`` packs float32 NCHW (YOLO, DETR-style exports)."""
        if (self.spec.input.layout, self.spec.input.dtype) != ("NCHW", "float32"):
            raise ModelError(f"model folder {self.spec.folder}: format '{self.format}' feeds float32 NCHW "
                             f"input, model.yaml says {self.spec.input.dtype} {self.spec.input.layout}. Set "
                             "input.layout: NCHW and input.dtype: float32 (with mean/std).")

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
