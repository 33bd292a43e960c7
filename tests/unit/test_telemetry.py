"""Trace context in Kafka headers (aimass.telemetry)."""

from opentelemetry import trace

from aimass import telemetry

PARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_carried_keeps_the_trace_headers_as_they_came_and_nothing_else():
    headers = [("traceparent", PARENT), ("aimass-reason", b"x"), ("tracestate", b"k=v")]
    assert telemetry.carried(headers) == [("traceparent", PARENT), ("tracestate", b"k=v")]
    # Faust's dict form, with keys as bytes or str; none at all.
    assert telemetry.carried({b"traceparent": PARENT, "other": b"y"}) == [("traceparent", PARENT)]
    assert telemetry.carried(None) == [] and telemetry.carried([]) == []


def test_carried_passes_on_what_extract_and_inject_would_write():
    # The stage that makes no span passes the same header the slower round trip would have written.
    again = dict(telemetry.inject(ctx=telemetry.extract([("traceparent", PARENT)])))
    assert again == dict(telemetry.carried([("traceparent", PARENT)])) == {"traceparent": PARENT}
    # A malformed one travels on unread; the next stage's extract ignores it (a fresh root there).
    bad = [("traceparent", b"00-not-a-trace")]
    assert telemetry.carried(bad) == bad
    assert not trace.get_current_span(telemetry.extract(bad)).get_span_context().is_valid
