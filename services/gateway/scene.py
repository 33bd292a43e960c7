"""Simulated camera pictures: photographed cut-outs (assets/) composited over a background photo and
moved along a camera's scripted paths (site file ``scene``). Pure rendering; the script is the ground
truth. The assets and their sources and licences are listed in assets/NOTICE.

An actor's path keyframes give its bottom-centre (normalised) at times in seconds; between keyframes
it moves linearly; it exists only from its first to its last keyframe. With ``repeat_s`` the path
replays every ``repeat_s`` seconds (``t`` is taken modulo ``repeat_s``). Nearer actors (larger y) are
drawn over farther ones. Frames carry light sensor noise that depends only on (seed, t), so a render
is deterministic and the detector never sees two identical frames.
"""

from __future__ import annotations

import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from aimass.site import Actor, Camera

ASSETS = Path(__file__).with_name("assets")
BACKGROUND_SUFFIXES = (".jpg", ".png")
CUTOUT_SUFFIXES = (".png",)
_NOISE_BANK = 8  # pre-computed noise frames per renderer; one is picked per (seed, t)


class AssetError(ValueError):
    """A scene names an asset that is missing or unreadable; the message lists the ones available."""


@dataclass(frozen=True)
class GroundTruth:
    """What the script puts in one frame: one actor, its visible box and its bottom-centre."""

    actor_id: str
    label: str
    x1: float  # visible box, normalised, clipped to the frame
    y1: float
    x2: float
    y2: float
    foot_x: float  # bottom centre of the actor as scripted (clipped to the frame): zone presence is judged here
    foot_y: float

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        return self.x1, self.y1, self.x2, self.y2

    def as_dict(self) -> dict:
        return {"actor_id": self.actor_id, "label": self.label, "x1": round(self.x1, 4), "y1": round(self.y1, 4),
                "x2": round(self.x2, 4), "y2": round(self.y2, 4), "foot_x": round(self.foot_x, 4),
                "foot_y": round(self.foot_y, 4)}


# Decoded assets, shared by every renderer of the process: (path, mtime) -> image.
_cache: dict[tuple[str, float, bool], np.ndarray] = {}
_cache_lock = threading.Lock()


def _load(path: Path, alpha: bool) -> np.ndarray:
    key = (str(path), path.stat().st_mtime, alpha)
    with _cache_lock:
        img = _cache.get(key)
    if img is not None:
        return img
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED if alpha else cv2.IMREAD_COLOR)
    if img is None:
        raise AssetError(f"cannot read scene asset {path}")
    if alpha:
        if img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        if img.shape[2] == 3:  # no alpha channel: the whole rectangle is the actor
            img = np.dstack([img, np.full(img.shape[:2], 255, np.uint8)])
    img.setflags(write=False)
    with _cache_lock:
        _cache[key] = img
    return img


def available(folder: Path = ASSETS) -> tuple[list[str], list[str]]:
    """(backgrounds, cut-outs) by name in ``folder``."""
    files = [p for p in folder.iterdir() if p.is_file()] if folder.is_dir() else []
    cutouts = sorted({p.stem for p in files if p.suffix in CUTOUT_SUFFIXES})
    backgrounds = sorted({p.stem for p in files if p.suffix in BACKGROUND_SUFFIXES})
    return backgrounds, cutouts


def _find(folder: Path, name: str, suffixes: tuple[str, ...], kind: str) -> Path:
    for s in suffixes:
        p = folder / f"{name}{s}"
        if p.is_file():
            return p
    backgrounds, cutouts = available(folder)
    names = backgrounds if kind == "background" else cutouts
    raise AssetError(f"scene {kind} {name!r} not found in {folder}; available: {', '.join(names) or 'none'}")


def position(actor: Actor, t: float) -> tuple[float, float] | None:
    """The actor's bottom-centre at ``t`` seconds, or None when it is not in the scene then."""
    path = actor.path
    if actor.repeat_s:
        t = t % actor.repeat_s
    if t < path[0].t or t > path[-1].t:
        return None
    for a, b in zip(path, path[1:]):
        if a.t <= t <= b.t:
            f = (t - a.t) / (b.t - a.t)
            return a.x + (b.x - a.x) * f, a.y + (b.y - a.y) * f
    return path[0].x, path[0].y  # a single keyframe: present at that instant only


