"""Kafka plumbing shared by the services: the clients' security options (TLS, SASL), topic creation,
the Faust app factory, producers, and dead letters.

Workers read raw bytes and decode with aimass.contracts themselves, so a bad message becomes a
dead letter with a reason instead of a Faust deserialisation crash.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import faust
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.partitioner import murmur2
from faust.exceptions import ProducerSendError

from aimass import contracts, metrics
from aimass.contracts import ContractError, DeadLetter
from aimass.settings import Settings

log = logging.getLogger(__name__)


class KafkaSecurityError(RuntimeError):
    """The Kafka security settings cannot be used (a file missing or unreadable, a key that does not open)."""


def client_options(settings: Settings) -> dict:
    """The keyword arguments that put an aiokafka client (AIOKafkaProducer, AIOKafkaConsumer,
    AIOKafkaAdminClient) on the configured security protocol: ``security_protocol``, and with TLS an
    ``ssl_context`` (aiokafka.helpers.create_ssl_context from the CA, client certificate and key), with
    SASL ``sasl_mechanism``, ``sasl_plain_username`` and ``sasl_plain_password`` (aiokafka's name for the
    PLAIN and SCRAM password). make_app hands the same to Faust as its ``broker_credentials``.
    The password is a str that shows as '**********' in repr(); nothing here logs it."""
    from aiokafka.helpers import create_ssl_context

    from aimass.credentials import SecretError, resolve

    protocol = settings.kafka_security_protocol
    options: dict = {"security_protocol": protocol}
    if protocol in ("SSL", "SASL_SSL"):
        for name in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile"):
            path = getattr(settings, name)
            if path is not None and not path.is_file():
                raise KafkaSecurityError(f"{name} {path} is not a readable file")
        key_password = settings.kafka_ssl_password.get_secret_value()
        try:
            context = create_ssl_context(
                cafile=settings.kafka_ssl_cafile, certfile=settings.kafka_ssl_certfile,
                keyfile=settings.kafka_ssl_keyfile,
                # A callable, never None: OpenSSL would otherwise prompt on the terminal for an encrypted
                # key's password; with '' a wrong or missing password fails at once.
                password=lambda: key_password)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise KafkaSecurityError(f"cannot set up TLS for Kafka from kafka_ssl_cafile/certfile/keyfile: "
                                     f"{type(exc).__name__}: {exc}") from None
        context.check_hostname = settings.kafka_ssl_check_hostname
        options["ssl_context"] = context
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        try:
            password = resolve(settings.kafka_sasl_password, settings.kafka_sasl_password_file, "kafka_sasl_password")
        except SecretError as exc:
            raise KafkaSecurityError(str(exc)) from None
        options.update(sasl_mechanism=settings.kafka_sasl_mechanism, sasl_plain_username=settings.kafka_sasl_username,
                       sasl_plain_password=password)
    return options


def faust_credentials(options: dict) -> faust.auth.Credentials | None:
    """``client_options``' result as Faust's ``broker_credentials`` (None for PLAINTEXT). Faust's
    aiokafka driver turns them back into exactly these keyword arguments for each client it creates."""
    protocol = options["security_protocol"]
    if protocol == "SSL":
        return faust.SSLCredentials(options["ssl_context"])
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        return faust.SASLCredentials(username=options["sasl_plain_username"], password=options["sasl_plain_password"],
                                     mechanism=options["sasl_mechanism"], ssl_context=options.get("ssl_context"))
    return None


def topic_partitions(settings: Settings) -> dict[str, int]:
    """Logical topic name (aimass.contracts) -> partition count."""
    return {
        contracts.TOPIC_FRAMES: settings.partitions_frames,
        contracts.TOPIC_SENSORS: settings.partitions_sensors,
        contracts.TOPIC_DETECTIONS: settings.partitions_detections,
        contracts.TOPIC_VIOLATIONS: settings.partitions_violations,
        contracts.TOPIC_DEADLETTER: settings.partitions_deadletter,
        contracts.TOPIC_CONTROL_RULES: 1,  # one ordered history of site files
        contracts.TOPIC_CONTROL_MODELS: 1,  # one ordered history of routing revisions
        contracts.TOPIC_MODEL_EVENTS: 1,
        contracts.TOPIC_SHADOW: settings.partitions_detections,
        contracts.TOPIC_HEARTBEATS: settings.partitions_heartbeats,
        # State topics: exactly as many partitions as the input they belong to (aimass.state).
        contracts.TOPIC_STATE_TRACKS: settings.partitions_frames,
        contracts.TOPIC_STATE_RULES_CAMERAS: settings.partitions_detections,
        contracts.TOPIC_STATE_RULES_SENSORS: settings.partitions_sensors,
        contracts.TOPIC_STATE_RULES_SITES: settings.partitions_violations,
    }


def partition_for(key: bytes, partitions: int) -> int:
    """The partition the Kafka clients' default partitioner (murmur2, as the Java client and aiokafka
    use) puts ``key`` in: where a key's input arrives before any of it has been seen."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def keys_by_partition(keys: Iterable[str], partitions: int) -> list[list[str]]:
    """Which of ``keys`` (camera or sensor ids) the default partitioner puts in each partition."""
    out: list[list[str]] = [[] for _ in range(partitions)]
    for k in keys:
        out[partition_for(k.encode(), partitions)].append(k)
    return out


