"""One frame, one trace: the gateway's capture, the detector's detect/decode/inference, the rules'
evaluation and violation, and the sink's insert share one trace id and form one tree. The three
workers run here in threads (each Faust app on its own event loop) so the SDK's in-memory exporter
sees every span; over the network the same context travels in the Kafka headers."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from aimass import contracts, telemetry
from aimass.batch_consumer import assignment
from aimass.clickhouse.client import query_rows
from aimass.settings import DetectorSettings, GatewaySettings, RulesSettings, SinkSettings
from aimass.site import load_site
from aimass_gateway.producer import GatewayProducer
from aimass_gateway.scene import SceneRenderer
from conftest import wait_until

pytestmark = pytest.mark.integration
E2E_SITE = Path(__file__).parents[1] / "e2e" / "site.yaml"


@pytest.fixture
def spans():
    """The in-memory exporter on this process's tracer provider."""
    exporter = InMemorySpanExporter()
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        telemetry.setup("aimass-test")
    telemetry.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()


class AppThread:
    """A Faust app started on its own event loop in a thread (what `aimass run NAME` does in a process)."""

    def __init__(self, app):
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"faust-{app.conf.id}")
        self.started = threading.Event()
        self.error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.app.finalize()
            self.loop.run_until_complete(self.app.start())
        except BaseException as exc:  # reported by start()
            self.error = exc
        finally:
            self.started.set()
        if self.error is None:
            self.loop.run_forever()

    def start(self) -> None:
        self.thread.start()
        assert self.started.wait(60) and self.error is None, self.error

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.app.stop(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)


def test_one_frame_s_spans_form_one_trace_from_gateway_to_sink(ns, ns_ch, spans):
    from aimass_detector.worker import build_app as detector_app
    from aimass_rules.worker import build_app as rules_app
    from aimass_sink.worker import build_app as sink_app

    apps = [AppThread(detector_app(ns.settings(DetectorSettings))),
            AppThread(rules_app(ns.settings(RulesSettings, site_file=E2E_SITE))),
            AppThread(sink_app(ns.settings(SinkSettings)))]
    for a in apps:
        a.start()
    try:
        wait_until(lambda: all(assignment(a.app) for a in apps) and apps[0].app.aimass_ready()
                   and apps[1].app.aimass_ready(), 90, "the three workers to have partitions and be ready")
        cam = load_site(E2E_SITE).camera("cam-in")
        renderer = SceneRenderer(cam)

        async def send() -> None:
            gw = GatewayProducer(ns.settings(GatewaySettings), "e2e-site")
            async with gw:
                for seq in range(12):  # the walker reaches the zone: the rules raise an intrusion
                    image, _ = renderer.render(3.0 + seq / cam.fps)
                    await gw.send_frame("cam-in", seq, contracts.now_ms(), image)
            assert gw.counters.send_errors == 0
        asyncio.run(send())
        wait_until(lambda: query_rows(ns_ch, "SELECT count() FROM violations FINAL WHERE event = 'start'")[1][0][0] >= 1,
                   60, "the intrusion in ClickHouse")

        def trace_of(seq: int):
            captures = [s for s in spans.get_finished_spans() if s.name == "capture"
                        and s.attributes.get("frame.seq") == seq]
            assert len(captures) == 1
            tid = captures[0].context.trace_id
            return [s for s in spans.get_finished_spans() if s.context.trace_id == tid]

        # The frame whose detections started the incident: its trace runs through every stage.
        source_seq = query_rows(ns_ch, "SELECT source_seq FROM violations FINAL WHERE event = 'start'")[1][0][0]
        wait_until(lambda: [s.name for s in trace_of(source_seq)].count("insert") >= 2, 30,
                   "the sink's insert spans of that frame's trace (its detections row and its violation's)")
        got = trace_of(source_seq)
        names = [s.name for s in got]
        assert {"capture", "detect", "decode", "inference", "rules", "violation", "insert"} <= set(names), names
        assert names.count("insert") == 2  # the frame's detections row and the violation's row
        ids = {s.context.span_id for s in got}
        roots = [s for s in got if s.parent is None]
        assert [r.name for r in roots] == ["capture"]
        assert all(s.parent.span_id in ids for s in got if s.parent is not None)  # one tree, nothing dangling
        by_id = {s.context.span_id: s for s in got}

        def path(s):
            return [s.name] + (path(by_id[s.parent.span_id]) if s.parent else [])
        assert path(next(s for s in got if s.name == "violation"))[:4] == ["violation", "rules", "detect", "capture"]
        inference = next(s for s in got if s.name == "inference")
        assert inference.links and inference.attributes["batch.size"] >= 1  # linked to its batch's span
    finally:
        for a in reversed(apps):
            a.stop()