class SceneRenderer:
    """Renders one camera's scene: ``render(t)`` -> (BGR uint8 frame, ground truth)."""

    def __init__(self, camera: Camera, assets_dir: Path | None = None, seed: int = 0, noise: float = 2.0):
        if camera.scene is None:
            raise AssetError(f"camera {camera.id} has no scene to simulate")
        self.camera = camera
        self.folder = Path(assets_dir) if assets_dir is not None else ASSETS
        self.w, self.h = camera.width, camera.height
        self.seed = seed
        self.noise = noise
        bg = _load(_find(self.folder, camera.scene.background, BACKGROUND_SUFFIXES, "background"), False)
        if bg.shape[:2] != (self.h, self.w):
            bg = cv2.resize(bg, (self.w, self.h), interpolation=cv2.INTER_AREA if bg.shape[1] > self.w
                            else cv2.INTER_LINEAR)
        self.background = bg
        self.actors = list(camera.scene.actors)
        self.cutouts = {a.id: _load(_find(self.folder, a.asset, CUTOUT_SUFFIXES, "cut-out"), True)
                        for a in self.actors}
        self._sprites: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
        self._noise: list[tuple[np.ndarray, np.ndarray]] | None = None

    # -- pieces ---------------------------------------------------------------------------------

    def _sprite(self, actor: Actor) -> tuple[np.ndarray, np.ndarray]:
        """(BGR float32, alpha float32 [h, w, 1] in 0..1) of the actor at its height, cached per size."""
        ph = max(4, round(actor.height * self.h))
        key = (actor.asset, ph)
        sprite = self._sprites.get(key)
        if sprite is None:
            src = self.cutouts[actor.id]
            pw = max(2, round(src.shape[1] * ph / src.shape[0]))
            interp = cv2.INTER_AREA if ph < src.shape[0] else cv2.INTER_CUBIC
            img = cv2.resize(src, (pw, ph), interpolation=interp)
            alpha = img[:, :, 3:4].astype(np.float32) * (1.0 / 255.0)
            sprite = (img[:, :, :3].astype(np.float32), alpha)
            self._sprites[key] = sprite
        return sprite

    def _noise_for(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """(add, subtract) uint8 noise frames for time ``t``: a small bank made once from the seed,
        one of them picked (and rolled) by a hash of (seed, t), so the result depends only on both."""
        if self._noise is None:
            rng = np.random.default_rng(self.seed)
            bank = []
            for _ in range(_NOISE_BANK):
                n = np.rint(rng.normal(0.0, self.noise, size=(self.h, self.w))).clip(-127, 127).astype(np.int16)
                n3 = np.repeat(n[:, :, None], 3, axis=2)  # luminance noise, like a real sensor's grain
                bank.append((np.clip(n3, 0, 255).astype(np.uint8), np.clip(-n3, 0, 255).astype(np.uint8)))
            self._noise = bank
        h = zlib.crc32(f"{self.seed}:{round(t * 1000)}".encode())
        add, sub = self._noise[h % _NOISE_BANK]
        shift = (h >> 8) % self.h
        if shift:
            add, sub = np.roll(add, shift, axis=0), np.roll(sub, shift, axis=0)
        return add, sub

    # -- rendering --------------------------------------------------------------------------------

    def place(self, t: float) -> list[tuple[Actor, float, float]]:
        """The actors present at ``t`` with their bottom-centre, farthest (smallest y) first."""
        placed = []
        for i, actor in enumerate(self.actors):
            pos = position(actor, t)
            if pos is not None:
                placed.append((pos[1], i, actor, pos[0]))
        placed.sort(key=lambda p: (p[0], p[1]))
        return [(actor, fx, fy) for fy, _, actor, fx in placed]

    def render(self, t: float) -> tuple[np.ndarray, list[GroundTruth]]:
        """The frame at ``t`` seconds (BGR uint8, height x width) and what it shows."""
        frame = self.background.copy()
        truths: list[GroundTruth] = []
        for actor, fx, fy in self.place(t):
            rgb, alpha = self._sprite(actor)
            ph, pw = alpha.shape[:2]
            left, top = round(fx * self.w - pw / 2), round(fy * self.h - ph)
            x1, y1, x2, y2 = max(left, 0), max(top, 0), min(left + pw, self.w), min(top + ph, self.h)
            if x1 >= x2 or y1 >= y2:
                continue
            sx, sy = x1 - left, y1 - top
            a = alpha[sy:sy + y2 - y1, sx:sx + x2 - x1]
            fg = rgb[sy:sy + y2 - y1, sx:sx + x2 - x1]
            roi = frame[y1:y2, x1:x2]
            bg = roi.astype(np.float32)
            roi[...] = (bg + (fg - bg) * a + 0.5).astype(np.uint8)
            truths.append(GroundTruth(actor.id, actor.label, x1 / self.w, y1 / self.h, x2 / self.w, y2 / self.h,
                                      min(max(fx, 0.0), 1.0), min(max(fy, 0.0), 1.0)))
        if self.noise:
            add, sub = self._noise_for(t)
            cv2.add(frame, add, dst=frame)
            cv2.subtract(frame, sub, dst=frame)
        return frame, truths
