"""The messages that travel between AI Mass services, and the topics they travel on.

One typed struct per message kind, encoded as MessagePack (frames carry JPEG bytes, so a binary
encoding saves the 33 % that base64-in-JSON would cost). Every message has a schema version ``v``;
a decoder refuses versions it does not know instead of guessing. Size limits are enforced before
decoding, so an oversized message never reaches a parser.

Times are epoch milliseconds (float, sub-millisecond precision) from the clock of the stage that
stamped them. ``stamps`` accumulates one entry per pipeline stage as a message flows, so latency per
stage is both a trace and a SQL query.
"""

from __future__ import annotations

import math
import time
from typing import Literal

import msgspec

SCHEMA_VERSION = 1

# Topic names. Partition counts are settings (aimass.settings); keys are noted beside each.
TOPIC_FRAMES = "aimass.frames"  # key: camera_id
TOPIC_SENSORS = "aimass.sensors"  # key: sensor_id
TOPIC_DETECTIONS = "aimass.detections"  # key: camera_id
TOPIC_VIOLATIONS = "aimass.violations"  # key: site_id (a site's incidents in order, for correlation and alerts)
TOPIC_DEADLETTER = "aimass.deadletter"  # key: original key
TOPIC_CONTROL_RULES = "aimass.control.rules"  # key: site_id; compacted: the latest site file per site
TOPIC_CONTROL_MODELS = "aimass.control.models"  # key: "routing"; compacted: which model serves which cameras
TOPIC_MODEL_EVENTS = "aimass.model-events"  # key: model ref; loads, switches, failures, rollbacks, drift
TOPIC_SHADOW = "aimass.shadow"  # key: camera_id; a shadow model's results beside the serving model's
TOPIC_HEARTBEATS = "aimass.heartbeats"  # key: gateway_id; a gateway's and its cameras' health, every few seconds
# Workers' own state (aimass.state), compacted, partitioned like the input topic named beside each.
TOPIC_STATE_TRACKS = "aimass.state.tracks"  # detector's tracker per camera; like frames
TOPIC_STATE_RULES_CAMERAS = "aimass.state.rules-cameras"  # rule state per camera; like detections
TOPIC_STATE_RULES_SENSORS = "aimass.state.rules-sensors"  # rule state per sensor; like sensors
TOPIC_STATE_RULES_SITES = "aimass.state.rules-sites"  # correlation state per site; like violations
TOPICS = (TOPIC_FRAMES, TOPIC_SENSORS, TOPIC_DETECTIONS, TOPIC_VIOLATIONS, TOPIC_DEADLETTER, TOPIC_CONTROL_RULES,
          TOPIC_CONTROL_MODELS, TOPIC_MODEL_EVENTS, TOPIC_SHADOW, TOPIC_HEARTBEATS, TOPIC_STATE_TRACKS, TOPIC_STATE_RULES_CAMERAS, TOPIC_STATE_RULES_SENSORS, TOPIC_STATE_RULES_SITES)

# Size limits (bytes). A frame's JPEG is the only large field.
MAX_JPEG_BYTES = 2 * 1024 * 1024
MAX_FRAME_MESSAGE_BYTES = MAX_JPEG_BYTES + 64 * 1024
MAX_SMALL_MESSAGE_BYTES = 256 * 1024
MAX_OBJECTS_PER_FRAME = 300
MAX_ID_LEN = 128
# Capture times outside these bounds are a broken clock, not data: before 2000 (a gateway booted
# without a real-time clock says 1970) or more than a day ahead of the reader's clock.
MIN_CAPTURE_MS = 946_684_800_000.0  # 2000-01-01T00:00:00Z
MAX_CLOCK_AHEAD_MS = 86_400_000.0
MAX_ERROR_LEN = 1000  # a heartbeat's last_error


def now_ms() -> float:
    return time.time() * 1000.0


