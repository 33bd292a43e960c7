"""The gateway file: what one gateway box runs. Its cameras (each with its own source, rate, size,
JPEG quality, motion gate and reconnect policy) and its sensors (MQTT topic or HTTP push, unit
conversion and plausible range, or a simulation). Connection settings (Kafka, MQTT broker URL,
spool, heartbeat interval) are GatewaySettings; this file is the per-camera and per-sensor part.

Errors name the file, the line and the field, like the site file's (aimass.site).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from aimass.site import IdStr, SensorSimulation, line_of, parse_document
from aimass_gateway.gating import GateConfig
from aimass_gateway.sources import SourceError, parse_source
from aimass_gateway.units import UnitError, canonical_unit, convert


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Gating(_Model):
    """Send a frame only when the scene changed (see aimass_gateway.gating)."""

    enabled: bool = True
    pixel_threshold: int = Field(20, ge=1, le=255, description="grey levels a pixel must change by")
    min_changed: float = Field(0.003, gt=0, le=1, description="fraction of pixels that must change")
    keepalive_s: float = Field(10.0, gt=0, description="a still scene still sends a frame this often")
    hold_s: float = Field(2.0, ge=0, description="after motion, keep sending every frame this long")
    analysis_width: int = Field(96, ge=16, le=640, description="frames are compared at this width, in grey")

    def gate_config(self) -> GateConfig:
        return GateConfig(self.pixel_threshold, self.min_changed, self.keepalive_s, self.hold_s, self.analysis_width)


class Reconnect(_Model):
    initial_s: float = Field(0.5, gt=0, description="first wait after a camera drops")
    max_s: float = Field(30.0, gt=0, description="longest wait between attempts")
    factor: float = Field(2.0, ge=1)
    jitter: float = Field(0.2, ge=0, lt=1, description="each wait is shortened by up to this fraction at random")
    timeout_s: float = Field(10.0, gt=0, description="longest a connection or a read may take before it counts as lost")

    @model_validator(mode="after")
    def _order(self) -> "Reconnect":
        if self.max_s < self.initial_s:
            raise ValueError(f"max_s ({self.max_s}) must be at least initial_s ({self.initial_s})")
        return self


class CameraConfig(_Model):
    id: IdStr
    source: str = Field(description="rtsp://..., http(s)://... (MJPEG or snapshot), a video file, an image folder, "
                                    "a webcam number, or scene:CAMERA (the site file's simulated scene)")
    fps: float = Field(5.0, gt=0, le=60, description="frames per second sampled from the source")
    idle_fps: float | None = Field(None, gt=0, le=60, description="rate while the gate sees nothing moving "
                                                                  "(default: fps)")
    width: int | None = Field(None, ge=32, le=4096, description="resize to this width (keeps the aspect ratio)")
    jpeg_quality: int | None = Field(None, ge=10, le=100, description="default: AIMASS_JPEG_QUALITY")
    loop: bool = Field(False, description="loop a file or folder (testing)")
    gating: Gating | None = Field(None, description="motion gate; absent: every sampled frame is sent")
    reconnect: Reconnect = Reconnect()
    enabled: bool = True

    @field_validator("source")
    @classmethod
    def _known_source(cls, v: str) -> str:
        if "://" in v or v.strip().isdigit() or v.startswith("scene:"):
            try:
                parse_source(v)
            except SourceError as exc:
                raise ValueError(str(exc)) from None
        elif not v.strip():
            raise ValueError("a camera needs a source")
        return v  # a file or folder is looked up next to the gateway file when it is loaded

    @field_validator("gating", mode="before")
    @classmethod
    def _bool_gating(cls, v):
        if v is True:
            return {}
        if v is False:
            return {"enabled": False}
        return v


class MqttBinding(_Model):
    topic: str = Field(min_length=1, description="the MQTT topic the sensor publishes on (no wildcards)")
    field: str | None = Field(None, description="for JSON payloads: the key (dotted path) that holds the value; "
                                                "a bare number, true/false or on/off needs none")
    unit_field: str | None = Field(None, description="for JSON payloads: the key that names the payload's unit")

    @field_validator("topic")
    @classmethod
    def _no_wildcards(cls, v: str) -> str:
        if "+" in v or "#" in v:
            raise ValueError("one sensor reads one topic: wildcards (+, #) are not allowed")
        return v


class SensorConfig(_Model):
    id: IdStr
    unit: str = Field("", description="the unit readings are sent in (C, %, ppm, kW, ...)")
    input_unit: str | None = Field(None, description="the unit the device reports in, converted to 'unit' "
                                                     "(e.g. F -> C); default: 'unit'")
    scale: float = Field(1.0, description="raw value x scale + offset, before unit conversion (ADC counts, ...)")
    offset: float = 0.0
    min: float | None = Field(None, description="least plausible value (in 'unit'); below it a reading is refused")
    max: float | None = Field(None, description="largest plausible value (in 'unit')")
    mqtt: MqttBinding | None = None
    simulate: SensorSimulation | None = None
    period_s: float = Field(1.0, gt=0, description="reading period of a simulated sensor")

    @model_validator(mode="after")
    def _units_and_range(self) -> "SensorConfig":
        for name in ("scale", "offset"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number")
        try:
            canonical_unit(self.unit)
            if self.input_unit is not None:
                convert(1.0, self.input_unit, self.unit)
        except UnitError as exc:
            raise ValueError(str(exc)) from None
        if self.min is not None and self.max is not None and self.min >= self.max:
            raise ValueError(f"min ({self.min}) must be less than max ({self.max})")
        if self.mqtt is not None and self.simulate is not None:
            raise ValueError("a sensor is either read from MQTT or simulated, not both")
        return self


class GatewayFile(_Model):
    site_id: IdStr | None = Field(None, description="default: the site file's id")
    gateway_id: IdStr | None = Field(None, description="default: AIMASS_GATEWAY_ID")
    site_file: str | None = Field(None, description="for scene: sources; relative to this file; "
                                                    "default: AIMASS_SITE_FILE")
    cameras: Annotated[list[CameraConfig], Field(max_length=256)] = []
    sensors: Annotated[list[SensorConfig], Field(max_length=10_000)] = []

    @model_validator(mode="after")
    def _unique(self) -> "GatewayFile":
        for kind, ids in (("camera", [c.id for c in self.cameras]), ("sensor", [s.id for s in self.sensors])):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            if dup:
                raise ValueError(f"{kind}s: duplicate {kind} id(s): {', '.join(dup)}")
        topics = [s.mqtt.topic for s in self.sensors if s.mqtt]
        dup = sorted({t for t in topics if topics.count(t) > 1})
        if dup:
            raise ValueError(f"sensors: two sensors read the same MQTT topic: {', '.join(dup)}")
        return self

    def sensor(self, sensor_id: str) -> SensorConfig | None:
        return next((s for s in self.sensors if s.id == sensor_id), None)


class GatewayConfigError(ValueError):
    """A gateway file that cannot be used; the message names the file, the line and each bad field."""


def parse_gateway_file(text: str, source: str = "<gateway>") -> GatewayFile:
    return parse_document(text, source, GatewayFile, GatewayConfigError, "gateway file", "'cameras' and/or 'sensors'",
                          located=lambda head: head in ("cameras", "sensors"))


def load_gateway_file(path: str | Path) -> GatewayFile:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise GatewayConfigError(f"{p}: cannot read the gateway file: {exc.strerror}") from None
    cfg = parse_gateway_file(text, str(p))
    if cfg.site_file is not None and not Path(cfg.site_file).is_absolute():
        cfg = cfg.model_copy(update={"site_file": str((p.parent / cfg.site_file).resolve())})
    # Files and folders: next to the gateway file first, then from the working directory.
    cameras, problems = [], []
    for i, cam in enumerate(cfg.cameras):
        src = cam.source
        if cam.enabled and not ("://" in src or src.strip().isdigit() or src.startswith("scene:")):
            here = p.parent / src
            found = here if not Path(src).is_absolute() and here.exists() else Path(src)
            if not found.exists():
                line = line_of(yaml.compose(text), ("cameras", i, "source"))
                problems.append(f"  - {p}:{line}: cameras.{i}.source: camera {cam.id!r}: {src!r} is neither a file, "
                                f"a folder, a URL nor a device number (looked next to {p.name} and in {Path.cwd()})")
            cam = cam.model_copy(update={"source": str(found)})
        cameras.append(cam)
    if problems:
        raise GatewayConfigError("\n".join([f"{p}: the gateway file is not valid ({len(problems)} problem(s)):",
                                             *problems]))
    return cfg.model_copy(update={"cameras": cameras})
