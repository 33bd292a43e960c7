"""The gateway's clock against a reference, so that latency figures that compare a gateway's capture
time with a server's clock stay honest across machines.

Capture times are always the gateway's own clock and are never corrected here. What the gateway
measures is its offset (reference minus gateway, in ms) and the round trip of the measurement (the
offset is good to about half of it); both go out in every heartbeat. Two references:

- ``ntp://HOST[:PORT]``: one SNTP query (RFC 4330) to the site's NTP server every ``clock_check_s``;
  works anywhere a gateway can reach an NTP server (most sites run one; the gateway box's own
  chrony/ntpd should keep the clock right, and this reports how right it is).
- ``broker``: the Kafka broker's LogAppendTime, which it writes into every record of the heartbeat
  topic (created with ``message.timestamp.type=LogAppendTime``) and returns in the produce answer;
  each heartbeat measures it for free. A broker that keeps CreateTime (tansu, the local stack's
  broker, does) returns the gateway's own time: no measurement then, and the heartbeat says so
  (``clock_source`` empty).
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

NTP_EPOCH_OFFSET = 2_208_988_800  # seconds from 1900-01-01 (NTP) to 1970-01-01 (Unix)
LOG_APPEND_TIME = 1  # Kafka's timestamp type in a produce answer


class ClockError(RuntimeError):
    pass


@dataclass(frozen=True)
class ClockSample:
    offset_ms: float  # reference minus gateway
    rtt_ms: float
    source: str  # "ntp:HOST:PORT" or "broker"
    measured_ms: float  # gateway clock when measured


def _to_ntp(t_s: float) -> bytes:
    t = t_s + NTP_EPOCH_OFFSET
    sec = int(t)
    return struct.pack("!II", sec, int((t - sec) * 2**32) & 0xFFFFFFFF)


def _from_ntp(b: bytes) -> float:
    sec, frac = struct.unpack("!II", b)
    return sec - NTP_EPOCH_OFFSET + frac / 2**32


def ntp_offset(t1: float, t2: float, t3: float, t4: float) -> tuple[float, float]:
    """(offset, round trip) in seconds from the four NTP times: client send t1, server receive t2,
    server send t3, client receive t4 (RFC 4330: offset = ((t2 - t1) + (t3 - t4)) / 2)."""
    return ((t2 - t1) + (t3 - t4)) / 2.0, (t4 - t1) - (t3 - t2)


def parse_reference(ref: str) -> tuple[str, str, int]:
    """``'ntp://host:123'`` -> ("ntp", host, port); ``'broker'`` / ``'none'`` -> (kind, "", 0)."""
    r = ref.strip()
    if r in ("broker", "none", ""):
        return (r or "none"), "", 0
    parts = urlsplit(r)
    if parts.scheme != "ntp" or not parts.hostname:
        raise ClockError(f"clock reference {ref!r}: use ntp://HOST[:PORT], 'broker' or 'none'")
    return "ntp", parts.hostname, parts.port or 123


def sntp_query(host: str, port: int = 123, timeout_s: float = 2.0,
               clock=time.time) -> ClockSample:
    """One SNTP exchange with ``host:port``."""
    packet = bytearray(48)
    packet[0] = (0 << 6) | (4 << 3) | 3  # no leap warning, version 4, client mode
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout_s)
        t1 = clock()
        packet[40:48] = _to_ntp(t1)
        try:
            s.sendto(bytes(packet), (host, port))
            while True:
                data, _ = s.recvfrom(512)
                if len(data) >= 48 and data[24:32] == bytes(packet[40:48]):
                    break  # the answer to this request (its origin time echoes our transmit time)
        except OSError as exc:
            raise ClockError(f"no answer from NTP server {host}:{port}: {exc}") from None
        t4 = clock()
    mode, stratum = data[0] & 0x7, data[1]
    if mode != 4 or stratum == 0 or stratum > 15:
        raise ClockError(f"NTP server {host}:{port} gave no time (mode {mode}, stratum {stratum})")
    offset, rtt = ntp_offset(t1, _from_ntp(data[32:40]), _from_ntp(data[40:48]), t4)
    return ClockSample(offset * 1000.0, max(rtt, 0.0) * 1000.0, f"ntp:{host}:{port}", t4 * 1000.0)


def broker_sample(send_ms: float, ack_ms: float, timestamp_ms: int, timestamp_type: int) -> ClockSample | None:
    """The offset from one produce answer, when the broker stamped the record (LogAppendTime): the
    broker's time is taken as the middle of the round trip."""
    if timestamp_type != LOG_APPEND_TIME or timestamp_ms is None or timestamp_ms < 0:
        return None
    return ClockSample(timestamp_ms - (send_ms + ack_ms) / 2.0, max(ack_ms - send_ms, 0.0), "broker", ack_ms)


class ClockMonitor:
    """The latest sample (or none) and what went wrong last; the heartbeats read it."""

    def __init__(self, reference: str):
        self.kind, self.host, self.port = parse_reference(reference)
        self.sample: ClockSample | None = None
        self.last_error = ""

    def measure_ntp(self, timeout_s: float = 2.0) -> ClockSample | None:
        if self.kind != "ntp":
            return None
        try:
            self.sample = sntp_query(self.host, self.port, timeout_s)
            self.last_error = ""
        except (ClockError, OSError) as exc:
            self.last_error = str(exc)
        return self.sample

    def observe_broker(self, send_ms: float, ack_ms: float, timestamp_ms: int, timestamp_type: int) -> None:
        if self.kind != "broker":
            return
        s = broker_sample(send_ms, ack_ms, timestamp_ms, timestamp_type)
        if s is not None and (self.sample is None or s.rtt_ms <= self.sample.rtt_ms * 2 or
                              s.measured_ms - self.sample.measured_ms > 60_000):
            self.sample = s  # prefer tight round trips; take a looser one when the last is old
