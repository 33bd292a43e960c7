"""OpenTelemetry set-up and W3C trace context carried in Kafka headers.

Tracing is always on in-process (so every message gets a valid ``traceparent`` that links the stages),
but nothing is exported unless the standard ``OTEL_*`` variables ask for it: with no collector running
there is no error and no network traffic. Where a worker handles thousands of messages a second (rules,
sink), a span per message costs about as much as the work itself (~28 us), so the workers make their
per-message spans (the detector's three per frame included) only while ``recording()``, and otherwise
pass the trace context they received on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

log = logging.getLogger(__name__)

Headers = Sequence[tuple[str, bytes]]
_configured = False
_recording = False  # a span processor is installed: spans made here go somewhere


def setup(service_name: str) -> None:
    """Install the tracer provider once per process. Exports over OTLP only when
    OTEL_TRACES_EXPORTER=otlp or OTEL_EXPORTER_OTLP_ENDPOINT is set."""
    global _configured
    if _configured:
        return
    _configured = True
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "")
    wants_otlp = exporter == "otlp" or (exporter != "none" and (os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                                                                or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")))
    if wants_otlp:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            log.warning("OTEL_* asks for OTLP export but opentelemetry-exporter-otlp-proto-http is not installed; "
                        "traces stay in-process. Install it with `pip install opentelemetry-exporter-otlp-proto-http`.")
        else:
            add_span_processor(BatchSpanProcessor(OTLPSpanExporter()), provider)
    trace.set_tracer_provider(provider)


def add_span_processor(processor, provider: TracerProvider | None = None) -> None:
    """Send this process's spans to ``processor`` too (the OTLP exporter, a test's in-memory one)."""
    global _recording
    (provider or trace.get_tracer_provider()).add_span_processor(processor)
    _recording = True


def recording() -> bool:
    """Whether spans made in this process are exported anywhere."""
    return _recording


def tracer(name: str) -> trace.Tracer:
    """A tracer; installs the provider first if this process has not (without one, spans carry no
    ids and no ``traceparent`` would travel)."""
    if not _configured:
        setup(os.environ.get("OTEL_SERVICE_NAME", name.replace(".", "-")))
    return trace.get_tracer(name)


def inject(headers: list[tuple[str, bytes]] | None = None, ctx: context.Context | None = None) -> list[tuple[str, bytes]]:
    """Append the current (or given) span context to Kafka headers as W3C trace context."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=ctx)
    out = list(headers or [])
    out.extend((k, v.encode()) for k, v in carrier.items())
    return out


def extract(headers: Iterable[tuple[str, bytes]] | dict | None) -> context.Context:
    """The trace context from Kafka headers (a list of pairs, or Faust's dict form)."""
    if not headers:
        return context.Context()
    items = headers.items() if isinstance(headers, dict) else headers
    carrier = {}
    for k, v in items:
        key = k.decode() if isinstance(k, bytes) else k
        if key in TRACE_HEADERS:
            carrier[key] = v.decode("ascii", "replace") if isinstance(v, bytes) else str(v)
    return propagate.extract(carrier)


TRACE_HEADERS = ("traceparent", "tracestate")


def carried(headers: Iterable[tuple[str, bytes]] | dict | None) -> list[tuple[str, bytes]]:
    """The W3C trace-context headers among Kafka ``headers``, as they came: what a stage that makes no
    span of its own passes on. ~0.3 µs, where extracting the context and injecting it again takes ~8;
    a malformed one travels on as it is, and the first stage that reads it (``extract``) ignores it."""
    if not headers:
        return []
    items = headers.items() if isinstance(headers, dict) else headers
    return [(k.decode() if isinstance(k, bytes) else k, v if isinstance(v, bytes) else str(v).encode())
            for k, v in items if k in TRACE_HEADERS or (isinstance(k, bytes) and k.decode() in TRACE_HEADERS)]


def _ns(ms: float) -> int:
    return int(ms * 1_000_000)


def past_span(tracer: trace.Tracer, name: str, parent: context.Context | trace.Span | None, start_ms: float,
              end_ms: float, attributes: dict | None = None, links: Sequence[trace.Link] = ()) -> trace.Span:
    """Record a span for a stage that already happened, timed by the message's stamps (epoch ms): batch
    work is timed once and each frame gets its own span from those times. ``parent`` is a context
    (from Kafka headers) or a span. Returns the ended span, to parent the next stage on."""
    ctx = trace.set_span_in_context(parent) if isinstance(parent, trace.Span) else parent
    span = tracer.start_span(name, context=ctx, start_time=_ns(start_ms), attributes=attributes, links=list(links))
    span.end(end_time=_ns(max(end_ms, start_ms)))
    return span


def inject_span(span: trace.Span, headers: list[tuple[str, bytes]] | None = None) -> list[tuple[str, bytes]]:
    """Kafka headers carrying ``span`` as the parent of the next stage."""
    return inject(headers, trace.set_span_in_context(span))
