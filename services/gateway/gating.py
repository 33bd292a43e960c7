"""Bandwidth saving at the edge: the motion gate and the adaptive frame rate. Pure logic on arrays;
no I/O, no clocks (times are passed in), so it is tested on rendered scenes without a camera.

**Motion gate.** Each frame is reduced to a small grey picture (``analysis_width`` pixels wide,
area-averaged, which also averages sensor grain away) and compared with the small picture of the
last frame that was *sent*. A pixel has changed when its grey level moved by more than
``pixel_threshold``; the frame is sent when more than ``min_changed`` of the pixels changed. After
motion, frames keep going out for ``hold_s`` (so the detector sees an object come to rest or leave),
and when nothing moves a keep-alive frame goes out every ``keepalive_s``, so a still scene is still
seen, and its camera still counts as alive downstream. Comparing with the last sent frame rather
than the previous one means a slow change (daylight, a creeping shadow) adds up until it sends one
frame, instead of never being sent.

**Adaptive frame rate.** While the gate has seen motion within ``hold_s`` the camera is sampled at
its ``fps``; when the scene is still it is sampled at ``idle_fps`` (fewer frames read, decoded and
compared), and so it is while the gateway stores frames on disk for an unreachable broker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

Reason = Literal["first", "motion", "hold", "keepalive", ""]


@dataclass(frozen=True)
class GateConfig:
    pixel_threshold: int = 20  # grey levels (0..255) a pixel must move by to count as changed
    min_changed: float = 0.003  # fraction of the pixels that must change for a frame to be sent
    keepalive_s: float = 10.0  # a still scene still sends one frame this often
    hold_s: float = 2.0  # after motion, keep sending every frame this long
    analysis_width: int = 96  # width of the grey picture frames are compared at


@dataclass(frozen=True)
class GateDecision:
    send: bool
    reason: Reason
    changed: float  # fraction of changed pixels against the last sent frame (1.0 for the first frame)


def small_grey(image_bgr: np.ndarray, width: int) -> np.ndarray:
    """The frame as a small grey picture (int16, so differences do not wrap)."""
    if image_bgr.ndim == 3:
        grey = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY)
    else:
        grey = image_bgr
    h, w = grey.shape[:2]
    if w > width:
        grey = cv2.resize(grey, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
    return grey.astype(np.int16)


def changed_fraction(a: np.ndarray, b: np.ndarray, pixel_threshold: int) -> float:
    """Fraction of pixels whose grey level differs by more than ``pixel_threshold``; pictures of
    different sizes (the camera changed resolution) count as entirely changed."""
    if a.shape != b.shape:
        return 1.0
    return float(np.count_nonzero(np.abs(a - b) > pixel_threshold)) / a.size


class MotionGate:
    """``decide(image, t_s)`` for each sampled frame, in time order; ``t_s`` is any monotonic
    clock in seconds (the scene time in tests)."""

    def __init__(self, config: GateConfig = GateConfig()):
        self.config = config
        self._ref: np.ndarray | None = None  # small grey picture of the last frame sent
        self._last_sent_t = float("-inf")
        self._last_motion_t = float("-inf")

    def active(self, t_s: float) -> bool:
        """Motion seen within ``hold_s`` (the camera should be sampled at its full rate)."""
        return t_s - self._last_motion_t <= self.config.hold_s

    def decide(self, image_bgr: np.ndarray, t_s: float) -> GateDecision:
        c = self.config
        small = small_grey(image_bgr, c.analysis_width)
        if self._ref is None:
            decision = GateDecision(True, "first", 1.0)
        else:
            changed = changed_fraction(small, self._ref, c.pixel_threshold)
            if changed > c.min_changed:
                self._last_motion_t = t_s
                decision = GateDecision(True, "motion", changed)
            elif self.active(t_s):
                decision = GateDecision(True, "hold", changed)
            elif t_s - self._last_sent_t >= c.keepalive_s:
                decision = GateDecision(True, "keepalive", changed)
            else:
                decision = GateDecision(False, "", changed)
        if decision.send:
            self._ref = small
            self._last_sent_t = t_s
        return decision


class PassGate:
    """No gating: every frame is sent (the default for a camera without ``gating``)."""

    config = None

    def active(self, t_s: float) -> bool:
        return True

    def decide(self, image_bgr: np.ndarray, t_s: float) -> GateDecision:
        return GateDecision(True, "motion", 1.0)


@dataclass(frozen=True)
class AdaptiveRate:
    """The sampling period for a camera: ``fps`` while the scene moves, ``idle_fps`` while it is still
    or while the gateway is spooling (its broker is unreachable)."""

    fps: float
    idle_fps: float | None = None

    def period_s(self, active: bool, spooling: bool = False) -> float:
        idle = self.idle_fps if self.idle_fps is not None else self.fps
        rate = self.fps if active and not spooling else min(idle, self.fps)
        return 1.0 / rate
