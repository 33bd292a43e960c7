"""Worker metrics through OpenTelemetry: read by a Prometheus endpoint per worker and, when the
standard ``OTEL_*`` variables ask for it, pushed over OTLP to a collector.

``setup(service, port)`` installs the process's MeterProvider once: a Prometheus reader served on
``port`` (``AIMASS_METRICS_PORT``; 0 turns the endpoint off) and an OTLP reader when
``OTEL_METRICS_EXPORTER=otlp`` or an OTLP endpoint is set (``OTEL_METRICS_EXPORTER=none`` turns it off). Without either the
instruments are cheap no-ops. Faust's own OpenTelemetry monitor (faust.sensors.otel) adds the stream
figures (messages in/out, commit latency, offsets read, committed and at the high watermark);
``watch_lag`` adds ``aimass_consumer_lag``: per assigned partition, the high watermark the last fetch
returned minus the committed offset. (Not ListOffsets: the local broker answers that wrongly after
batched writes, while its fetch responses carry the right high watermark; measured.)

Instruments are named ``aimass_*`` with units in the name where Prometheus expects them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource

log = logging.getLogger(__name__)
_provider: MeterProvider | None = None
_port: int | None = None


def setup(service_name: str, port: int = 0) -> MeterProvider:
    """Install the MeterProvider once per process; returns it."""
    global _provider, _port
    if _provider is not None:
        return _provider
    readers = []
    if port:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import start_http_server

        readers.append(PrometheusMetricReader())
        start_http_server(port, addr=os.environ.get("AIMASS_METRICS_HOST", "0.0.0.0"))
        _port = port
        log.info("metrics on http://%s:%d/metrics", os.environ.get("AIMASS_METRICS_HOST", "0.0.0.0"), port)
    exporter = os.environ.get("OTEL_METRICS_EXPORTER", "")
    if exporter == "otlp" or (exporter != "none" and (os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                                                      or os.environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"))):
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    _provider = MeterProvider(metric_readers=readers, resource=Resource.create({"service.name": service_name}))
    metrics.set_meter_provider(_provider)
    return _provider


def meter(name: str = "aimass") -> metrics.Meter:
    return metrics.get_meter(name)


@dataclass
class Instruments:
    """The product's own metrics (Faust's monitor adds the stream-level ones)."""

    frames: metrics.Counter
    stale_frames: metrics.Counter
    inference_ms: metrics.Histogram
    batch_size: metrics.Histogram
    model_failures: metrics.Counter
    dead_letters: metrics.Counter
    rule_evaluations: metrics.Counter
    violations: metrics.Counter
    sink_rows: metrics.Counter
    sink_flush_ms: metrics.Histogram
    sink_failures: metrics.Counter


_instruments: Instruments | None = None


def instruments() -> Instruments:
    """The process's instruments (created once, on whatever provider is installed then)."""
    global _instruments
    if _instruments is None:
        m = meter()
        _instruments = Instruments(
            frames=m.create_counter("aimass_frames", unit="1", description="frames detected, by camera and model"),
            stale_frames=m.create_counter("aimass_stale_frames", description="frames skipped: older than max_frame_age_s"),
            inference_ms=m.create_histogram("aimass_inference_duration", unit="ms",
                                            description="one model run on a batch, by model"),
            batch_size=m.create_histogram("aimass_batch_size", description="frames per model run, by model"),
            model_failures=m.create_counter("aimass_model_failures", description="model runs that raised, by model"),
            dead_letters=m.create_counter("aimass_dead_letters", description="input refused, by service and reason"),
            rule_evaluations=m.create_counter("aimass_rule_evaluations",
                                              description="detections and readings evaluated, by source kind"),
            violations=m.create_counter("aimass_violation_events", description="violation events, by rule type and event"),
            sink_rows=m.create_counter("aimass_sink_rows", description="rows inserted into ClickHouse, by table"),
            sink_flush_ms=m.create_histogram("aimass_sink_flush_duration", unit="ms",
                                             description="one ClickHouse insert (with its retries), by table"),
            sink_failures=m.create_counter("aimass_sink_insert_failures", description="failed inserts (retried), by table"),
        )
    return _instruments


def watch_lag(app) -> None:
    """``aimass_consumer_lag``: per assigned partition, the fetch high watermark minus the committed offset
    (from the worker's batch consumer, or the Faust monitor, which tracks both for Faust's consumer)."""
    def observe(options):
        own = getattr(app, "aimass_consumer", None)
        if own is not None:
            ends = {tp: own.highwater(tp) for tp in own.assignment()}
            committed = own.committed
        else:
            mon = app.monitor
            ends = dict(getattr(mon, "tp_end_offsets", None) or {})
            committed = dict(getattr(mon, "tp_committed_offsets", None) or {})
        for tp, end in ends.items():
            if end is None:
                continue
            done = committed.get(tp, 0)
            yield metrics.Observation(max(0, end - done), {"topic": tp.topic, "partition": tp.partition,
                                                            "group": app.conf.id})

    meter().create_observable_gauge("aimass_consumer_lag", callbacks=[observe],
                                    description="messages not yet committed, per partition (high watermark - committed)")