class ContractError(ValueError):
    """A message that does not satisfy its contract. ``reason`` is a short machine-readable code
    used as the dead-letter reason header; the message says what was wrong for a person."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class Frame(msgspec.Struct, kw_only=True, tag="frame", tag_field="kind"):
    """One camera frame, JPEG-encoded by the gateway."""

    v: int = SCHEMA_VERSION
    site_id: str
    camera_id: str
    seq: int  # per-camera sequence number, from the gateway; with camera_id it identifies the frame
    captured_ms: float  # gateway clock at capture
    width: int
    height: int
    jpeg: bytes
    gateway_id: str = ""
    stamps: dict[str, float] = {}  # stage name -> epoch ms


class SensorReading(msgspec.Struct, kw_only=True, tag="reading", tag_field="kind"):
    v: int = SCHEMA_VERSION
    site_id: str
    sensor_id: str
    seq: int
    captured_ms: float
    value: float
    unit: str = ""
    gateway_id: str = ""
    stamps: dict[str, float] = {}


class DetectedObject(msgspec.Struct, array_like=True):
    """One object in a frame. Box corners are normalised to [0, 1] of the frame."""

    label: str  # site class after the model's class map (person, vehicle, ...)
    class_id: int  # the model's own class index
    score: float
    x1: float
    y1: float
    x2: float
    y2: float
    track_id: int = -1  # -1 until a tracker assigns one


class Detections(msgspec.Struct, kw_only=True, tag="detections", tag_field="kind"):
    """The detector's output for one frame (also sent when nothing was found)."""

    v: int = SCHEMA_VERSION
    site_id: str
    camera_id: str
    seq: int
    captured_ms: float
    width: int
    height: int
    jpeg_bytes: int = 0  # size of the frame as the gateway sent it (bandwidth accounting)
    model_name: str
    model_version: str
    objects: list[DetectedObject] = []
    batch_size: int = 1
    stamps: dict[str, float] = {}


ViolationEvent = Literal["start", "update", "end"]


class Violation(msgspec.Struct, kw_only=True, tag="violation", tag_field="kind"):
    """An incident raised by a rule. One incident has one ``violation_id``; its events are start,
    then optional updates, then end."""

    v: int = SCHEMA_VERSION
    violation_id: str
    event: ViolationEvent = "start"
    site_id: str
    rule_id: str
    rule_type: str
    severity: str
    camera_id: str = ""
    zone_id: str = ""
    sensor_id: str = ""
    label: str = ""
    track_id: int = -1
    score: float = 0.0
    value: float = 0.0
    started_ms: float  # event time of the incident's start (capture time of the evidence)
    at_ms: float  # event time of this event
    source_seq: int = -1  # frame or reading seq that triggered this event
    message: str = ""
    stamps: dict[str, float] = {}


class DeadLetter(msgspec.Struct, kw_only=True, tag="deadletter", tag_field="kind"):
    """Input a worker refused. ``original`` is the message's bytes, untouched."""

    v: int = SCHEMA_VERSION
    source_topic: str
    partition: int = -1
    offset: int = -1
    key: bytes = b""
    reason: str  # short code: too_large, bad_encoding, bad_schema, bad_version, bad_jpeg, ...
    detail: str  # what was wrong, for a person
    service: str
    at_ms: float
    original: bytes


class SiteConfig(msgspec.Struct, kw_only=True, tag="site_config", tag_field="kind"):
    """A site file published by `aimass rules apply`; rules workers switch to it while running."""

    v: int = SCHEMA_VERSION
    site_id: str
    sha256: str  # of ``yaml``
    yaml: str
    source: str = ""  # where it came from (file path), for the logs
    applied_ms: float


class Canary(msgspec.Struct, kw_only=True):
    """A share of a group's traffic for a candidate model: ``percent`` of its cameras (``by: camera``,
    a stable hash of the camera id) or of its frames (``by: frame``, a hash of camera id and seq)."""

    model: str  # model ref "name:version"
    percent: float
    by: Literal["camera", "frame"] = "camera"


class GroupRoute(msgspec.Struct, kw_only=True):
    """Which model serves a group of cameras."""

    active: str  # model ref "name:version"
    canary: Canary | None = None
    shadow: str = ""  # a model ref run on the same frames, its results recorded apart, never acted on


class ModelRouting(msgspec.Struct, kw_only=True, tag="model_routing", tag_field="kind"):
    """The one routing document (compacted control topic, key "routing"): per camera group the active
    model, an optional canary and an optional shadow. Detector workers switch to each new revision
    between batches. ``history`` holds earlier revisions' actives, newest last, for rollback."""

    v: int = SCHEMA_VERSION
    revision: int
    updated_ms: float
    by: str = ""  # who changed it: "cli", "api", "detector" (an automatic rollback), ...
    reason: str = ""
    groups: dict[str, GroupRoute]  # "default" serves every camera not listed in ``cameras``
    cameras: dict[str, str] = {}  # camera id -> group
    history: list[dict[str, str]] = []  # earlier {group: active ref}, newest last


ModelEventKind = Literal["loaded", "load_failed", "switched", "switch_refused", "run_failed", "rolled_back", "drift"]


