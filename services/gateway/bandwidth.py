"""What the motion gate saves, measured on a site file's scripted scenes: each camera's scene is
rendered at the camera's fps for ``seconds`` of scene time (as fast as the machine renders, not in
real time), every frame JPEG-encoded as the gateway would send it, and the gate asked about each.
`aimass gateway bandwidth` prints it; the README quotes it."""

from __future__ import annotations

from dataclasses import dataclass

from aimass.site import Site
from aimass_gateway.gating import GateConfig, MotionGate
from aimass_gateway.producer import encode_jpeg
from aimass_gateway.scene import SceneRenderer


@dataclass(frozen=True)
class CameraBandwidth:
    camera_id: str
    seconds: float
    frames: int  # frames sampled (what an ungated camera sends)
    frames_sent: int  # what the gate lets through
    bytes_all: int  # JPEG bytes of every frame
    bytes_sent: int  # JPEG bytes of the frames the gate lets through
    reasons: dict[str, int]  # why frames were sent: first, motion, hold, keepalive

    def per_hour(self, n: float) -> float:
        return n * 3600.0 / self.seconds

    @property
    def saving(self) -> float:
        return 1.0 - self.bytes_sent / self.bytes_all if self.bytes_all else 0.0


def measure(site: Site, seconds: float, gate: GateConfig = GateConfig(), quality: int = 80) -> list[CameraBandwidth]:
    out = []
    for cam in site.cameras:
        if cam.scene is None:
            continue
        renderer, motion = SceneRenderer(cam), MotionGate(gate)
        n = sent = bytes_all = bytes_sent = 0
        reasons: dict[str, int] = {}
        for k in range(int(seconds * cam.fps)):
            t = k / cam.fps
            image, _ = renderer.render(t)
            size = len(encode_jpeg(image, quality))
            d = motion.decide(image, t)
            n += 1
            bytes_all += size
            if d.send:
                sent += 1
                bytes_sent += size
                reasons[d.reason] = reasons.get(d.reason, 0) + 1
        out.append(CameraBandwidth(cam.id, seconds, n, sent, bytes_all, bytes_sent, reasons))
    return out
