"""The sink worker: consumes detections, violations, sensor readings, dead letters, model events,
shadow results and heartbeats, and writes them to ClickHouse in batches (size and time bounds, across
topics; aimass.batch_consumer). Offsets are committed only after the batch's inserts succeeded, so a
crash or an outage replays the batch; the tables deduplicate replays (ReplacingMergeTree keyed by ids
from the source)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import faust

from aimass import contracts, telemetry
from aimass.contracts import (ContractError, DeadLetter, Detections, Heartbeat, ModelEvent, SensorReading, ShadowResult,
                              Violation)
from aimass.clickhouse.users import configured
from aimass.batch_consumer import BatchConsumer, attach
from aimass.kafka import DeadLetterSender, make_app, output_topic
from aimass.settings import SinkSettings
from aimass_sink import rows as R
from aimass_sink.writer import TableWriter

log = logging.getLogger("aimass.sink")
SERVICE = "sink"

# topic -> (contract, {table: its decoded messages of a batch, sink_in_ms -> rows}); whole lists at a
# time, so a message costs no call per table.
Mapper = Callable[[list, float], list[tuple]]
ROUTES: dict[str, tuple[type, dict[str, Mapper]]] = {
    contracts.TOPIC_DETECTIONS: (Detections, {
        "frames": lambda ms, t: [R.frame_row(m, t) for m in ms],
        "detections": lambda ms, t: [r for m in ms for r in R.detection_rows(m)]}),
    contracts.TOPIC_VIOLATIONS: (Violation, {"violations": lambda ms, t: [R.violation_row(m, t) for m in ms]}),
    contracts.TOPIC_SENSORS: (SensorReading, {"sensor_readings": lambda ms, t: [R.reading_row(m, t) for m in ms]}),
    contracts.TOPIC_DEADLETTER: (DeadLetter, {"deadletters": lambda ms, t: [R.deadletter_row(m) for m in ms]}),
    contracts.TOPIC_MODEL_EVENTS: (ModelEvent, {"model_events": lambda ms, t: [R.model_event_row(m) for m in ms]}),
    contracts.TOPIC_SHADOW: (ShadowResult, {"shadow_results": lambda ms, t: [R.shadow_row(m) for m in ms]}),
    contracts.TOPIC_HEARTBEATS: (Heartbeat, {"heartbeats": lambda ms, t: [R.heartbeat_row(m, t) for m in ms]}),
}


# A batch's frame rows are written after its other tables' rows: a frame that can be queried has its
# detections in, so a query that waits for frames, or joins the two, never sees a frame without its
# objects. Against writing all tables at once: x0.88-1.13 rows/s over eight alternating drains (~5 % less).
WRITTEN_LAST = "frames"

TRACED = {contracts.TOPIC_DETECTIONS, contracts.TOPIC_VIOLATIONS, contracts.TOPIC_SENSORS}


def build_app(settings: SinkSettings) -> faust.App:
    app = make_app(SERVICE, settings)
    dead = DeadLetterSender(output_topic(app, settings, contracts.TOPIC_DEADLETTER), SERVICE)
    writers: dict[str, TableWriter] = {}
    tracer = telemetry.tracer("aimass.sink")
    user = configured(settings, "sink")  # the insert-only database user, when its password is set
    log.info("sink writes to ClickHouse as %s", f"user {user.name}" if user else "the user of AIMASS_CLICKHOUSE_URL")
    routes = {settings.topic(name): (name, *route) for name, route in ROUTES.items()}  # full topic name -> route
    for _, tables in ROUTES.values():
        for table in tables:
            writers[table] = TableWriter(settings.clickhouse_url, table, retry_max_s=settings.retry_max_s, user=user,
                                         connections=settings.insert_batches)

    async def handle(batch):
        """Rows for the whole batch; returns its inserts, one per table (each writer has its own
        connections and threads), the frames after the rest, which run while the next batches are read
        and mapped (``insert_batches`` of them at once). The batch's offsets are committed after they all
        succeeded."""
        t = contracts.now_ms()
        recording = telemetry.recording()  # no span per message that nobody sees
        rows: dict[str, list[tuple]] = {}
        traced: dict[str, list] = {}  # tables -> trace context of each traced message, for its insert span
        for tp, records in batch.items():
            name, cls, tables = routes[tp.topic]
            spans = traced.setdefault(",".join(tables), []) if name in TRACED and recording else None
            msgs = []
            for r in records:
                try:
                    msgs.append(contracts.decode(r.value, cls))
                except ContractError as exc:
                    if name == contracts.TOPIC_DEADLETTER:
                        # A dead letter we cannot read cannot be dead-lettered again (it would loop).
                        log.error("unreadable dead letter at %s[%d]@%d dropped: %s", r.topic, r.partition, r.offset, exc)
                    else:
                        await dead.refuse(r, exc)
                    continue
                if spans is not None:
                    spans.append(telemetry.extract(r.headers))
            for table, mapper in tables.items():
                rows.setdefault(table, []).extend(mapper(msgs, t))
        size = sum(map(len, batch.values()))

        async def insert() -> None:
            await asyncio.gather(*(writers[table].write(table_rows) for table, table_rows in rows.items()
                                   if table != WRITTEN_LAST))
            if WRITTEN_LAST in rows:
                await writers[WRITTEN_LAST].write(rows[WRITTEN_LAST])
            # One span per message, child of its trace, timed by the batch's inserts: a frame's trace ends
            # with the insert that made it queryable.
            done = contracts.now_ms()
            for tables, contexts in traced.items():
                for ctx in contexts:
                    telemetry.past_span(tracer, "insert", ctx, t, done, {"tables": tables, "batch.size": size})
        return insert()

    attach(app, BatchConsumer(settings, app.conf.id, list(routes), handle, max_records=settings.batch_rows,
                              max_wait_s=settings.batch_wait_s, max_bytes=settings.batch_max_bytes,
                              in_flight=settings.insert_batches))

    @app.timer(10.0)
    async def report() -> None:
        log.info("sink: %s", ", ".join(f"{t} {w.rows} rows/{w.batches} batches ({w.failures} failures)"
                                       for t, w in writers.items()))

    app.aimass_writers = writers
    return app
