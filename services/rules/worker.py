"""The rules worker: consumes ``detections``, ``sensors`` and its own ``violations`` (for correlation),
evaluates the site's rules, produces ``violations``.

Every input topic is keyed by what its state belongs to (camera, sensor, site), so each key's input
reaches one worker in order, and the engine's state for it is stored in the matching state topic
(aimass.state) after the violations it led to were delivered. A restarted or rebalanced worker resumes
each camera's and sensor's streaks and open incidents from there: an intrusion under way when a worker
dies keeps its one incident. Ticks (silence, "A without B") are judged only for the keys this worker
owns. Input is read in batches by aimass.batch_consumer, whose offsets are committed after the batch's
violations and states were delivered (while the next batch is evaluated).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from operator import attrgetter

import faust

from aimass import contracts, metrics, telemetry
from aimass.contracts import ContractError, Detections, SensorReading, Violation
from aimass.batch_consumer import BatchConsumer, attach
from aimass.kafka import DeadLetterSender, make_app, output_topic
from aimass.settings import RulesSettings
from aimass.site import Site, SiteFileError, load_site, parse_site
from aimass.state import StateTopic
from aimass_rules import control
from aimass_rules.engine import RuleEngine
from aimass_rules.evaluator import Source

log = logging.getLogger("aimass.rules")
SERVICE = "rules"


@dataclass
class Counters:
    detections: int = 0
    readings: int = 0
    violations: int = 0
    unknown: int = 0
    dead: int = 0
    restored: int = 0  # rule states resumed from the state topics


def build_app(settings: RulesSettings, site: Site | None = None) -> faust.App:
    app = make_app(SERVICE, settings)
    site = site or load_site(settings.site_file)
    engine = RuleEngine(site)
    out_topic = output_topic(app, settings, contracts.TOPIC_VIOLATIONS)
    dead = DeadLetterSender(output_topic(app, settings, contracts.TOPIC_DEADLETTER), SERVICE)
    control_topic = settings.topic(contracts.TOPIC_CONTROL_RULES)
    # Where each kind of source keeps its state: (state topic, input topic, partitions).
    states: dict[str, StateTopic] = {
        kind: StateTopic(app, settings, name, source, n) for kind, name, source, n in (
            ("camera", contracts.TOPIC_STATE_RULES_CAMERAS, contracts.TOPIC_DETECTIONS, settings.partitions_detections),
            ("sensor", contracts.TOPIC_STATE_RULES_SENSORS, contracts.TOPIC_SENSORS, settings.partitions_sensors),
            ("site", contracts.TOPIC_STATE_RULES_SITES, contracts.TOPIC_VIOLATIONS, settings.partitions_violations))}
    counters = Counters()
    tracer = telemetry.tracer("aimass.rules")
    m_ = metrics.instruments()
    log.info("rules: site %s with %d cameras, %d sensors, %d rules from %s", site.site.id,
             len(site.cameras), len(site.sensors), len(site.rules), settings.site_file)

    async def send(violations: list[Violation], ctx=None, source_headers=None) -> list:
        """Hand ``violations`` to the producer; returns their delivery futures (await them before the
        input's state is stored and its offset acknowledged). While spans are recorded each gets one,
        child of ``ctx`` or else of the trace in ``source_headers`` (the input's Kafka headers); otherwise
        they carry the input's trace context on as it came."""
        if not violations:
            return []
        futs = []
        recording = telemetry.recording()
        if recording and ctx is None and source_headers is not None:
            ctx = telemetry.extract(source_headers)
        # No span that nobody sees (tens of µs each), nor a context parsed only to be written out again.
        passed_on = {} if recording else dict(telemetry.carried(source_headers))
        for v in violations:
            if recording:
                with tracer.start_as_current_span("violation", context=ctx) as span:
                    span.set_attribute("rule.id", v.rule_id)
                    headers = dict(telemetry.inject())
            else:
                headers = dict(passed_on)
            futs.append(await out_topic.send(v.site_id.encode(), contracts.encode(v), headers=headers))
            m_.violations.add(1, {"rule_type": v.rule_type, "event": v.event})
        counters.violations += len(violations)
        return futs

    async def emit(violations: list[Violation]) -> None:
        for f in await send(violations):
            await f

    async def resume(kind: str, partition: int) -> None:
        """Load the stored state of a partition's keys the first time it is met after an assignment."""
        restored = await states[kind].ensure(partition)
        for key, data in (restored or {}).items():
            if isinstance(data, dict):
                counters.restored += engine.import_state((kind, key.decode()), data)

    def owns(source: Source) -> bool:
        return states[source[0]].owns(source[1].encode())

    async def on_assigned(assigned) -> None:
        for kind, st in states.items():
            for key in st.keys_in(st.assigned(assigned)):
                engine.forget((kind, key.decode()))  # another worker owns it now
        # Every assigned partition's state is loaded at once, side by side, not on its first input:
        # ticks judge silence, which has no input to wait for, and a first batch waited ~0.2 s per
        # partition for loads one after another (0.6 s for the bench's three). In the background, so
        # the rebalance is not held up; ticks skip a partition until it is loaded, and its input waits
        # for the same load.
        for kind in states:
            for tp in assigned:
                if tp.topic == states[kind].source:
                    asyncio.ensure_future(resume(kind, tp.partition))

    # Full topic name -> what it carries and whose state it feeds; violations come back for correlation.
    sensors_topic = settings.topic(contracts.TOPIC_SENSORS)
    inputs = {settings.topic(contracts.TOPIC_DETECTIONS): (Detections, "camera"), sensors_topic: (SensorReading, "sensor")}
    violations_topic = out_topic.name

    async def evaluate(tp, records, cls, kind: str, pending: list, touched: dict) -> None:
        """Every message in order, its violations sent as it is evaluated. The loop runs for every input
        message: what is the same for the whole batch is looked up once, before it."""
        await resume(kind, tp.partition)
        handle = engine.on_detections if cls is Detections else engine.on_reading
        ident_of = attrgetter("camera_id" if cls is Detections else "sensor_id")
        seen: set[str] = set()
        decode, now_ms = contracts.decode, contracts.now_ms
        recording = telemetry.recording()
        evaluated = 0
        for r in records:
            try:
                msg = decode(r.value, cls)
            except ContractError as exc:
                counters.dead += 1
                await dead.refuse(r, exc)
                continue
            ident = ident_of(msg)
            if ident not in engine.known(kind):  # read each time: a new site file may come in at an await
                counters.dead += 1
                counters.unknown += 1
                await dead.refuse(r, ContractError("unknown_source", f"{cls.__name__} from {ident!r}, which the site "
                                                   f"file {settings.site_file} does not define; add it there or fix "
                                                   "the gateway"))
                continue
            msg.stamps["rules_in"] = now_ms()
            if recording:
                with tracer.start_as_current_span("rules", context=telemetry.extract(r.headers)) as span:
                    violations = handle(msg)
                    span.set_attribute("violations", len(violations))
                if violations:  # children of this evaluation
                    pending += await send(violations, telemetry.trace.set_span_in_context(span))
            else:  # no span per message that nobody sees; the violations carry the frame's trace on
                violations = handle(msg)
                if violations:
                    pending += await send(violations, source_headers=r.headers)
            seen.add(ident)
            evaluated += 1
        for ident in seen:
            touched[(kind, ident)] = tp.partition
        if evaluated:
            m_.rule_evaluations.add(evaluated, {"source": kind})
        if cls is Detections:
            counters.detections += evaluated
        else:
            counters.readings += evaluated

    async def correlate(tp, records, pending: list, touched: dict) -> None:
        """Correlation: every violation event of the site, this worker's own included."""
        await resume("site", tp.partition)
        for r in records:
            v = await dead.decoded(r, Violation)
            if v is None:
                counters.dead += 1
                continue
            if v.site_id != engine.site.site.id:
                continue
            pending += await send(engine.on_violation(v), source_headers=r.headers)  # mostly none
            touched[("site", v.site_id)] = tp.partition

    async def handle(batch):
        """A batch of input: violations are sent as they are raised, and each touched source's state is
        taken as the batch left it. Returned for the batch consumer to run while the next batch is
        evaluated: the violations' deliveries are awaited, then those states stored (see aimass.state)
        and their delivery awaited; the consumer commits the offsets after. So the broker's round trips
        do not stall evaluation (awaited here, py-spy found the worker idle 14 % of the time)."""
        pending: list = []
        touched: dict[tuple[str, str], int] = {}  # (kind, source id) -> the input partition its state belongs to
        for tp, records in batch.items():
            if tp.topic == violations_topic:
                await correlate(tp, records, pending, touched)
            else:
                await evaluate(tp, records, *inputs[tp.topic], pending, touched)
        # Plain-data copies: the next batch changes the engine's state while these wait for delivery.
        snapshot = [(kind, partition, ident.encode(), engine.export_state((kind, ident)))
                    for (kind, ident), partition in touched.items()]

        async def deliver() -> None:
            for f in pending:
                await f
            stored = [await states[kind].store(partition, key, data) for kind, partition, key, data in snapshot]
            for f in stored:
                await f
        return deliver()

    caught_up = asyncio.Event()

    async def on_control(value: bytes, offset: int) -> None:
        try:
            cfg = control.decode(value)
            if cfg.site_id != engine.site.site.id:
                return  # another site's file on a shared cluster
            new_site = parse_site(cfg.yaml, f"site file {cfg.source or '?'} (sha256 {cfg.sha256[:12]})")
            if new_site.site.id != engine.site.site.id:
                raise SiteFileError(f"published as site {cfg.site_id!r} but the file says {new_site.site.id!r}")
        except (ContractError, SiteFileError) as exc:
            counters.dead += 1
            log.error("refused a site file from the control topic (offset %d); the current rules keep running: %s",
                      offset, exc)
            await dead.send(source_topic=control_topic, original=value, key=None,
                            error=ContractError("bad_site", str(exc)), partition=0, offset=offset)
            return
        ended = engine.replace_site(new_site)  # unchanged rules keep their state
        log.info("rules switched to %s (sha256 %s): %d rules; %d incidents of changed rules ended",
                 cfg.source, cfg.sha256[:12], len(new_site.rules), len(ended))
        await emit(ended)

    @app.task
    async def follow_control() -> None:
        await control.follow(settings, on_control, caught_up)

    intake = attach(app, BatchConsumer(settings, app.conf.id, [*inputs, violations_topic], handle,
                                       max_records=settings.rules_batch_max,
                                       max_wait_s=settings.rules_batch_wait_ms / 1000, on_assigned=on_assigned,
                                       start_when=caught_up.wait))  # evaluate with the latest applied site file

    @app.timer(1.0)
    async def tick() -> None:
        if not caught_up.is_set():
            return
        # Silence is judged on the worker's clock, so only once the input that could break it is in: a
        # worker catching up after a restart would otherwise call every sensor stale.
        for topic in (sensors_topic, violations_topic):
            lag = intake.backlog(topic)
            if lag < 0 or lag > settings.tick_max_backlog:
                return
        # Between batches: a state stored here must not reflect input whose violations are still on the way.
        async with intake.between_batches():
            out = engine.on_tick(contracts.now_ms(), owns=owns)
            await emit(out)
            for kind, ident in {engine.home_of(v.rule_id) for v in out}:
                st = states[kind]
                await st.store(st.partition_of(ident.encode()), ident.encode(), engine.export_state((kind, ident)))

    @app.timer(10.0)
    async def report() -> None:
        st = engine.stats
        log.info("rules: %d detections, %d readings, %d violation events, %d dead letters (%d unknown sources); "
                 "%d stale/duplicate inputs ignored, %d gateway restarts, %d from other sites, %d rule states resumed",
                 counters.detections, counters.readings, counters.violations, counters.dead, counters.unknown,
                 st.stale, st.restarts, st.foreign, counters.restored)

    app.aimass_counters = counters
    app.aimass_ready = caught_up.is_set
    return app
