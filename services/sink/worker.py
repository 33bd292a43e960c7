"""The sink worker: consumes detections, violations, sensor readings and dead letters, and writes
them to ClickHouse in batches (size and time bounds). Offsets are acknowledged only after the
batch's insert succeeded, so a crash or an outage replays the batch; the tables deduplicate replays
(ReplacingMergeTree keyed by ids from the source)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

import faust

from aimass import contracts, telemetry
from aimass.contracts import (ContractError, DeadLetter, Detections, Heartbeat, ModelEvent, SensorReading, ShadowResult,
                              Violation)
from aimass.clickhouse.users import configured
from aimass.kafka import DeadLetterSender, make_app, raw_topic
from aimass.settings import SinkSettings
from aimass_sink import rows as R
from aimass_sink.writer import TableWriter

log = logging.getLogger("aimass.sink")
SERVICE = "sink"

# topic -> (contract, {table: message -> rows})
Mapper = Callable[[object, float], Iterable[tuple]]
ROUTES: dict[str, tuple[type, dict[str, Mapper]]] = {
    contracts.TOPIC_DETECTIONS: (Detections, {"frames": lambda m, t: [R.frame_row(m, t)],
                                               "detections": lambda m, t: R.detection_rows(m)}),
    contracts.TOPIC_VIOLATIONS: (Violation, {"violations": lambda m, t: [R.violation_row(m, t)]}),
    contracts.TOPIC_SENSORS: (SensorReading, {"sensor_readings": lambda m, t: [R.reading_row(m, t)]}),
    contracts.TOPIC_DEADLETTER: (DeadLetter, {"deadletters": lambda m, t: [R.deadletter_row(m)]}),
    contracts.TOPIC_MODEL_EVENTS: (ModelEvent, {"model_events": lambda m, t: [R.model_event_row(m)]}),
    contracts.TOPIC_SHADOW: (ShadowResult, {"shadow_results": lambda m, t: [R.shadow_row(m)]}),
    contracts.TOPIC_HEARTBEATS: (Heartbeat, {"heartbeats": lambda m, t: [R.heartbeat_row(m, t)]}),
}


TRACED = {contracts.TOPIC_DETECTIONS, contracts.TOPIC_VIOLATIONS, contracts.TOPIC_SENSORS}


def build_app(settings: SinkSettings) -> faust.App:
    app = make_app(SERVICE, settings)
    dead = DeadLetterSender(raw_topic(app, settings, contracts.TOPIC_DEADLETTER), SERVICE)
    writers: dict[str, TableWriter] = {}
    tracer = telemetry.tracer("aimass.sink")
    user = configured(settings, "sink")  # the insert-only database user, when its password is set
    log.info("sink writes to ClickHouse as %s", f"user {user.name}" if user else "the user of AIMASS_CLICKHOUSE_URL")

    def add_agent(topic_name: str) -> None:
        cls, tables = ROUTES[topic_name]
        tracing = topic_name in TRACED  # the message kinds that carry a trace from the gateway
        for table in tables:
            writers[table] = TableWriter(settings.clickhouse_url, table, retry_max_s=settings.retry_max_s, user=user)

        async def agent(stream):
            async for events in stream.take_events(settings.batch_rows, within=settings.batch_wait_s):
                t = contracts.now_ms()
                batch: dict[str, list[tuple]] = {table: [] for table in tables}
                traced = []  # (trace context, what) of each message, for its insert span
                for ev in events:
                    m = ev.message
                    try:
                        msg = contracts.decode(ev.value, cls)
                    except ContractError as exc:
                        if topic_name == contracts.TOPIC_DEADLETTER:
                            # A dead letter we cannot read cannot be dead-lettered again (it would loop).
                            log.error("unreadable dead letter at %s[%d]@%d dropped: %s", m.topic, m.partition, m.offset, exc)
                        else:
                            await dead.refuse(ev, exc)
                        continue
                    for table, mapper in tables.items():
                        batch[table].extend(mapper(msg, t))
                    if tracing:
                        traced.append((telemetry.extract(m.headers), m.key))
                # The tables' inserts run at once (each writer has its own connection and thread).
                await asyncio.gather(*(writers[table].write(rows) for table, rows in batch.items()))
                # One span per message, child of its trace, timed by the batch's inserts: a frame's trace
                # ends with the insert that made it queryable.
                done = contracts.now_ms()
                for ctx, key in traced:
                    telemetry.past_span(tracer, "insert", ctx, t, done,
                                        {"tables": ",".join(tables), "batch.size": len(events)})
                # take_events acknowledges the events when this loop turns, after the inserts.

        agent.__name__ = agent.__qualname__ = f"sink_{topic_name.replace('.', '_')}"
        app.agent(raw_topic(app, settings, topic_name), name=agent.__name__)(agent)

    for name in ROUTES:
        add_agent(name)

    @app.timer(10.0)
    async def report() -> None:
        log.info("sink: %s", ", ".join(f"{t} {w.rows} rows/{w.batches} batches ({w.failures} failures)"
                                       for t, w in writers.items()))

    app.aimass_writers = writers
    return app