def even_share(keys: int, partitions: int) -> int:
    """The most keys a partition holds when ``keys`` are spread as evenly as ``partitions`` allow."""
    return -(-keys // partitions)


def even_spread(keys: Sequence[str], partitions: int) -> bool:
    """Whether no partition holds more of ``keys`` than an even share: workers that split the partitions
    then split the keys as evenly as the partitions allow."""
    return max(map(len, keys_by_partition(keys, partitions))) <= even_share(len(keys), partitions)


def even_counts(keys: Sequence[str], start: int, up_to: int = 64) -> list[int]:
    """Partition counts from ``start`` to ``up_to`` that spread ``keys`` evenly."""
    return [n for n in range(max(1, start), up_to + 1) if even_spread(keys, n)]


# Topics that keep only the latest value per key (brokers without compaction keep all; readers
# take the last per key either way).
COMPACTED = {contracts.TOPIC_CONTROL_RULES, contracts.TOPIC_CONTROL_MODELS, contracts.TOPIC_STATE_TRACKS, contracts.TOPIC_STATE_RULES_CAMERAS,
             contracts.TOPIC_STATE_RULES_SENSORS, contracts.TOPIC_STATE_RULES_SITES}
# Heartbeats carry the broker's append time, which a gateway reads back from the produce answer to
# measure its clock offset (aimass_gateway.clock); brokers that ignore the setting keep CreateTime.
TOPIC_CONFIGS = {contracts.TOPIC_HEARTBEATS: {"message.timestamp.type": "LogAppendTime"}}


async def create_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Create every AI Mass topic with its explicit partition count; existing topics are kept.
    Returns the names created. Brokers that auto-create topics would pick their own partition
    count, so this runs before any worker or gateway starts."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=int(timeout_s * 1000),
                                **client_options(settings))
    await asyncio.wait_for(admin.start(), timeout_s)
    try:
        existing = set(await admin.list_topics())
        wanted = [NewTopic(settings.topic(name), n, settings.replication_factor,
                           topic_configs={**({"cleanup.policy": "compact"} if name in COMPACTED else {}),
                                          **TOPIC_CONFIGS.get(name, {})})
                  for name, n in topic_partitions(settings).items() if settings.topic(name) not in existing]
        if wanted:
            try:
                await admin.create_topics(wanted)
            except TopicAlreadyExistsError:  # a concurrent creator won the race: fine
                pass
        return [t.name for t in wanted]
    finally:
        await admin.close()


