"""A worker that only counts: the same Faust app set-up as the real workers (consumer group, flow
control, stream buffer, monitor) consuming the detections topic in batches and doing nothing else.
Its rate is the framework's ceiling on this machine and broker, which the bench prints beside the
rules and sink rates so a reader can tell our code's cost from Faust's (`aimass run bench-noop`)."""

from __future__ import annotations

import faust

from aimass import contracts, metrics
from aimass.kafka import make_app, raw_topic
from aimass.settings import Settings


def build_app(settings: Settings) -> faust.App:
    app = make_app("bench-noop", settings)
    counted = metrics.meter().create_counter("aimass_bench_noop_messages", description="messages consumed")

    @app.agent(raw_topic(app, settings, contracts.TOPIC_DETECTIONS))
    async def count(stream):
        async for events in stream.take_events(500, within=0.01):
            counted.add(len(events))

    return app
