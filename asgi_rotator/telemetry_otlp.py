"""OTLP/HTTP span export with a lean protobuf encoder, for ``asgi-rotator serve``.

The stock OTLP exporter builds one protobuf object per attribute, per value, per event and
per span, and each parent copies its children in again: profiled in the batch processor's
thread, that was ~220 µs of CPU for a plain request's two spans, more than the request
itself.  Here the ``ExportTraceServiceRequest`` bytes are written directly (the OTLP
protobuf wire format is small and stable), and an attribute that recurs with the same value
(operation, provider, model, route, ...) is encoded once and reused.

``LeanSpanExporter`` is the stock ``OTLPSpanExporter`` (endpoint, headers, TLS, gzip,
retries, timeouts are all its own) with only the encoding step replaced.  On an exporter
version whose internals differ, it falls back to the stock encoding.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import SpanKind

__all__ = ["LeanSpanExporter", "encode_spans"]

logger = logging.getLogger("asgi_rotator.telemetry")

_pack_fixed64 = struct.Struct("<Q").pack
_pack_double = struct.Struct("<d").pack
_pack_fixed32 = struct.Struct("<I").pack

# Span.kind enum values (opentelemetry/proto/trace/v1/trace.proto).
_KIND = {
    SpanKind.INTERNAL: 1,
    SpanKind.SERVER: 2,
    SpanKind.CLIENT: 3,
    SpanKind.PRODUCER: 4,
    SpanKind.CONSUMER: 5,
}
_FLAGS_HAS_IS_REMOTE = 0x100
_FLAGS_IS_REMOTE = 0x200
# Encoded attributes kept for reuse; past this many the table starts over, so that values
# which never recur (ids, timings) cannot grow it without bound.
_CACHE_MAX = 4096


def _varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,)) if value >= 0 else _varint(value + (1 << 64))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field; ``tag`` is ``(number << 3) | 2`` and below 128."""
    return bytes((tag,)) + _varint(len(payload)) + payload


def _any_value(value: Any) -> bytes:
    """The bytes of an ``AnyValue``."""
    if isinstance(value, str):
        return _field(0x0A, value.encode("utf-8", "replace"))
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + _pack_double(value)
    if isinstance(value, bytes):
        return _field(0x3A, value)
    if isinstance(value, Sequence):
        return _field(0x2A, b"".join(_field(0x0A, _any_value(v)) for v in value))
    if isinstance(value, Mapping):
        return _field(0x32, b"".join(_key_value(str(k), v) for k, v in value.items()))
    raise TypeError(f"cannot encode an attribute of type {type(value).__name__}")


def _key_value(key: str, value: Any) -> bytes:
    """A ``KeyValue`` as a repeated field's element (field 1 of ArrayValue/KeyValueList)."""
    return _field(0x0A, _field(0x0A, key.encode()) + _field(0x12, _any_value(value)))


