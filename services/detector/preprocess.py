"""Frame bytes to model input: JPEG decode, resize (plain or letterbox), and packing a batch into one
input tensor; and the way back for boxes (model-input pixels -> normalised to the original frame).

Everything here is per image or per channel in numpy/OpenCV (both release the GIL); nothing loops
over pixels in Python. Packing writes into a caller-owned buffer so a steady stream of batches does
not allocate a new multi-megabyte tensor each time.
"""

from __future__ import annotations

import threading
from typing import Sequence

import cv2
import numpy as np
import simplejpeg

# A 2 MB JPEG can claim 65500x65500 pixels (12 GB decoded); refuse anything bigger than ~8K before
# decoding. 8K UHD is 33 MP.
MAX_IMAGE_PIXELS = 40_000_000


class BadImage(ValueError):
    """Frame bytes that are not a decodable JPEG (corrupt, truncated, unsupported, absurd size)."""


def opencv_on_calling_thread() -> None:
    """Make OpenCV run each call on the thread that makes it. A worker's parallelism is across batches
    (its prepare threads and sessions); OpenCV's own pool split each resize over the cores and then
    spun its idle threads (sched_yield) beside the model's: 0.3 ms of CPU a frame wasted here (2.45
    against 2.15 ms a frame around the model, three alternating drains each), nothing gained."""
    cv2.setNumThreads(1)


def decode_jpeg(data: bytes, min_width: int = 0, min_height: int = 0) -> np.ndarray:
    """Decode a JPEG to a BGR uint8 array (H, W, 3).

    With ``min_width``/``min_height`` (the model input), libjpeg-turbo decodes at 1/2, 1/4 or 1/8
    scale when that is still at least that big: a 1080p frame for a 416 model decodes at 960x540
    (measured here: 7.9 -> 6.2 ms, and a cheaper resize after). Scales between 1/2 and 1 are not
    used: they decode slower than full size (640x480 at 7/8: 2.6 ms against 1.2 ms). Boxes are
    normalised, so the scale never shows in the output. Raises ``BadImage`` for anything that is
    not a usable JPEG.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BadImage(f"expected JPEG bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise BadImage("empty frame: no JPEG bytes")
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except Exception as exc:  # simplejpeg raises ValueError, but a library must not crash the worker
        raise BadImage(f"not a JPEG ({len(data)} bytes): {exc}") from None
    if width <= 0 or height <= 0 or width * height > MAX_IMAGE_PIXELS:
        raise BadImage(f"JPEG claims {width}x{height} pixels; the limit is {MAX_IMAGE_PIXELS} pixels")
    if colorspace == "CMYK":
        raise BadImage("CMYK JPEG is not supported; encode camera frames as YCbCr or grayscale")
    try:
        # strict=True turns libjpeg's "premature end of data" warnings (truncated frames, which it
        # would otherwise pad with grey) into errors.
        img = simplejpeg.decode_jpeg(data, colorspace="BGR", min_width=min_width, min_height=min_height,
                                     min_factor=2.0 if (min_width or min_height) else 1.0, strict=True)
    except Exception as exc:
        raise BadImage(f"corrupt or truncated JPEG ({width}x{height}, {len(data)} bytes): {exc}") from None
    return img


def resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """Plain (non-letterbox) resize to exactly ``width`` x ``height``."""
    if img.shape[1] == width and img.shape[0] == height:
        return img
    # Bilinear, as NanoDet's and most detectors' training pipelines resize: INTER_AREA would alias
    # less on big reductions but costs 2 ms instead of 0.25 for 640x480 -> 300x300, and
    # decode_jpeg's reduced-scale decode already takes care of the big reductions.
    return cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)


# Ultralytics pads letterboxed inputs with this grey (before normalisation); its exports were
# trained on it, so the padding looks like "nothing here" to them.
LETTERBOX_FILL = 114


def letterbox_geometry(frame_width: int, frame_height: int, width: int, height: int) -> tuple[int, int, int, int]:
    """Where a ``frame_width`` x ``frame_height`` frame lands in a ``width`` x ``height`` letterboxed
    input: ``(new_width, new_height, left, top)``: scaled to fit with its aspect ratio kept, centred,
    the rest padded. Rounds as Ultralytics' ``LetterBox`` does, so its exports see what they were
    trained on."""
    r = min(width / frame_width, height / frame_height)
    new_w = min(width, max(1, int(round(frame_width * r))))
    new_h = min(height, max(1, int(round(frame_height * r))))
    left = max(0, int(round((width - new_w) / 2 - 0.1)))
    top = max(0, int(round((height - new_h) / 2 - 0.1)))
    return new_w, new_h, left, top


def letterbox(img: np.ndarray, width: int, height: int, fill: int = LETTERBOX_FILL) -> np.ndarray:
    """Resize keeping the aspect ratio and pad to exactly ``width`` x ``height`` with grey ``fill``."""
    new_w, new_h, left, top = letterbox_geometry(img.shape[1], img.shape[0], width, height)
    small = resize(img, new_w, new_h)
    if (new_w, new_h) == (width, height):
        return small
    return cv2.copyMakeBorder(small, top, height - new_h - top, left, width - new_w - left,
                              cv2.BORDER_CONSTANT, value=(fill, fill, fill))


def fit(img: np.ndarray, width: int, height: int, mode: str = "stretch") -> np.ndarray:
    """The model input for one frame: ``stretch`` (plain resize) or ``letterbox`` (``input.resize``
    in model.yaml)."""
    if mode == "letterbox":
        return letterbox(img, width, height)
    return resize(img, width, height)


def boxes_to_frame(boxes: np.ndarray, image_idx: np.ndarray, sizes: Sequence[tuple[int, int]], width: int,
                   height: int, mode: str = "stretch") -> np.ndarray:
    """The inverse of ``fit`` for boxes: (x1, y1, x2, y2) in model-input pixels, box k belonging to
    frame ``image_idx[k]`` of (width, height) ``sizes`` -> normalised to that frame (not clipped).
    A stretched input maps by one division; a letterboxed one removes each frame's padding and scale
    (computed once per frame, not per box)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if mode != "letterbox":
        return boxes / np.array([width, height, width, height], dtype=np.float64)
    geo = np.array([letterbox_geometry(w, h, width, height) for w, h in sizes], dtype=np.float64).reshape(-1, 4)
    new_w, new_h, left, top = geo[np.asarray(image_idx, dtype=np.int64)].T
    offset = np.stack([left, top, left, top], axis=1)
    scale = np.stack([new_w, new_h, new_w, new_h], axis=1)
    return (boxes - offset) / scale