class ModelEvent(msgspec.Struct, kw_only=True, tag="model_event", tag_field="kind"):
    """Something that happened to a model version in a worker, for operators and ClickHouse."""

    v: int = SCHEMA_VERSION
    at_ms: float
    event: ModelEventKind
    model: str  # model ref
    service: str = ""
    worker: str = ""  # host:pid
    revision: int = -1  # routing revision concerned
    detail: str = ""
    value: float = 0.0  # e.g. load seconds, drift ratio


class ShadowResult(msgspec.Struct, kw_only=True, tag="shadow_result", tag_field="kind"):
    """One frame seen by the serving model and by a shadow model: what each found and how they agree."""

    v: int = SCHEMA_VERSION
    site_id: str
    camera_id: str
    seq: int
    captured_ms: float
    model: str  # the serving model's ref
    shadow: str  # the shadow model's ref
    objects: list[DetectedObject] = []  # the serving model's
    shadow_objects: list[DetectedObject] = []
    matched: int = 0  # pairs of the same label with IoU >= 0.5
    mean_iou: float = 0.0  # over the matched pairs
    shadow_ms: float = 0.0  # the shadow model's inference time for its batch


HeartbeatStatus = Literal["ok", "idle", "reconnecting", "stopped", "spooling"]


class Heartbeat(msgspec.Struct, kw_only=True, tag="heartbeat", tag_field="kind"):
    """A gateway's health (``camera_id`` empty) or one of its cameras', sent every few seconds.

    Counters are cumulative since the gateway process started (a restart starts them at 0 again, and
    ``started_ms`` changes). Times are the gateway's clock; ``clock_offset_ms`` is how far that clock
    was measured to be from the reference (reference minus gateway: add it to a gateway time to get
    reference time), ``clock_source`` what it was measured against ("" = not measured). Capture times
    are never corrected by the gateway; readers that compare clocks use the offset."""

    v: int = SCHEMA_VERSION
    site_id: str
    gateway_id: str
    camera_id: str = ""  # "" = the gateway itself
    at_ms: float  # gateway clock when the heartbeat was made
    started_ms: float = 0.0  # when this gateway process started
    interval_s: float = 0.0  # the heartbeat period: a consumer may call it silent after a few of these
    status: HeartbeatStatus = "ok"
    fps: float = 0.0  # frames sent per second since the previous heartbeat
    read_fps: float = 0.0  # frames read from the source per second since the previous heartbeat
    frames_read: int = 0
    frames_sent: int = 0
    frames_skipped: int = 0  # read but not sent: the motion gate found nothing new
    bytes_sent: int = 0  # JPEG bytes of the frames sent
    last_frame_ms: float = 0.0  # capture time of the last frame read from the source (0: none yet)
    errors: int = 0  # source errors (open or read failures)
    reconnects: int = 0
    last_error: str = ""
    readings_sent: int = 0
    readings_refused: int = 0  # failed validation at the edge (dead-lettered)
    send_errors: int = 0
    spool_messages: int = 0  # waiting on disk for the broker
    spool_bytes: int = 0
    spool_dropped: int = 0  # dropped from the spool when it was full (oldest first), since the spool was created
    clock_offset_ms: float = 0.0
    clock_rtt_ms: float = 0.0  # round trip of the measurement: the offset is good to about half of it
    clock_source: str = ""
    clock_measured_ms: float = 0.0  # when the offset was measured (gateway clock)


Message = (Frame | SensorReading | Detections | Violation | DeadLetter | SiteConfig | ModelRouting | ModelEvent
           | ShadowResult | Heartbeat)

_encoder = msgspec.msgpack.Encoder()
_decoders = {
    cls: msgspec.msgpack.Decoder(cls)
    for cls in (Frame, SensorReading, Detections, Violation, DeadLetter, SiteConfig, ModelRouting, ModelEvent,
                ShadowResult, Heartbeat)
}


def encode(msg: Message) -> bytes:
    return _encoder.encode(msg)


