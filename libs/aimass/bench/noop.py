"""A worker that only counts: the rules and sink workers' set-up (a Faust app whose input is read by
aimass.batch_consumer: consumer group, batches, offset commits after each) consuming the detections
topic and doing nothing else. Its rate is the plumbing's ceiling on this machine and broker, which the
bench prints beside the rules rate so a reader can tell the rules' own cost from the plumbing's
(`aimass run bench-noop`)."""

from __future__ import annotations

import time

import faust

from aimass import contracts, metrics
from aimass.batch_consumer import BatchConsumer, attach
from aimass.kafka import make_app
from aimass.settings import RulesSettings


def build_app(settings: RulesSettings) -> faust.App:
    app = make_app("bench-noop", settings)
    meter = metrics.meter()
    counted = meter.create_counter("aimass_bench_noop_messages", description="messages consumed")
    # It drains a backlog in well under a second, too fast to time from outside by sampling the count:
    # it times itself, from its first batch to its latest (messages after the first, and those seconds).
    after_first = meter.create_counter("aimass_bench_noop_timed_messages", description="messages after the first batch")
    timed = meter.create_counter("aimass_bench_noop_timed_seconds", description="seconds from the first batch to the latest")
    last: list[float] = []

    async def count(batch) -> None:
        n = sum(map(len, batch.values()))
        counted.add(n)
        now = time.perf_counter()
        if last:
            after_first.add(n)
            timed.add(now - last[0])
            last[0] = now
        else:
            last.append(now)

    attach(app, BatchConsumer(settings, app.conf.id, [settings.topic(contracts.TOPIC_DETECTIONS)], count,
                              max_records=settings.rules_batch_max,  # the rules worker's bounds: both fetch alike
                              max_wait_s=settings.rules_batch_wait_ms / 1000))
    return app