def _check_bgr(img: np.ndarray, i: int) -> None:
    if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        shape = getattr(img, "shape", None)
        raise BadImage(f"image {i} must be uint8 BGR (H, W, 3), got {type(img).__name__} {shape} "
                       f"{getattr(img, 'dtype', '')}")


class InputBuffers:
    """The input batch tensors of one model, reused across batches: ``take`` hands out a free buffer that
    fits (a slice of it) or a new one, ``give`` takes it back once the batch's run is over. The worker
    prepares a batch while the one before it runs, so two or three are out at once; a buffer is never
    handed out again before it came back. Thread-safe: batches are prepared on one thread and run on
    another."""

    KEEP = 4  # buffers kept for reuse; more come back only after an unusual burst

    def __init__(self):
        self._free: list[np.ndarray] = []
        self._lock = threading.Lock()

    def take(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        with self._lock:
            for i, buf in enumerate(self._free):
                if buf.dtype == dtype and buf.shape[1:] == tuple(shape[1:]) and buf.shape[0] >= shape[0]:
                    return self._free.pop(i)[:shape[0]]
        return np.empty(shape, dtype)

    def give(self, arr: np.ndarray) -> None:
        buf = arr if arr.base is None else arr.base  # the whole buffer behind a batch's slice
        with self._lock:
            if len(self._free) < self.KEEP and all(b is not buf for b in self._free):
                self._free.append(buf)


def _out(out: np.ndarray | None, shape: tuple[int, ...], dtype) -> np.ndarray:
    if out is None:
        return np.empty(shape, dtype)
    if out.shape != shape or out.dtype != dtype:
        raise ValueError(f"output buffer is {out.dtype}{out.shape}, need {np.dtype(dtype)}{shape}")
    return out


def pack_nchw(images: Sequence[np.ndarray], width: int, height: int, mean: Sequence[float],
              std: Sequence[float], rgb: bool = False, out: np.ndarray | None = None,
              resize_mode: str = "stretch") -> np.ndarray:
    """Resize each BGR image (``fit``: stretch or letterbox) and write ``(x - mean) / std`` per
    channel into float32 [N, 3, H, W].

    ``mean``/``std`` are in the model's channel order (``rgb`` flips BGR to RGB). ``out``, when given,
    must have exactly that shape (e.g. one from ``InputBuffers.take``, reused across batches); it is returned.
    """
    n = len(images)
    out = _out(out, (n, 3, height, width), np.float32)
    order = (2, 1, 0) if rgb else (0, 1, 2)
    scale = [1.0 / float(s) for s in std]
    for i, img in enumerate(images):
        _check_bgr(img, i)
        small = fit(img, width, height, resize_mode)
        for c, src in enumerate(order):
            # Channel by channel into the final NCHW slot: one strided read, one contiguous write,
            # no HWC float32 temporary.
            dst = out[i, c]
            np.subtract(small[:, :, src], np.float32(mean[c]), out=dst, dtype=np.float32)
            dst *= np.float32(scale[c])
    return out


def pack_nhwc_uint8(images: Sequence[np.ndarray], width: int, height: int, rgb: bool = True,
                    out: np.ndarray | None = None, resize_mode: str = "stretch") -> np.ndarray:
    """Resize each BGR image (``fit``: stretch or letterbox) into uint8 [N, H, W, 3] (RGB unless
    ``rgb`` is False)."""
    n = len(images)
    out = _out(out, (n, height, width, 3), np.uint8)
    for i, img in enumerate(images):
        _check_bgr(img, i)
        small = fit(img, width, height, resize_mode)
        if rgb:
            cv2.cvtColor(small, cv2.COLOR_BGR2RGB, dst=out[i])
        else:
            out[i] = small
    return out