def decode(data: bytes | None, cls: type[msgspec.Struct]):
    """Decode ``data`` as ``cls``, enforcing size, schema version and value sanity.

    Raises ContractError with a reason code; never anything else for bad input. The rules and the sink
    call this for every message they read, so the usual case takes one comparison per check and the
    wording of a refusal is worked out only when there is one.
    """
    if not data:
        raise ContractError("empty", f"empty message where a {cls.__name__} was expected")
    limit = MAX_FRAME_MESSAGE_BYTES if cls is Frame else MAX_SMALL_MESSAGE_BYTES
    if len(data) > limit:
        raise ContractError(
            "too_large", f"{cls.__name__} message is {len(data)} bytes; the limit is {limit}"
        )
    try:
        msg = _decoders[cls].decode(data)
    except msgspec.ValidationError as exc:
        raise ContractError("bad_schema", f"not a valid {cls.__name__}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ContractError("bad_encoding", f"not MessagePack: {exc}") from None
    if msg.v != SCHEMA_VERSION:
        raise ContractError(
            "bad_version",
            f"{cls.__name__} schema version {msg.v} is not supported (this build reads v{SCHEMA_VERSION})",
        )
    check = _CHECKS.get(cls)
    if check is not None:
        check(msg)
    return msg


# Value checks that a schema cannot express, one function per message kind.

def _finite(name: str, x: float) -> None:
    if not math.isfinite(x):
        raise ContractError("bad_value", f"{name} is {x}; a finite number is required")


def _check_id(name: str, value: str) -> None:
    if not value or len(value) > MAX_ID_LEN:
        raise ContractError("bad_value", f"{name} must be 1..{MAX_ID_LEN} characters, got {value!r:.80}")


def _check_time(t: float) -> None:
    """A capture time from a set clock: after 2000, at most a day ahead of this one."""
    if MIN_CAPTURE_MS <= t <= now_ms() + MAX_CLOCK_AHEAD_MS:  # false for NaN too
        return
    _finite("captured_ms", t)
    if t < MIN_CAPTURE_MS:
        raise ContractError("bad_time", f"captured_ms {t:.0f} is before 2000-01-01: the sender's clock is not set "
                                        "(a gateway without a real-time clock or NTP); fix its clock")
    raise ContractError("bad_time", f"captured_ms {t:.0f} is {(t - now_ms()) / 3.6e6:.1f} h in the future: the "
                                    "sender's clock is wrong; fix its clock (NTP)")


def _check_objects(objects: list[DetectedObject]) -> None:
    if len(objects) > MAX_OBJECTS_PER_FRAME:
        raise ContractError("too_large", f"{len(objects)} objects; the limit is {MAX_OBJECTS_PER_FRAME}")
    isfinite = math.isfinite
    for o in objects:
        # One test for the usual case; a NaN or an infinity in any of them makes the sum one.
        if not isfinite(o.score + o.x1 + o.y1 + o.x2 + o.y2):
            for name in ("score", "x1", "y1", "x2", "y2"):
                _finite(name, getattr(o, name))
            raise ContractError("bad_value", f"object values {o.score}, {o.x1}, {o.y1}, {o.x2}, {o.y2} "
                                             "overflow: a score and box corners in 0..1 are expected")


def _check_frame(msg: Frame) -> None:
    _check_time(msg.captured_ms)
    _check_id("camera_id", msg.camera_id)
    if len(msg.jpeg) > MAX_JPEG_BYTES:
        raise ContractError("too_large", f"JPEG is {len(msg.jpeg)} bytes; the limit is {MAX_JPEG_BYTES}")
    if msg.width <= 0 or msg.height <= 0:
        raise ContractError("bad_value", f"frame size {msg.width}x{msg.height} is not positive")


def _check_reading(msg: SensorReading) -> None:
    _check_time(msg.captured_ms)
    _check_id("sensor_id", msg.sensor_id)
    _finite("value", msg.value)


def _check_detections(msg: Detections) -> None:
    _check_time(msg.captured_ms)
    _check_id("camera_id", msg.camera_id)
    _check_objects(msg.objects)


def _check_shadow(msg: ShadowResult) -> None:
    _check_time(msg.captured_ms)
    _check_id("camera_id", msg.camera_id)
    _check_objects(msg.objects)
    _check_objects(msg.shadow_objects)


def _check_heartbeat(msg: Heartbeat) -> None:
    _check_id("gateway_id", msg.gateway_id)
    if len(msg.camera_id) > MAX_ID_LEN or len(msg.last_error) > MAX_ERROR_LEN:
        raise ContractError("bad_value", f"camera_id or last_error too long ({len(msg.camera_id)}, {len(msg.last_error)})")
    for name in ("at_ms", "started_ms", "interval_s", "fps", "read_fps", "last_frame_ms", "clock_offset_ms",
                 "clock_rtt_ms", "clock_measured_ms"):
        _finite(name, getattr(msg, name))


def _check_routing(msg: ModelRouting) -> None:
    if "default" not in msg.groups:
        raise ContractError("bad_value", "model routing has no 'default' group")
    for name, g in msg.groups.items():
        if g.canary is not None and not 0.0 <= g.canary.percent <= 100.0:
            raise ContractError("bad_value", f"group {name}: canary percent {g.canary.percent} is not in 0..100")


_CHECKS = {Frame: _check_frame, SensorReading: _check_reading, Detections: _check_detections,
           ShadowResult: _check_shadow, Heartbeat: _check_heartbeat, ModelRouting: _check_routing}
