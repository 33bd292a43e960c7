"""Every setting of every service, its default and its environment variable, in one place.

Each field is read from the environment as ``AIMASS_<FIELD NAME IN CAPITALS>`` (e.g.
``AIMASS_KAFKA_BOOTSTRAP``), else from the YAML file named by ``AIMASS_CONFIG`` (top-level keys are
field names), else the default below. ``aimass stack env`` prints the variables for the local stack.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, YamlConfigSettingsSource

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL_DIR = REPO_ROOT / "models" / "nanodet-g-416"
DEFAULT_SITE_FILE = REPO_ROOT / "services" / "gateway" / "sites" / "demo.yaml"


class _Base(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AIMASS_", extra="ignore", frozen=True)

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config = os.environ.get("AIMASS_CONFIG")
        if config:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config))
        return tuple(sources)


class Settings(_Base):
    """Settings shared by every service."""

    # --- where things are
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, comma-separated host:port")
    clickhouse_url: str = Field("clickhouse://127.0.0.1:9000/aimass",
                                description="clickhouse://[user[:password]@]host:port/database (native protocol)")
    site_file: Path = Field(DEFAULT_SITE_FILE, description="the site YAML (cameras, zones, sensors, rules)")
    state_dir: Path = Field(Path(".aimass"), description="local stack state: ports, pids, server data, logs")
    topic_prefix: str = Field("", description="prepended to every topic name: several sites or test runs can share one Kafka cluster")
    model_store: Path = Field(Path(".aimass/models"), description="the model registry's store: ONNX files by sha256 and "
                              "one folder per model version; the registry and every detector must see the same one "
                              "(a shared volume)")

    # --- Kafka client behaviour (values that also suit tansu; see DESIGN.md)
    kafka_session_timeout_s: float = Field(6.0, description="consumer group session timeout; JoinGroup waits half of it on tansu")
    kafka_heartbeat_s: float = Field(1.0, description="consumer heartbeat interval")
    kafka_commit_interval_s: float = Field(1.0, description="how often workers commit processed offsets")
    kafka_fetch_max_wait_ms: int = Field(100, ge=1, description="longest a consumer's fetch waits for data; tansu answers only "
                                         "when it expires, so it bounds the latency of every hop")
    kafka_max_request_bytes: int = Field(8 * 1024 * 1024, description="producer max request size (frames carry JPEGs)")
    partitions_frames: int = Field(4, ge=1, description="partitions of the frames topic (the detector scales to this many workers)")
    partitions_sensors: int = Field(2, ge=1)
    partitions_detections: int = Field(4, ge=1)
    partitions_violations: int = Field(1, ge=1, description="one partition keeps incidents in order for alert consumers")
    partitions_deadletter: int = Field(1, ge=1)
    replication_factor: int = Field(1, ge=1)

    # --- telemetry
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    worker_web_port: int = Field(0, description="Faust web port per worker; 0 turns the web server off")
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus /metrics port per worker; 0 turns it off. "
                              "`aimass run all` gives its workers this port, +1, +2, ... in the order it starts them")


    def topic(self, name: str) -> str:
        return self.topic_prefix + name


class DetectorSettings(Settings):
    model_dir: Path = Field(DEFAULT_MODEL_DIR, description="a folder with model.onnx and model.yaml")
    providers: str = Field("", description="comma-separated ONNX Runtime providers; empty = TensorRT, CUDA, CPU as available")
    threads: int = Field(0, ge=0, description="intra-op threads for the CPU provider; 0 = ONNX Runtime's choice")
    max_batch: int = Field(4, ge=1, le=256, description="frames per inference batch, across cameras")
    max_wait_ms: float = Field(20.0, ge=0, description="longest a frame waits for its batch to fill")
    max_frame_age_s: float = Field(30.0, gt=0, description="frames older than this are skipped and counted, not processed late")


class RulesSettings(Settings):
    tick_max_backlog: int = Field(20, ge=0, description="clock ticks (stale sensors, 'A without B') are judged only "
                                  "while at most this many sensor readings and violation events wait unprocessed, "
                                  "so a worker catching up after a restart does not call live sensors stale")


class RegistrySettings(Settings):
    registry_host: str = Field("127.0.0.1", description="where the registry's HTTP API listens")
    registry_port: int = Field(8470, ge=0, le=65535, description="the registry's HTTP API port (0: a free one)")
    registry_token: SecretStr = Field(SecretStr(""), description="the bearer token the HTTP API requires; never logged")
    registry_token_file: Path | None = Field(None, description="a file holding the token (instead of registry_token)")
    max_model_mb: float = Field(200.0, gt=0, description="largest ONNX file a push accepts")
    drift_check_s: float = Field(60.0, gt=0, description="how often the registry compares each version's detection "
                                                          "rate with its baseline")
    drift_window_s: float = Field(600.0, gt=0, description="the recent window a detection rate is measured over")
    drift_baseline_s: float = Field(3600.0, gt=0, description="the window before it that is the baseline")
    drift_threshold: float = Field(0.5, gt=0, description="relative change of detections per frame (per label) that "
                                                          "counts as drift: 0.5 = 50 % up or down")


class SinkSettings(Settings):
    batch_rows: int = Field(2000, ge=1, description="messages per ClickHouse insert batch, per topic")
    batch_wait_s: float = Field(0.5, gt=0, description="longest a message waits before its batch is inserted")
    retry_max_s: float = Field(30.0, gt=0, description="longest back-off between insert retries (retries never give up)")


class GatewaySettings(Settings):
    gateway_id: str = Field("gw-1", description="this gateway's id, stamped on every message")
    jpeg_quality: int = Field(80, ge=10, le=100)


def load(cls: type[Settings] = Settings, **overrides) -> Settings:
    return cls(**overrides)
