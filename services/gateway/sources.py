"""Camera sources: video files (looped for testing), image folders, RTSP and other streams through
OpenCV/FFmpeg, HTTP MJPEG (and JPEG snapshot URLs) through our own reader, and webcams.

A source is an iterator of BGR frames. ``parse_source`` says what a source string is; ``open_source``
opens it (and raises SourceError when it cannot); ``Grabber`` keeps a live source (a stream or a
webcam) running in its own thread, reconnecting with exponential back-off and jitter when it drops,
and holds the latest frame for the camera loop to sample. The back-off and the multipart parser are
pure objects, tested without sockets.
"""

from __future__ import annotations

import base64
import logging
import os
import random
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import simplejpeg

log = logging.getLogger("aimass.gateway")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtp", "udp", "srt")
MAX_MJPEG_FRAME = 16 * 1024 * 1024  # a multipart part larger than this is not a camera frame


class SourceError(RuntimeError):
    pass


SourceKind = Literal["stream", "http", "webcam", "file", "folder", "scene"]


@dataclass(frozen=True)
class SourceSpec:
    """What a source string names. ``label`` is the string with any password masked (for logs and
    heartbeats); ``live`` sources run at their own pace (frames between samples are dropped), the
    others are read on demand (a file is slowed to the camera's fps, never sampled)."""

    kind: SourceKind
    target: str
    label: str

    @property
    def live(self) -> bool:
        return self.kind in ("stream", "http", "webcam")


def mask_credentials(url: str) -> str:
    """``rtsp://user:secret@host/x`` -> ``rtsp://user:***@host/x``."""
    return re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://[^/@:]*):[^/@]*@", r"\1:***@", url)


def parse_source(source: str) -> SourceSpec:
    """Classify ``source``: ``rtsp://...`` (and other FFmpeg stream URLs), ``http(s)://...`` (MJPEG
    stream or JPEG snapshot), a device number (webcam), ``scene:CAMERA`` (a simulated scene from the
    site file), an existing folder or file. Anything else is a SourceError."""
    s = source.strip()
    scheme = s.split("://", 1)[0].lower() if "://" in s else ""
    if scheme in STREAM_SCHEMES:
        return SourceSpec("stream", s, mask_credentials(s))
    if scheme in ("http", "https"):
        return SourceSpec("http", s, mask_credentials(s))
    if scheme:
        raise SourceError(f"camera source {mask_credentials(s)!r}: unknown scheme {scheme!r}; "
                          f"use {', '.join(STREAM_SCHEMES)}, http or https")
    if s.isdigit():
        return SourceSpec("webcam", s, f"webcam {s}")
    if s.startswith("scene:"):
        return SourceSpec("scene", s[6:], s)
    p = Path(s)
    if p.is_dir():
        return SourceSpec("folder", s, s)
    if p.exists():
        return SourceSpec("file", s, s)
    raise SourceError(f"camera source {source!r} is neither a file, a folder, a URL nor a device number")


def resize_to_width(image: np.ndarray, width: int | None) -> np.ndarray:
    if not width or image.shape[1] == width:
        return image
    h = max(1, round(image.shape[0] * width / image.shape[1]))
    return cv2.resize(image, (width, h), interpolation=cv2.INTER_AREA)


# ------------------------------------------------------------------ back-off policy (pure)
class Backoff:
    """Exponential back-off with jitter: ``initial_s``, times ``factor`` per failed attempt, at most
    ``max_s``; each delay is drawn from [(1 - jitter) * d, d] so that many cameras that dropped
    together (a switch rebooted) do not all knock again at the same instant. ``reset()`` after a
    success."""

    def __init__(self, initial_s: float = 0.5, max_s: float = 30.0, factor: float = 2.0, jitter: float = 0.2,
                 rng: random.Random | None = None):
        if initial_s <= 0 or max_s < initial_s or factor < 1 or not 0 <= jitter < 1:
            raise ValueError("back-off needs 0 < initial_s <= max_s, factor >= 1 and 0 <= jitter < 1")
        self.initial_s, self.max_s, self.factor, self.jitter = initial_s, max_s, factor, jitter
        self.rng = rng or random.Random()
        self.attempts = 0

    def ceiling(self, attempt: int) -> float:
        """The delay before jitter for the ``attempt``-th retry (0-based)."""
        return min(self.max_s, self.initial_s * self.factor ** min(attempt, 64))

    def next_delay(self) -> float:
        d = self.ceiling(self.attempts)
        self.attempts += 1
        return d * (1.0 - self.jitter * self.rng.random())

    def reset(self) -> None:
        self.attempts = 0


