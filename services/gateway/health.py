"""Fleet health: per-camera counters the camera loops keep, and the heartbeats made from them (one for
the gateway and one per camera, every ``heartbeat_interval_s``). Building a heartbeat is pure; the
fleet runner sends them."""

from __future__ import annotations

from dataclasses import dataclass

from aimass.contracts import MAX_ERROR_LEN, Heartbeat, HeartbeatStatus
from aimass_gateway.clock import ClockSample


@dataclass
class CameraStats:
    camera_id: str
    source: str = ""  # the source as a person may see it (passwords masked)
    state: HeartbeatStatus = "ok"
    frames_read: int = 0  # frames sampled from the source and shown to the gate
    frames_sent: int = 0
    frames_skipped: int = 0
    bytes_sent: int = 0
    last_frame_ms: float = 0.0  # capture time of the last frame read from the source
    errors: int = 0
    reconnects: int = 0
    last_error: str = ""


@dataclass
class GatewayStats:
    readings_sent: int = 0
    readings_refused: int = 0


@dataclass(frozen=True)
class _Mark:
    at_ms: float
    frames_read: int
    frames_sent: int


def _clock_fields(clock: ClockSample | None) -> dict:
    if clock is None:
        return {}
    return {"clock_offset_ms": clock.offset_ms, "clock_rtt_ms": clock.rtt_ms, "clock_source": clock.source,
            "clock_measured_ms": clock.measured_ms}


class HeartbeatMaker:
    """Turns counters into heartbeats; remembers the previous ones to give rates over the interval."""

    def __init__(self, site_id: str, gateway_id: str, started_ms: float, interval_s: float):
        self.site_id, self.gateway_id = site_id, gateway_id
        self.started_ms, self.interval_s = started_ms, interval_s
        self._marks: dict[str, _Mark] = {}

    def _rates(self, key: str, now_ms: float, frames_read: int, frames_sent: int) -> tuple[float, float]:
        prev = self._marks.get(key) or _Mark(self.started_ms, 0, 0)
        self._marks[key] = _Mark(now_ms, frames_read, frames_sent)
        dt = (now_ms - prev.at_ms) / 1000.0
        if dt <= 0:
            return 0.0, 0.0
        return (frames_sent - prev.frames_sent) / dt, (frames_read - prev.frames_read) / dt

    def camera(self, s: CameraStats, now_ms: float, clock: ClockSample | None = None) -> Heartbeat:
        fps, read_fps = self._rates(s.camera_id, now_ms, s.frames_read, s.frames_sent)
        return Heartbeat(site_id=self.site_id, gateway_id=self.gateway_id, camera_id=s.camera_id, at_ms=now_ms,
                         started_ms=self.started_ms, interval_s=self.interval_s, status=s.state,
                         fps=round(fps, 3), read_fps=round(read_fps, 3), frames_read=s.frames_read,
                         frames_sent=s.frames_sent, frames_skipped=s.frames_skipped, bytes_sent=s.bytes_sent,
                         last_frame_ms=s.last_frame_ms, errors=s.errors, reconnects=s.reconnects,
                         last_error=s.last_error[:MAX_ERROR_LEN], **_clock_fields(clock))

    def gateway(self, cameras: list[CameraStats], g: GatewayStats, now_ms: float, *, spooling: bool,
                spool_messages: int, spool_bytes: int, spool_dropped: int, send_errors: int,
                clock: ClockSample | None = None, clock_error: str = "") -> Heartbeat:
        read = sum(c.frames_read for c in cameras)
        sent = sum(c.frames_sent for c in cameras)
        fps, read_fps = self._rates("", now_ms, read, sent)
        return Heartbeat(site_id=self.site_id, gateway_id=self.gateway_id, camera_id="", at_ms=now_ms,
                         started_ms=self.started_ms, interval_s=self.interval_s,
                         status="spooling" if spooling else "ok", fps=round(fps, 3), read_fps=round(read_fps, 3),
                         frames_read=read, frames_sent=sent, frames_skipped=sum(c.frames_skipped for c in cameras),
                         bytes_sent=sum(c.bytes_sent for c in cameras),
                         last_frame_ms=max((c.last_frame_ms for c in cameras), default=0.0),
                         errors=sum(c.errors for c in cameras), reconnects=sum(c.reconnects for c in cameras),
                         last_error=clock_error[:MAX_ERROR_LEN], readings_sent=g.readings_sent,
                         readings_refused=g.readings_refused, send_errors=send_errors, spool_messages=spool_messages,
                         spool_bytes=spool_bytes, spool_dropped=spool_dropped, **_clock_fields(clock))
