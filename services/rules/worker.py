"""The rules worker: consumes ``detections`` and ``sensors``, evaluates the site's rules, produces
``violations``.

State lives per camera and per sensor; both topics are keyed by camera or sensor id, so every
camera's frames reach one worker in order. Violations are delivered before the input is acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import faust

from aimass import contracts, telemetry
from aimass.contracts import ContractError, Detections, SensorReading, Violation
from aimass.kafka import DeadLetterSender, make_app, raw_topic
from aimass.settings import RulesSettings
from aimass.site import Site, SiteFileError, load_site, parse_site
from aimass_rules import control
from aimass_rules.engine import RuleEngine

log = logging.getLogger("aimass.rules")
SERVICE = "rules"


@dataclass
class Counters:
    detections: int = 0
    readings: int = 0
    violations: int = 0
    unknown: int = 0
    dead: int = 0


def build_app(settings: RulesSettings, site: Site | None = None) -> faust.App:
    app = make_app(SERVICE, settings)
    site = site or load_site(settings.site_file)
    engine = RuleEngine(site)
    det_topic = raw_topic(app, settings, contracts.TOPIC_DETECTIONS)
    sensor_topic = raw_topic(app, settings, contracts.TOPIC_SENSORS)
    out_topic = raw_topic(app, settings, contracts.TOPIC_VIOLATIONS)
    dead = DeadLetterSender(raw_topic(app, settings, contracts.TOPIC_DEADLETTER), SERVICE)
    control_topic = settings.topic(contracts.TOPIC_CONTROL_RULES)
    counters = Counters()
    tracer = telemetry.tracer("aimass.rules")
    log.info("rules: site %s with %d cameras, %d sensors, %d rules from %s", site.site.id,
             len(site.cameras), len(site.sensors), len(site.rules), settings.site_file)

    async def emit(violations: list[Violation], ctx) -> None:
        futs = []
        for v in violations:
            with tracer.start_as_current_span("violation", context=ctx) as span:
                span.set_attribute("rule.id", v.rule_id)
                headers = dict(telemetry.inject())
            futs.append(await out_topic.send(key=v.rule_id.encode(), value=contracts.encode(v), headers=headers, force=True))
        for f in futs:
            await f
        counters.violations += len(violations)

    async def process(stream, cls, known, handle):
        await caught_up.wait()  # evaluate with the latest applied site file, not the one on disk
        async for event in stream.events():
            m = event.message
            try:
                msg = contracts.decode(event.value, cls)
                ident = msg.camera_id if cls is Detections else msg.sensor_id
                if not known(ident):
                    raise ContractError("unknown_source", f"{cls.__name__} from {ident!r}, which the site file "
                                        f"{settings.site_file} does not define; add it there or fix the gateway")
            except ContractError as exc:
                counters.dead += 1
                if exc.reason == "unknown_source":
                    counters.unknown += 1
                await dead.send(source_topic=m.topic, original=event.value, key=m.key, error=exc,
                                partition=m.partition, offset=m.offset)
                continue
            msg.stamps["rules_in"] = contracts.now_ms()
            ctx = telemetry.extract(m.headers)
            with tracer.start_as_current_span("rules", context=ctx):
                violations = handle(msg)
            await emit(violations, ctx)

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
        await emit(ended, None)

    @app.task
    async def follow_control() -> None:
        await control.follow(settings, on_control, caught_up)

    @app.agent(det_topic)
    async def on_detections(stream):
        def handle(d):
            counters.detections += 1
            return engine.on_detections(d)
        await process(stream, Detections, lambda c: engine.site.camera(c) is not None, handle)

    @app.agent(sensor_topic)
    async def on_sensors(stream):
        def handle(r):
            counters.readings += 1
            return engine.on_reading(r)
        await process(stream, SensorReading, lambda s: engine.site.sensor(s) is not None, handle)

    @app.timer(1.0)
    async def tick() -> None:
        if caught_up.is_set():
            await emit(engine.on_tick(contracts.now_ms()), None)

    @app.timer(10.0)
    async def report() -> None:
        st = engine.stats
        log.info("rules: %d detections, %d readings, %d violation events, %d dead letters (%d unknown sources); "
                 "%d stale/duplicate inputs ignored, %d gateway restarts, %d from other sites",
                 counters.detections, counters.readings, counters.violations, counters.dead, counters.unknown,
                 st.stale, st.restarts, st.foreign)

    app.aimass_counters = counters
    app.aimass_ready = caught_up.is_set
    return app
