"""Simulated camera pictures: photographed cut-outs (assets/) composited over a background and moved
along a camera's scripted paths (site file ``scene``). Pure rendering; the script is the ground truth.

An actor's path keyframes give its bottom-centre (normalised) at times in seconds; between keyframes
it moves linearly; it exists only from its first to its last keyframe (looped by ``repeat_s``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from aimass.site import Actor, Camera

ASSETS = Path(__file__).with_name("assets")


class AssetError(ValueError):
    pass


@dataclass(frozen=True)
class GroundTruth:
    actor_id: str
    label: str
    x1: float
    y1: float
    x2: float
    y2: float
    foot_x: float  # bottom centre: where zone presence is judged
    foot_y: float

    def as_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@lru_cache(maxsize=None)
def _load(path: str, alpha: bool) -> np.ndarray:
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED if alpha else cv2.IMREAD_COLOR)
    if img is None:
        raise AssetError(f"cannot read scene asset {path}")
    if alpha and (img.ndim != 3 or img.shape[2] != 4):
        img = np.dstack([img if img.ndim == 3 else cv2.cvtColor(img, cv2.COLOR_GRAY2BGR),
                         np.full(img.shape[:2], 255, np.uint8)])
    return img


def _find(folder: Path, name: str, suffixes: tuple[str, ...]) -> str:
    for s in suffixes:
        p = folder / f"{name}{s}"
        if p.exists():
            return str(p)
    names = sorted({p.stem for p in folder.iterdir() if p.suffix in suffixes})
    raise AssetError(f"scene asset {name!r} not found in {folder}; available: {', '.join(names)}")


def position(actor: Actor, t: float) -> tuple[float, float] | None:
    """The actor's bottom-centre at ``t``, or None when it is not in the scene then."""
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
    def __init__(self, camera: Camera, assets_dir: Path | None = None, seed: int = 0, noise: float = 2.0):
        if camera.scene is None:
            raise AssetError(f"camera {camera.id} has no scene to simulate")
        self.camera = camera
        self.folder = Path(assets_dir or ASSETS)
        self.w, self.h = camera.width, camera.height
        bg = _load(_find(self.folder, camera.scene.background, (".jpg", ".png")), False)
        self.background = cv2.resize(bg, (self.w, self.h), interpolation=cv2.INTER_AREA)
        self.cutouts = {a.id: _load(_find(self.folder, a.asset, (".png",)), True) for a in camera.scene.actors}
        self._scaled: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
        self.seed = seed
        self.noise = noise

    def _sprite(self, actor: Actor) -> tuple[np.ndarray, np.ndarray]:
        """(BGR float32, alpha float32 [h, w, 1]) of the actor at its height, cached."""
        ph = max(4, round(actor.height * self.h))
        key = (actor.id, ph)
        if key not in self._scaled:
            src = self.cutouts[actor.id]
            pw = max(2, round(src.shape[1] * ph / src.shape[0]))
            img = cv2.resize(src, (pw, ph), interpolation=cv2.INTER_AREA)
            self._scaled[key] = (img[:, :, :3].astype(np.float32), img[:, :, 3:4].astype(np.float32) / 255.0)
        return self._scaled[key]

    def render(self, t: float) -> tuple[np.ndarray, list[GroundTruth]]:
        frame = self.background.astype(np.float32)
        placed = []
        for actor in self.camera.scene.actors:
            pos = position(actor, t)
            if pos is not None:
                placed.append((pos[1], actor, pos))
        truths = []
        for _, actor, (fx, fy) in sorted(placed, key=lambda p: p[0]):  # farther (higher) first
            rgb, alpha = self._sprite(actor)
            ph, pw = alpha.shape[:2]
            left, top = round(fx * self.w - pw / 2), round(fy * self.h - ph)
            x1, y1, x2, y2 = max(left, 0), max(top, 0), min(left + pw, self.w), min(top + ph, self.h)
            if x1 >= x2 or y1 >= y2:
                continue
            sx, sy = x1 - left, y1 - top
            a = alpha[sy:sy + y2 - y1, sx:sx + x2 - x1]
            region = frame[y1:y2, x1:x2]
            region += (rgb[sy:sy + y2 - y1, sx:sx + x2 - x1] - region) * a
            truths.append(GroundTruth(actor.id, actor.label, x1 / self.w, y1 / self.h, x2 / self.w, y2 / self.h,
                                      min(max(fx, 0.0), 1.0), min(fy, 1.0)))
        if self.noise:
            # Sensor noise, deterministic per (seed, time): the detector never sees two identical frames.
            rng = np.random.default_rng((self.seed, int(t * 1000)))
            frame += rng.normal(0.0, self.noise, size=(self.h, self.w, 1)).astype(np.float32)
        return np.clip(frame, 0, 255).astype(np.uint8), truths
