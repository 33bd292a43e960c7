"""Every setting of every service, its default and its environment variable, in one place.

Each field is read from the environment as ``AIMASS_<FIELD NAME IN CAPITALS>`` (e.g.
``AIMASS_KAFKA_BOOTSTRAP``), else from the YAML file named by ``AIMASS_CONFIG`` (top-level keys are
field names), else the default below. ``aimass stack env`` prints the variables for the local stack.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, YamlConfigSettingsSource

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL_DIR = REPO_ROOT / "models" / "nanodet-g-416"
DEFAULT_SITE_FILE = REPO_ROOT / "services" / "gateway" / "sites" / "demo.yaml"


class _Base(BaseSettings):
    # hide_input_in_errors: a validation error names the field and the rule, never the value (which may
    # be a password, or a URL with one).
    model_config = SettingsConfigDict(env_prefix="AIMASS_", extra="ignore", frozen=True, hide_input_in_errors=True)

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
    # The database users the migrations create on ClickHouse >= 20.5 (SQL access control; on 18.16 they
    # are users.xml entries, which the local stack writes) and the services connect as. A user whose
    # password is not set is neither created nor used: that service connects as clickhouse_url's user.
    clickhouse_sink_user: str = Field("aimass_sink", description="the sink's insert-only user (INSERT on the database's "
                                      "tables and nothing else; see docs/threat-model.md)")
    clickhouse_sink_password: SecretStr = Field(SecretStr(""), description="its password; never logged")
    clickhouse_sink_password_file: Path | None = Field(None, description="a file holding it (instead of the password)")
    clickhouse_reader_user: str = Field("aimass_reader", description="the read-only user for analysts, Grafana and "
                                        "`aimass sql` (SELECT on the database, readonly=1)")
    clickhouse_reader_password: SecretStr = Field(SecretStr(""), description="its password; never logged")
    clickhouse_reader_password_file: Path | None = Field(None, description="a file holding it (instead of the password)")
    site_file: Path = Field(DEFAULT_SITE_FILE, description="the site YAML (cameras, zones, sensors, rules)")
    state_dir: Path = Field(Path(".aimass"), description="local stack state: ports, pids, server data, logs")
    topic_prefix: str = Field("", description="prepended to every topic name: several sites or test runs can share one Kafka cluster")
    model_store: Path = Field(Path(".aimass/models"), description="the model registry's store: ONNX files by sha256 and "
                              "one folder per model version; the registry and every detector must see the same one "
                              "(a shared volume)")
    model_store_s3_endpoint: str = Field("", description="with AIMASS_MODEL_STORE=s3://BUCKET[/PREFIX] (the store in "
                                         "an S3-compatible bucket, docs/model-store.md): the S3 endpoint, e.g. "
                                         "http://minio:9000; empty: AWS S3. Credentials come from boto3's chain "
                                         "(AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, the machine's "
                                         "role), never from a setting")
    model_store_s3_region: str = Field("", description="the bucket's region; empty: boto3's (AWS_DEFAULT_REGION, "
                                       "~/.aws/config)")
    model_store_cache: Path | None = Field(None, description="with an s3:// model store: the local folder that mirrors "
                                           "the versions read from the bucket (detectors load them from it); default "
                                           "STATE_DIR/model-cache")

    # --- Kafka client behaviour (values that also suit tansu; see DESIGN.md)
    kafka_session_timeout_s: float = Field(6.0, description="consumer group session timeout; JoinGroup waits half of it on tansu")
    kafka_heartbeat_s: float = Field(1.0, description="consumer heartbeat interval")
    kafka_commit_interval_s: float = Field(1.0, description="how often workers commit processed offsets")
    kafka_fetch_max_wait_ms: int = Field(100, ge=1, description="longest a consumer's fetch waits for data; tansu answers only "
                                         "when it expires, so it bounds the latency of every hop")
    kafka_max_request_bytes: int = Field(8 * 1024 * 1024, description="producer max request size (frames carry JPEGs)")
    kafka_max_partition_fetch_bytes: int = Field(4 * 1024 * 1024, ge=64 * 1024, description="most a consumer fetches "
                                                 "from one partition at a time (above the largest frame, ~2.1 MB)")
    faust_stream_metrics: bool = Field(False, description="Faust's own per-topic stream metrics (messages, events, "
                                       "commits) on the OpenTelemetry meter too; off by default because they cost "
                                       "about a quarter of a worker's message rate (measured with `aimass bench`). "
                                       "The aimass_* metrics and aimass_consumer_lag are always on")
    stream_buffer_max: int = Field(1024, ge=1, description="messages each worker agent may hold read but not processed "
                                   "(Faust's stream_buffer_maxsize); with the fetch size it bounds a worker's memory "
                                   "when a later stage is slow: Kafka's lag grows instead")

    # --- Kafka security: Kafka's own client properties under AIMASS_ names (each description names the
    # property it mirrors). Every Kafka client of the project (Faust workers, producers, the admin
    # client, control and state readers, the gateway) gets them from aimass.kafka.client_options.
    # Secrets are SecretStr (shown as '**********') or files; they never reach a log line or an error.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="security.protocol: PLAINTEXT, SSL (TLS), SASL_PLAINTEXT or SASL_SSL (SASL over TLS)")
    kafka_ssl_cafile: Path | None = Field(None, description="ssl.truststore.location (Java) / ssl.ca.location (librdkafka): "
                                          "PEM file of the CA(s) that signed the brokers' certificates. Unset with "
                                          "SSL/SASL_SSL: the system trust store (a public CA) is used")
    kafka_ssl_certfile: Path | None = Field(None, description="ssl.keystore.location / ssl.certificate.location: this "
                                            "client's certificate (PEM, may hold the key too), for brokers that "
                                            "require client certificates (mutual TLS)")
    kafka_ssl_keyfile: Path | None = Field(None, description="ssl.key.location: the client certificate's private key (PEM)")
    kafka_ssl_password: SecretStr = Field(SecretStr(""), description="ssl.key.password: the password of an encrypted "
                                          "private key; never logged")
    kafka_ssl_check_hostname: bool = Field(True, description="ssl.endpoint.identification.algorithm=https (true) or '' "
                                           "(false): the broker's certificate must name the host connected to")
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "PLAIN", description="sasl.mechanism (GSSAPI and OAUTHBEARER are not supported here)")
    kafka_sasl_username: str = Field("", description="sasl.jaas.config's username= (PlainLoginModule / ScramLoginModule)")
    kafka_sasl_password: SecretStr = Field(SecretStr(""), description="sasl.jaas.config's password=; never logged")
    kafka_sasl_password_file: Path | None = Field(None, description="a file holding the SASL password (instead of "
                                                  "kafka_sasl_password)")
    partitions_frames: int = Field(4, ge=1, description="partitions of the frames topic (the detector scales to this many workers)")
    partitions_sensors: int = Field(2, ge=1)
    partitions_detections: int = Field(4, ge=1)
    partitions_violations: int = Field(1, ge=1, description="one partition keeps incidents in order for alert consumers")
    partitions_deadletter: int = Field(1, ge=1)
    partitions_heartbeats: int = Field(1, ge=1, description="partitions of the gateways' heartbeat topic (keyed by gateway id)")
    replication_factor: int = Field(1, ge=1)

    # --- telemetry
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    worker_web_port: int = Field(0, description="Faust web port per worker (health: GET /); 0 turns the web server off. "
                                 "`aimass run all` gives its workers this port, +1, +2, ... in the order it starts them")
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus /metrics port per worker; 0 turns it off. "
                              "`aimass run all` gives its workers this port, +1, +2, ... in the order it starts them")
    stop_timeout_s: float = Field(25.0, ge=2, description="longest a worker takes to stop after SIGTERM or Ctrl-C: it "
                                  "finishes the batch in hand and commits, but a broker or ClickHouse that stopped "
                                  "answering could hold that for ever, so it then exits anyway (its uncommitted input "
                                  "is read again by the next worker of its group). Keep it under the orchestrator's "
                                  "grace period (Kubernetes: terminationGracePeriodSeconds, 30 s by default)")


    def topic(self, name: str) -> str:
        return self.topic_prefix + name

    # --- retention: days each ClickHouse table keeps (0 = forever). `aimass retention` (run it daily)
    # drops the partitions older than this on any server; on ClickHouse 23.9+ migration 005 also sets
    # TTLs with these defaults (`aimass retention --ttl` rewrites them after a change). Base tables are
    # partitioned by day (model_events by month), the per-minute rollups (*_minutes) by month: a
    # partition goes once its last day is older than the retention. See libs/aimass/clickhouse/retention.py.
    retention_frames_days: int = Field(30, ge=0, description="frames: one row per frame")
    retention_detections_days: int = Field(30, ge=0, description="detections: one row per object")
    retention_violations_days: int = Field(365, ge=0, description="violations: incident events")
    retention_sensor_readings_days: int = Field(90, ge=0, description="sensor_readings")
    retention_deadletters_days: int = Field(14, ge=0, description="deadletters (the Kafka topic keeps the originals)")
    retention_model_events_days: int = Field(365, ge=0, description="model_events")
    retention_shadow_results_days: int = Field(30, ge=0, description="shadow_results")
    retention_rollups_days: int = Field(395, ge=0, description="every per-minute rollup: camera_, latency_, class_, "
                                        "violation_, sensor_, model_ and model_class_minutes (13 months: a year back)")

    @field_validator("kafka_security_protocol", "kafka_sasl_mechanism", mode="before")
    @classmethod
    def _upper(cls, v):  # Kafka's names are upper case; accept ssl, sasl_ssl, scram_sha_512 too
        if not isinstance(v, str):
            return v
        v = v.strip().upper()
        return v.replace("_", "-") if v.startswith("SCRAM") else v

    @model_validator(mode="after")
    def _check_security(self):
        """Refuse security settings (Kafka, the ClickHouse users) that contradict each other; no secret is echoed."""
        protocol = self.kafka_security_protocol
        tls, sasl = protocol in ("SSL", "SASL_SSL"), protocol in ("SASL_PLAINTEXT", "SASL_SSL")
        tls_set = [n for n in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile") if getattr(self, n)]
        if self.kafka_ssl_password.get_secret_value():
            tls_set.append("kafka_ssl_password")
        if tls_set and not tls:
            raise ValueError(f"{', '.join(tls_set)} set but kafka_security_protocol is {protocol}: the connection "
                             "would not use TLS; set kafka_security_protocol to SSL or SASL_SSL")
        if self.kafka_ssl_keyfile and not self.kafka_ssl_certfile:
            raise ValueError("kafka_ssl_keyfile is set without kafka_ssl_certfile (the client certificate it belongs to)")
        if self.kafka_ssl_password.get_secret_value() and not (self.kafka_ssl_keyfile or self.kafka_ssl_certfile):
            raise ValueError("kafka_ssl_password is set but there is no client key (kafka_ssl_keyfile) for it to open")
        sasl_password = bool(self.kafka_sasl_password.get_secret_value())
        if sasl:
            if not self.kafka_sasl_username:
                raise ValueError(f"kafka_security_protocol is {protocol} but kafka_sasl_username is empty")
            if not sasl_password and not self.kafka_sasl_password_file:
                raise ValueError(f"kafka_security_protocol is {protocol} but neither kafka_sasl_password nor "
                                 "kafka_sasl_password_file is set")
        elif self.kafka_sasl_username or sasl_password or self.kafka_sasl_password_file:
            raise ValueError(f"SASL credentials set but kafka_security_protocol is {protocol}: they would not be "
                             "sent; set kafka_security_protocol to SASL_SSL (or SASL_PLAINTEXT)")
        if sasl_password and self.kafka_sasl_password_file:
            raise ValueError("both kafka_sasl_password and kafka_sasl_password_file are set; set one")
        for who in ("sink", "reader"):
            user = getattr(self, f"clickhouse_{who}_user")
            if getattr(self, f"clickhouse_{who}_password").get_secret_value() and getattr(self, f"clickhouse_{who}_password_file"):
                raise ValueError(f"both clickhouse_{who}_password and clickhouse_{who}_password_file are set; set one")
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", user):
                raise ValueError(f"clickhouse_{who}_user {user!r} must start with a letter and hold only letters, "
                                 "digits and underscores")
        return self


class DetectorSettings(Settings):
    model_dir: Path = Field(DEFAULT_MODEL_DIR, description="a folder with model.onnx and model.yaml")
    providers: str = Field("", description="comma-separated ONNX Runtime providers; empty = TensorRT, CUDA, CPU as available")
    threads: int = Field(0, ge=0, description="intra-op threads per ONNX Runtime session on the CPU; 0 = auto: the "
                         "cores shared among the sessions (detector_sessions), ONNX Runtime's choice on a GPU")
    detector_spinning: bool = Field(False, description="let ONNX Runtime's intra-op threads spin while they wait "
                                    "for work (its default). Off: the worker's prepare thread, the event loop and "
                                    "the broker share the cores with them, and spinning threads took their time "
                                    "(bench/README.md)")
    detector_prepare_threads: int = Field(0, ge=0, le=16, description="threads that decode JPEGs, prepare batches "
                                          "and decode model outputs, each on a batch of its own. 0 = auto: 1 on the "
                                          "CPU (the cores run the sessions); on a GPU half the usable cores, up to 4: "
                                          "one thread caps a worker at a few hundred frames/s, well below a GPU's")
    max_batch: int = Field(4, ge=1, le=256, description="frames per inference batch, across cameras")
    max_wait_ms: float = Field(20.0, ge=0, description="longest a frame waits for its batch to fill")
    max_frame_age_s: float = Field(30.0, gt=0, description="frames older than this are skipped and counted, not processed late")
    # --- GPU serving (docs/gpu.md); the CPU provider ignores all but detector_io_binding and detector_sessions
    detector_io_binding: Literal["auto", "on", "off"] = Field(
        "auto", description="run batches through ONNX Runtime IO binding (inputs copied into reused device "
        "buffers, outputs bound to CPU memory): auto = off, since plain session.run was faster on an H100 with CUDA "
        "and as fast on the CPU (docs/gpu.md); on forces it")
    detector_device_id: int = Field(0, ge=0, description="the CUDA device (GPU index) CUDA and TensorRT run on")
    detector_cudnn_conv_algo_search: Literal["HEURISTIC", "EXHAUSTIVE", "DEFAULT"] = Field(
        "HEURISTIC", description="how the CUDA provider picks cuDNN convolution algorithms: HEURISTIC (fast to "
        "start), EXHAUSTIVE (benchmarks each new input shape once: slow first batches, maybe faster after), DEFAULT")
    detector_trt_fp16: bool = Field(False, description="let TensorRT build fp16 engines (faster on GPUs with "
                                    "tensor cores; boxes and scores may differ slightly from fp32)")
    detector_sessions: int = Field(0, ge=0, le=16, description="ONNX Runtime sessions per model version, each running "
                                   "whole batches, as many batches at once as sessions (one's CPU work overlaps "
                                   "another's run). 0 = auto: one per CPU core (up to 4) with threads shared out "
                                   "on the CPU, 1 on a GPU. Each session holds its own copy of the weights and arena")


class RulesSettings(Settings):
    tick_max_backlog: int = Field(20, ge=0, description="clock ticks (stale sensors, 'A without B') are judged only "
                                  "while at most this many sensor readings and violation events wait unprocessed, "
                                  "so a worker catching up after a restart does not call live sensors stale")
    rules_batch_max: int = Field(500, ge=1, description="input messages evaluated per batch; each camera's and "
                                 "sensor's state is stored once per batch, after its violations were delivered")
    rules_batch_wait_ms: float = Field(10.0, ge=0, description="longest a message waits for its batch to fill "
                                       "(adds at most this to the latency of a violation)")
    rules_processes: int = Field(1, ge=0, le=64, description="rules worker processes `aimass run rules` (and `run "
                                 "all`) starts on this host, one consumer group: the engine is Python, one core per "
                                 "process at most (bench/README.md). 0 = one per usable core. Each takes a share of "
                                 "the partitions, so more than the input topics' partitions leaves some idle")


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
    batch_rows: int = Field(2000, ge=1, description="messages per batch, all topics together; each table gets one "
                            "ClickHouse insert per batch")
    batch_wait_s: float = Field(0.5, gt=0, description="longest a batch waits to fill after its first message "
                                "(adds at most this to the time before a row is queryable)")
    batch_max_bytes: int = Field(2 * 1024 * 1024, ge=64 * 1024, description="most message bytes per batch (a batch's "
                                 "rows take several times that in memory while its insert is retried; "
                                 "insert_batches + 1 batches are held: those inserting, the next being read)")
    insert_batches: int = Field(2, ge=1, le=8, description="batches whose inserts may run at once, committed in order "
                                "(each table gets as many ClickHouse connections): the server works on one while "
                                "the sink sends the next")
    retry_max_s: float = Field(30.0, gt=0, description="longest back-off between insert retries (retries never give up)")
    sink_processes: int = Field(1, ge=0, le=64, description="sink worker processes `aimass run sink` (and `run all`) "
                                "starts on this host, one consumer group: decoding and mapping rows is Python, one "
                                "core per process at most. 0 = one per usable core; each takes a share of the "
                                "partitions")


class GatewaySettings(Settings):
    gateway_id: str = Field("gw-1", description="this gateway's id, stamped on every message")
    jpeg_quality: int = Field(80, ge=10, le=100, description="JPEG quality for cameras that do not set their own")
    send_timeout_s: float = Field(10.0, gt=0, description="a message Kafka has not acknowledged within this long goes "
                                  "to the on-disk spool (and so does everything after it until the broker is back)")
    spool_dir: Path | None = Field(None, description="the gateway's on-disk spool (store and forward while the broker is "
                                   "unreachable); default STATE_DIR/gateway/GATEWAY_ID. One gateway process per folder")
    spool_max_bytes: int = Field(1024 * 1024 * 1024, ge=0, description="largest the spool may grow (message bytes); "
                                 "past it the oldest messages are dropped and counted. 0 turns the spool off")
    spool_max_messages: int = Field(1_000_000, ge=1, description="most messages the spool holds; past it the oldest "
                                    "are dropped and counted")
    heartbeat_interval_s: float = Field(10.0, gt=0, description="how often the gateway sends a heartbeat for itself "
                                        "and for each camera (fps, frames sent and skipped, bytes, errors, spool, clock)")
    mqtt_url: str = Field("", description="MQTT broker the gateway subscribes to for sensor readings, "
                          "mqtt://[user@]host[:port]; empty: no MQTT")
    mqtt_password: SecretStr = Field(SecretStr(""), description="the MQTT user's password (kept out of the URL; never logged)")
    http_push_port: int = Field(0, ge=0, le=65535, description="port of the gateway's HTTP endpoint for pushed sensor "
                                "readings (POST /v1/readings); 0: off")
    http_push_host: str = Field("127.0.0.1", description="address the HTTP push endpoint listens on (0.0.0.0: every interface)")
    clock_reference: str = Field("broker", description="what the gateway measures its clock offset against: "
                                 "'ntp://HOST[:PORT]' (an NTP server on the site), 'broker' (Kafka's LogAppendTime on "
                                 "the heartbeat topic; a real Kafka sets it, tansu does not), or 'none'")
    clock_check_s: float = Field(300.0, gt=0, description="how often the clock offset is measured again")

    def spool_folder(self) -> Path:
        return self.spool_dir if self.spool_dir is not None else self.state_dir / "gateway" / self.gateway_id


def load(cls: type[Settings] = Settings, **overrides) -> Settings:
    return cls(**overrides)