# ------------------------------------------------------------------ MJPEG over HTTP
class MultipartJpegParser:
    """Splits a ``multipart/x-mixed-replace`` byte stream (or any concatenation of JPEGs) into JPEG
    files. A part's ``Content-Length`` is used when its headers give one; otherwise the JPEG runs
    from its start marker (FF D8) to its end marker (FF D9). Pure: ``feed(bytes)`` returns the
    JPEGs completed by those bytes."""

    _LENGTH = re.compile(rb"content-length:\s*(\d+)", re.I)

    def __init__(self, max_frame: int = MAX_MJPEG_FRAME):
        self.max_frame = max_frame
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out = []
        while True:
            start = self._buf.find(b"\xff\xd8")
            if start < 0:
                # Keep a tail that may hold part headers or half a start marker.
                if len(self._buf) > 4096:
                    del self._buf[:-4096]
                return out
            m = None
            for m in self._LENGTH.finditer(self._buf, 0, start):
                pass
            if m is not None:
                n = int(m.group(1))
                if n > self.max_frame:
                    raise SourceError(f"an MJPEG part of {n} bytes is larger than {self.max_frame}")
                if len(self._buf) < start + n:
                    return out
                out.append(bytes(self._buf[start:start + n]))
                del self._buf[:start + n]
                continue
            end = self._buf.find(b"\xff\xd9", start + 2)
            if end < 0:
                if len(self._buf) - start > self.max_frame:
                    raise SourceError(f"no end of JPEG within {self.max_frame} bytes: not an MJPEG stream")
                return out
            out.append(bytes(self._buf[start:end + 2]))
            del self._buf[:end + 2]


def _request(url: str) -> urllib.request.Request:
    """A request for ``url`` with its user:password (if any) moved into a Basic auth header."""
    parts = urllib.parse.urlsplit(url)
    headers = {"User-Agent": "aimass-gateway"}
    if parts.username is not None:
        cred = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(cred.encode()).decode()
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        url = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return urllib.request.Request(url, headers=headers)


def decode_jpeg(jpeg: bytes) -> np.ndarray:
    try:
        return simplejpeg.decode_jpeg(jpeg, colorspace="BGR")
    except ValueError as exc:
        raise SourceError(f"a frame is not a readable JPEG: {exc}") from None


def http_frames(url: str, timeout_s: float = 10.0, min_interval_s: float = 0.0) -> Iterator[np.ndarray]:
    """Frames from an HTTP camera: an MJPEG stream (``multipart/x-mixed-replace``) read as it
    comes, or a JPEG snapshot URL (``image/jpeg``) fetched again every ``min_interval_s``. Raises
    SourceError when the camera cannot be reached or sends something else; ends when the camera
    closes the stream (a live source's grabber then reconnects)."""
    label = mask_credentials(url)
    try:
        resp = urllib.request.urlopen(_request(url), timeout=timeout_s)  # noqa: S310 (the operator's URL)
    except (urllib.error.URLError, OSError) as exc:
        raise SourceError(f"cannot reach camera {label}: {getattr(exc, 'reason', exc)}") from None
    ctype = resp.headers.get("Content-Type", "").lower()
    if ctype.startswith("image/jpeg"):
        resp.close()
        return _snapshots(url, timeout_s, min_interval_s)
    if not ctype.startswith("multipart/"):
        resp.close()
        raise SourceError(f"camera {label} answered {ctype or 'no content type'}, neither an MJPEG stream "
                          "(multipart/x-mixed-replace) nor a JPEG snapshot; for other streams use an rtsp:// URL")
    return _mjpeg(resp, label)


def _mjpeg(resp, label: str) -> Iterator[np.ndarray]:
    parser = MultipartJpegParser()
    try:
        while True:
            try:
                chunk = resp.read1(65536)
            except (OSError, ValueError) as exc:  # socket timeout, connection reset
                raise SourceError(f"camera {label}: {exc or type(exc).__name__}") from None
            if not chunk:
                return
            for jpeg in parser.feed(chunk):
                yield decode_jpeg(jpeg)
    finally:
        resp.close()


def _snapshots(url: str, timeout_s: float, min_interval_s: float) -> Iterator[np.ndarray]:
    label = mask_credentials(url)
    while True:
        t0 = time.monotonic()
        try:
            with urllib.request.urlopen(_request(url), timeout=timeout_s) as resp:  # noqa: S310
                body = resp.read(MAX_MJPEG_FRAME + 1)
        except (urllib.error.URLError, OSError) as exc:
            raise SourceError(f"cannot reach camera {label}: {getattr(exc, 'reason', exc)}") from None
        yield decode_jpeg(body)
        rest = min_interval_s - (time.monotonic() - t0)
        if rest > 0:
            time.sleep(rest)


