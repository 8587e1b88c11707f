"""The lean OTLP span encoder (``asgi_rotator.telemetry_otlp``) writes the same
``ExportTraceServiceRequest`` as the exporter's stock encoder: both are decoded with
opentelemetry-proto and compared whole, for spans that use every part of the format."""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as stock_encode
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from asgi_rotator.telemetry_otlp import _Encoder, encode_spans

ATTRIBUTES: dict[str, Any] = {
    "text": "chat",
    "unicode": "héllo ✓",
    "empty": "",
    "true": True,
    "false": False,
    "one": 1,  # the same value as True, another type: must not share an encoding
    "negative": -42,
    "big": 2**62,
    "float": 0.25,
    "texts": ("stop", "length"),
    "ints": (1, 2, 3),
    "floats": (0.5, 1.5),
    "bools": (True, False),
    "long": "x" * 300,
}


def _spans() -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    spans: list[ReadableSpan] = []
    for service in ("gateway", "other"):
        provider = TracerProvider(
            resource=Resource.create({"service.name": service, "deployment": "test"}),
            span_limits=SpanLimits(max_attributes=12, max_events=3, max_links=1),
        )
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        plain = provider.get_tracer("plain")
        versioned = provider.get_tracer(
            "asgi_rotator", "1.2.3", schema_url="https://opentelemetry.io/schemas/1.41.0"
        )
        remote = SpanContext(
            trace_id=0x0123456789ABCDEF0123456789ABCDEF,
            span_id=0x1122334455667788,
            is_remote=True,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
            trace_state=TraceState([("vendor", "value"), ("other", "x")]),
        )
        parent = trace.set_span_in_context(trace.NonRecordingSpan(remote))
        # 14 attributes where the limit is 12: two are dropped, and counted.
        with versioned.start_as_current_span(
            "request", context=parent, kind=SpanKind.SERVER, attributes=ATTRIBUTES
        ) as request:
            request.add_event("protocol.parse", {"protocol": "openai_chat", "bytes": 89})
            request.add_event("bare")
            for n in range(4):  # one more than the limit: a dropped event
                request.add_event(f"extra{n}", ATTRIBUTES)
            with versioned.start_as_current_span(
                "chat bench",
                kind=SpanKind.CLIENT,
                links=[Link(remote), Link(remote, {"why": "retry", "n": 2})],  # the first dropped
            ) as attempt:
                attempt.set_attributes({"text": "chat", "one": 1, "true": True})
                attempt.set_status(Status(StatusCode.ERROR, "rate limited"))
        with plain.start_as_current_span("internal", kind=SpanKind.INTERNAL) as internal:
            internal.set_status(Status(StatusCode.OK))
        plain.start_span("producer", kind=SpanKind.PRODUCER).end()
        plain.start_span("consumer", kind=SpanKind.CONSUMER).end()
    spans.extend(exporter.get_finished_spans())
    return spans


def test_the_lean_encoding_decodes_to_the_stock_exporters_message() -> None:
    spans = _spans()
    ours = ExportTraceServiceRequest.FromString(encode_spans(spans))
    assert ours == stock_encode(spans)
    assert len(ours.resource_spans) == 2  # the test covers grouping, not one flat list
    encoded = [s for r in ours.resource_spans for ss in r.scope_spans for s in ss.spans]
    request = next(s for s in encoded if s.name == "request")
    attempt = next(s for s in encoded if s.name == "chat bench")
    assert request.dropped_events_count and request.dropped_attributes_count
    assert attempt.dropped_links_count and attempt.links[0].attributes


def test_reused_attribute_encodings_stay_in_their_own_field() -> None:
    # One encoder for many batches, as the exporter keeps it: an attribute already encoded
    # for a span is encoded again, not reused, when an event or a link carries it.
    encoder = _Encoder()
    spans = _spans()
    expected = stock_encode(spans)
    for _ in range(3):
        assert ExportTraceServiceRequest.FromString(encoder.encode(spans)) == expected
