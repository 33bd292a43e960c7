"""Real camera sources through OpenCV: video files, image folders, RTSP/HTTP streams and webcams."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


class SourceError(RuntimeError):
    pass


def resize_to_width(image: np.ndarray, width: int | None) -> np.ndarray:
    if not width or image.shape[1] == width:
        return image
    h = max(1, round(image.shape[0] * width / image.shape[1]))
    return cv2.resize(image, (width, h), interpolation=cv2.INTER_AREA)


def open_source(source: str, loop: bool = False) -> Iterator[np.ndarray]:
    """Frames (BGR) from ``source``: a folder of images, a video file, a URL (rtsp://, http://) or a
    device number. A folder or a file can loop, for testing."""
    path = Path(source)
    if path.is_dir():
        return _folder(path, loop)
    if source.isdigit():
        return _capture(int(source), source, loop=False)
    if not path.exists() and "://" not in source:
        raise SourceError(f"camera source {source!r} is neither a file, a folder, a URL nor a device number")
    return _capture(source, source, loop=loop and path.exists())


def _folder(path: Path, loop: bool) -> Iterator[np.ndarray]:
    # Checked here, not inside the generator, so a bad source fails when opened, not at the first read.
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SourceError(f"{path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return _read_files(files, loop)


def _read_files(files: list[Path], loop: bool) -> Iterator[np.ndarray]:
    while True:
        for f in files:
            img = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if img is not None:
                yield img
        if not loop:
            return


def _capture(target, label: str, loop: bool) -> Iterator[np.ndarray]:
    cap = cv2.VideoCapture(target)
    if not cap.isOpened():
        raise SourceError(f"OpenCV cannot open camera source {label!r}: check the path/URL, codec or device")
    return _read_capture(cap, loop)


def _read_capture(cap: cv2.VideoCapture, loop: bool) -> Iterator[np.ndarray]:
    try:
        while True:
            ok, img = cap.read()
            if not ok:
                if loop:
                    cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    ok, img = cap.read()
                if not ok:
                    return
            yield img
    finally:
        cap.release()