def _set_fetch_max_wait(ms: int) -> None:
    """Faust creates its consumers with fetch_max_wait_ms=1500 and no setting for it. A broker that
    answers a fetch only when that wait expires (tansu does; Kafka answers as soon as data arrives)
    then adds up to 1.5 s to every hop, so the value is ours: set on each consumer before it starts."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    original = getattr(AIOKafkaConsumerThread, "_aimass_original_create", AIOKafkaConsumerThread._create_worker_consumer)

    def create(self, transport):
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = ms  # read by AIOKafkaConsumer.start() when it builds its fetcher
        return consumer

    AIOKafkaConsumerThread._aimass_original_create = original
    AIOKafkaConsumerThread._create_worker_consumer = create


def make_app(service: str, settings: Settings, **extra) -> faust.App:
    """A Faust app for one service: its own consumer group, at-least-once, offsets from the start
    of a topic for a new group (so nothing produced before the first start is skipped)."""
    _set_fetch_max_wait(settings.kafka_fetch_max_wait_ms)
    web = {"web_enabled": False} if not settings.worker_web_port else {"web_port": settings.worker_web_port}
    from faust.sensors import Monitor
    from faust.sensors.otel import OpenTelemetryMonitor

    credentials = faust_credentials(client_options(settings))
    if credentials is not None:
        extra.setdefault("broker_credentials", credentials)
    app = faust.App(
        f"{settings.topic_prefix}aimass-{service}",  # the consumer group
        broker=[f"kafka://{h.strip()}" for h in settings.kafka_bootstrap.split(",")],
        store="memory://",
        value_serializer="raw",
        key_serializer="raw",
        topic_partitions=settings.partitions_frames,
        topic_allow_declare=False,  # topics are created up front with explicit counts (create_topics)
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_heartbeat_interval=settings.kafka_heartbeat_s,
        broker_commit_interval=settings.kafka_commit_interval_s,
        producer_max_request_size=settings.kafka_max_request_bytes,
        consumer_max_fetch_size=settings.kafka_max_partition_fetch_bytes,
        stream_buffer_maxsize=settings.stream_buffer_max,
        processing_guarantee="at_least_once",
        datadir=str(settings.state_dir / "faust"),  # Faust's own folder per app; not in the working directory
        **web,
        # Faust's monitor tracks the offsets aimass_consumer_lag reads; its OpenTelemetry variant also
        # exports per-message stream metrics, at a cost per message (see faust_stream_metrics).
        monitor=(OpenTelemetryMonitor(service_name=f"aimass-{service}") if settings.faust_stream_metrics else Monitor()),
        **extra,
    )
    return app


def raw_topic(app: faust.App, settings: Settings, name: str) -> faust.TopicT:
    """The Faust topic for logical topic ``name`` (bytes in, bytes out; workers decode themselves)."""
    return app.topic(settings.topic(name), key_type=bytes, value_type=bytes, value_serializer="raw",
                     key_serializer="raw", partitions=topic_partitions(settings)[name], internal=False)


class OutputTopic:
    """A topic a worker writes bytes to, through its Faust app's producer. Straight to the producer, not
    through Faust's Topic.send: that cost 46-59 µs of CPU a message (its per-call producer-start guard,
    which also yields to the loop, its FutureMessage and callbacks) against 10 µs for the producer's own
    send (3000 sends to the local broker, three rounds each), paid on every detections message and every
    violation. The messages of one producer still go out in the order they were sent."""

    def __init__(self, app: faust.App, name: str):
        self.app = app
        self.name = name  # the full topic name

    async def send(self, key: bytes | None, value: bytes, *, headers: dict[str, bytes] | None = None,
                   partition: int | None = None) -> asyncio.Future:
        """Hand the message to the producer; returns its delivery future (resolves to its metadata)."""
        producer = self.app.producer
        if not producer.started:  # it starts with the worker: only a send before that waits for it
            await self.app.maybe_start_producer()
        return await producer.send(self.name, key, value, partition, None, headers)


def output_topic(app: faust.App, settings: Settings, name: str) -> OutputTopic:
    """The output topic for logical topic ``name``."""
    return OutputTopic(app, settings.topic(name))


def reader(settings: Settings, *topics: str, **options) -> AIOKafkaConsumer:
    """A consumer with the project's client settings (servers, security, fetch wait); by default outside
    any consumer group and committing nothing (the state and control readers, the bench's baselines and
    watchers). ``options`` add or override aiokafka's: aimass.batch_consumer gives it its group."""
    return AIOKafkaConsumer(*topics, **{"bootstrap_servers": settings.kafka_bootstrap, "group_id": None,
                                        "enable_auto_commit": False,
                                        "fetch_max_wait_ms": settings.kafka_fetch_max_wait_ms,
                                        **client_options(settings), **options})


async def start_producer(settings: Settings, **kw) -> AIOKafkaProducer:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        max_request_size=settings.kafka_max_request_bytes,
        linger_ms=kw.pop("linger_ms", 5),
        enable_idempotence=False,  # tansu has no InitProducerId; ids derived from the source dedup instead
        acks="all",
        **{**client_options(settings), **kw},
    )
    await producer.start()
    return producer


@dataclass
class DeadLetterSender:
    """Sends refused input to the dead-letter topic with the original bytes and reason headers,
    and counts it. Never raises for a send failure of its own: losing a dead letter must not stop
    the worker (it is logged with the reason instead)."""

    topic: OutputTopic
    service: str
    count: int = 0

    async def send(self, *, source_topic: str, original: bytes | None, key: bytes | None,
                   error: ContractError | Exception, partition: int = -1, offset: int = -1) -> None:
        reason = getattr(error, "reason", type(error).__name__)
        self.count += 1
        metrics.instruments().dead_letters.add(1, {"service": self.service, "reason": reason})
        log.warning("dead letter from %s partition %s offset %s: %s: %s",
                    source_topic, partition, offset, reason, error)
        msg = DeadLetter(source_topic=source_topic, partition=partition, offset=offset, key=key or b"",
                         reason=reason, detail=str(error)[:2000], service=self.service,
                         at_ms=contracts.now_ms(), original=original or b"")
        headers = {"aimass-reason": reason.encode(), "aimass-service": self.service.encode(),
                   "aimass-source-topic": source_topic.encode()}
        try:
            await self.topic.send(key, contracts.encode(msg), headers=headers)
        except (KafkaError, ProducerSendError) as exc:  # Faust's producer wraps the KafkaError
            log.error("could not send a dead letter (%s) to %s: %s", reason, self.topic.name, exc)

    async def refuse(self, received, error: ContractError | Exception, original: bytes | None = None) -> None:
        """``send`` for a message as received, a Faust event or an aiokafka ConsumerRecord: its topic, key,
        partition and offset, and its bytes unless ``original`` replaces them."""
        m = getattr(received, "message", received)  # a Faust event's message has the record's fields
        await self.send(source_topic=m.topic, original=m.value if original is None else original, key=m.key,
                        error=error, partition=m.partition, offset=m.offset)

    async def decoded(self, received, cls):
        """``received`` (a Faust event or an aiokafka ConsumerRecord) decoded as contract ``cls``; None
        after refusing it (``refuse``, with the decoder's reason) when it is not one."""
        try:
            return contracts.decode(getattr(received, "message", received).value, cls)
        except ContractError as exc:
            await self.refuse(received, exc)
            return None