class _Encoder:
    """Encodes span batches; holds the table of attributes already encoded."""

    def __init__(self) -> None:
        self._attributes: dict[tuple[int, str, type, Any], bytes] = {}

    def attributes(self, tag: int, attributes: Mapping[str, Any] | None) -> bytes:
        """Every attribute as a repeated ``KeyValue`` field numbered by ``tag``."""
        if not attributes:
            return b""
        table = self._attributes
        parts = []
        for key, value in attributes.items():
            # The field number and the type are part of the key: an event's attribute is
            # another field than a span's, and True == 1 but they encode differently.
            cache_key = (tag, key, type(value), value) if type(value) is not tuple else None
            encoded = table.get(cache_key) if cache_key is not None else None
            if encoded is None:
                try:
                    body = _field(0x0A, key.encode()) + _field(0x12, _any_value(value))
                except Exception:
                    logger.exception("telemetry: attribute %s not encoded", key)
                    continue
                encoded = _field(tag, body)
                if cache_key is not None:
                    if len(table) >= _CACHE_MAX:
                        table.clear()
                    table[cache_key] = encoded
            parts.append(encoded)
        return b"".join(parts)

    def span(self, span: ReadableSpan) -> bytes:
        context = span.get_span_context()
        assert context is not None
        parent = span.parent
        out = [
            b"\x0a\x10" + context.trace_id.to_bytes(16, "big"),
            b"\x12\x08" + context.span_id.to_bytes(8, "big"),
        ]
        state = context.trace_state
        if state:
            out.append(_field(0x1A, ",".join(f"{k}={v}" for k, v in state.items()).encode()))
        flags = _FLAGS_HAS_IS_REMOTE
        if parent is not None:
            out.append(b"\x22\x08" + parent.span_id.to_bytes(8, "big"))
            if parent.is_remote:
                flags |= _FLAGS_IS_REMOTE
        out.append(_field(0x2A, span.name.encode("utf-8", "replace")))
        out.append(b"\x30" + _varint(_KIND[span.kind]))
        out.append(b"\x39" + _pack_fixed64(span.start_time or 0))
        out.append(b"\x41" + _pack_fixed64(span.end_time or 0))
        out.append(self.attributes(0x4A, span.attributes))
        if span.dropped_attributes:
            out.append(b"\x50" + _varint(span.dropped_attributes))
        for event in span.events:
            body = (
                b"\x09"
                + _pack_fixed64(event.timestamp or 0)
                + _field(0x12, event.name.encode("utf-8", "replace"))
                + self.attributes(0x1A, event.attributes)
            )
            if event.dropped_attributes:
                body += b"\x20" + _varint(event.dropped_attributes)
            out.append(_field(0x5A, body))
        if span.dropped_events:
            out.append(b"\x60" + _varint(span.dropped_events))
        for link in span.links:
            body = (
                b"\x0a\x10"
                + link.context.trace_id.to_bytes(16, "big")
                + b"\x12\x08"
                + link.context.span_id.to_bytes(8, "big")
                + self.attributes(0x22, link.attributes)
            )
            if link.dropped_attributes:
                body += b"\x28" + _varint(link.dropped_attributes)
            link_flags = _FLAGS_HAS_IS_REMOTE | (_FLAGS_IS_REMOTE if link.context.is_remote else 0)
            out.append(_field(0x6A, body + b"\x35" + _pack_fixed32(link_flags)))
        if span.dropped_links:
            out.append(b"\x70" + _varint(span.dropped_links))
        status = span.status
        code = status.status_code.value
        body = _field(0x12, status.description.encode()) if status.description else b""
        if code:
            body += b"\x18" + _varint(code)
        out.append(_field(0x7A, body))
        out.append(b"\x85\x01" + _pack_fixed32(flags))  # field 16, fixed32
        return b"".join(out)

    def encode(self, spans: Sequence[ReadableSpan]) -> bytes:
        """An ``ExportTraceServiceRequest``: spans grouped by resource, then by scope."""
        # Grouped by identity: a provider's spans share its one Resource, and hashing a
        # Resource serialises its attributes to JSON each time.
        resources: dict[int, Any] = {}
        groups: dict[int, dict[Any, list[bytes]]] = {}
        for span in spans:
            resource = span.resource
            by_scope = groups.get(id(resource))
            if by_scope is None:
                resources[id(resource)] = resource
                by_scope = groups[id(resource)] = {}
            by_scope.setdefault(span.instrumentation_scope, []).append(
                _field(0x12, self.span(span))
            )
        out = []
        for key, by_scope in groups.items():
            resource = resources[key]
            body = [_field(0x0A, self.attributes(0x0A, resource.attributes))]
            for scope, encoded in by_scope.items():
                scope_body = b""
                schema = ""
                if scope is not None:
                    scope_body = _field(0x0A, scope.name.encode())
                    if scope.version:
                        scope_body += _field(0x12, scope.version.encode())
                    scope_body += self.attributes(0x1A, scope.attributes)
                    schema = scope.schema_url or ""
                scope_spans = _field(0x0A, scope_body) + b"".join(encoded)
                if schema:
                    scope_spans += _field(0x1A, schema.encode())
                body.append(_field(0x12, scope_spans))
            if resource.schema_url:
                body.append(_field(0x1A, resource.schema_url.encode()))
            out.append(_field(0x0A, b"".join(body)))
        return b"".join(out)


def encode_spans(spans: Sequence[ReadableSpan]) -> bytes:
    """``spans`` as the bytes of an OTLP ``ExportTraceServiceRequest`` (no reuse table)."""
    return _Encoder().encode(spans)


class LeanSpanExporter(OTLPSpanExporter):
    """``OTLPSpanExporter`` with the lean encoder (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._encoder = _Encoder()
        # The stock exporter's HTTP client (1.40+): it compresses, retries and times out.
        self._lean_client = getattr(self, "_client", None)
        if not callable(getattr(self._lean_client, "export", None)):
            self._lean_client = None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        client = self._lean_client
        if client is None or getattr(self, "_shutdown", False):
            return super().export(spans)
        try:
            data = self._encoder.encode(spans)
        except Exception:
            logger.exception("telemetry: span batch not encoded")
            return SpanExportResult.FAILURE
        result = client.export(data)
        return SpanExportResult.SUCCESS if result.success else SpanExportResult.FAILURE