# ------------------------------------------------------------------ OpenCV sources
def open_source(source: str, loop: bool = False, *, timeout_s: float = 10.0,
                min_interval_s: float = 0.0) -> Iterator[np.ndarray]:
    """Frames (BGR) from ``source``: a folder of images, a video file, a URL (rtsp://, http://) or a
    device number. A folder or a file can loop, for testing. ``timeout_s`` bounds opening and each
    read of a network source (a camera that stalls is an error, so its grabber reconnects)."""
    spec = parse_source(source)
    if spec.kind == "folder":
        return _folder(Path(source), loop)
    if spec.kind == "webcam":
        return _capture(int(source), spec.label, loop=False)
    if spec.kind == "http":
        return http_frames(source, timeout_s, min_interval_s)
    if spec.kind == "stream":
        return _capture(source, spec.label, loop=False, timeout_s=timeout_s)
    if spec.kind == "scene":
        raise SourceError(f"{source}: a scene source is rendered by the gateway's fleet runner (aimass gateway run)")
    return _capture(source, spec.label, loop=loop)


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


def _capture(target, label: str, loop: bool, timeout_s: float | None = None) -> Iterator[np.ndarray]:
    if timeout_s is not None:
        # FFmpeg over TCP for RTSP (UDP loses packets on busy site networks), with bounded waits.
        os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")
        ms = int(timeout_s * 1000)
        cap = cv2.VideoCapture(target, cv2.CAP_FFMPEG,
                               [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])
    else:
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


# ------------------------------------------------------------------ live sources in a thread
@dataclass
class SourceHealth:
    """What a camera's source has been doing; written by its grabber thread, read by the camera loop
    and the heartbeats (plain counters: a torn read is harmless)."""

    state: Literal["starting", "ok", "reconnecting", "stopped"] = "starting"
    frames_read: int = 0
    errors: int = 0
    reconnects: int = 0
    last_error: str = ""
    last_frame_ms: float = 0.0


class Grabber:
    """Reads a live source in its own thread as fast as it delivers, keeps only the latest frame,
    and reopens the source with back-off whenever opening or reading fails or the stream ends.
    ``latest(after, timeout)`` hands the camera loop a frame newer than the one it had."""

    def __init__(self, opener: Callable[[], Iterator[np.ndarray]], label: str, backoff: Backoff,
                 clock_ms: Callable[[], float] = lambda: time.time() * 1000.0):
        self.opener = opener
        self.label = label
        self.backoff = backoff
        self.clock_ms = clock_ms
        self.health = SourceHealth()
        self._cond = threading.Condition()
        self._frame: tuple[int, float, np.ndarray] | None = None  # (number, captured_ms, image)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"grab {label}", daemon=True)

    def start(self) -> "Grabber":
        self._thread.start()
        return self

    def stop(self, join_s: float = 5.0) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(join_s)

    def latest(self, after: int, timeout_s: float) -> tuple[int, float, np.ndarray] | None:
        """The newest frame numbered above ``after``, waiting up to ``timeout_s``; None if none came."""
        end = time.monotonic() + timeout_s
        with self._cond:
            while not self._stop.is_set():
                if self._frame is not None and self._frame[0] > after:
                    return self._frame
                rest = end - time.monotonic()
                if rest <= 0:
                    return None
                self._cond.wait(rest)
        return None

    def _fail(self, message: str) -> None:
        h = self.health
        h.errors += 1
        h.last_error = message[:500]
        h.state = "reconnecting"
        delay = self.backoff.next_delay()
        log.warning("camera source %s: %s; reconnecting in %.1f s", self.label, message, delay)
        self._stop.wait(delay)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            try:
                frames = self.opener()
                for img in frames:
                    if self._stop.is_set():
                        break
                    n += 1
                    now = self.clock_ms()
                    h = self.health
                    h.frames_read += 1
                    h.last_frame_ms = now
                    if h.state != "ok":
                        log.info("camera source %s: frames arrive", self.label)
                        if h.state == "reconnecting":
                            h.reconnects += 1  # came back
                        h.state = "ok"
                        self.backoff.reset()
                    with self._cond:
                        self._frame = (n, now, img)
                        self._cond.notify_all()
                else:
                    if not self._stop.is_set():
                        self._fail("the stream ended")
                close = getattr(frames, "close", None)
                if close:
                    close()
            except SourceError as exc:
                self._fail(str(exc))
            except Exception as exc:  # a broken decoder or driver: the camera loop must survive it
                self._fail(f"{type(exc).__name__}: {exc}")
        self.health.state = "stopped"
