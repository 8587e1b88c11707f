"""A real OTLP/HTTP receiver on loopback: ``POST /v1/traces`` and ``POST /v1/metrics`` with
protobuf bodies (gzip included), decoded with ``opentelemetry-proto``.

Whatever a tracing test reads comes from the bytes this receiver was sent: ``raw`` keeps them
(decompressed) for the tests that look for secrets, ``spans()`` and ``metrics()`` decode them.
``mode`` makes it misbehave: ``"fail"`` answers 500, ``"hang"`` holds every request until the
receiver stops (or ``hang_for`` seconds pass).
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

KINDS = {1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}


@dataclass
class Span:
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    status: int
    start: int
    end: int
    schema_url: str
    resource: dict[str, Any] = field(default_factory=dict)


def value(any_value: AnyValue) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [value(v) for v in any_value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value(kv.value) for kv in any_value.kvlist_value.values}
    return getattr(any_value, kind) if kind else None


def attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: value(kv.value) for kv in pairs}


class Receiver:
    def __init__(self) -> None:
        self.raw: list[tuple[str, bytes]] = []  # (path, decompressed body)
        self.encodings: list[str] = []
        self.mode = "ok"
        self.hang_for = 30.0
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.url = ""
        self.since = 0

    def clear(self) -> None:
        """Forget what came so far, and any span that started before now: a batch
        processor may still be sending an earlier test's spans."""
        with self.lock:
            self.raw.clear()
            self.encodings.clear()
            self.since = time.time_ns()

    def all_bytes(self) -> bytes:
        with self.lock:
            return b"".join(body for _, body in self.raw)

    def spans(self) -> list[Span]:
        out: list[Span] = []
        with self.lock:
            bodies = [body for path, body in self.raw if path == "/v1/traces"]
        for body in bodies:
            request = ExportTraceServiceRequest.FromString(body)
            for resource_spans in request.resource_spans:
                resource = attributes(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        if span.start_time_unix_nano < self.since:
                            continue
                        out.append(
                            Span(
                                name=span.name,
                                kind=KINDS.get(span.kind, str(span.kind)),
                                trace_id=span.trace_id.hex(),
                                span_id=span.span_id.hex(),
                                parent_id=span.parent_span_id.hex(),
                                attributes=attributes(span.attributes),
                                events=[(e.name, attributes(e.attributes)) for e in span.events],
                                status=span.status.code,
                                start=span.start_time_unix_nano,
                                end=span.end_time_unix_nano,
                                schema_url=scope_spans.schema_url,
                                resource=resource,
                            )
                        )
        return out

    def metrics(self) -> dict[str, list[tuple[dict[str, Any], Any]]]:
        """Metric name -> (attributes, data point) for every point received."""
        out: dict[str, list[tuple[dict[str, Any], Any]]] = {}
        with self.lock:
            bodies = [body for path, body in self.raw if path == "/v1/metrics"]
        for body in bodies:
            request = ExportMetricsServiceRequest.FromString(body)
            for resource_metrics in request.resource_metrics:
                for scope_metrics in resource_metrics.scope_metrics:
                    for metric in scope_metrics.metrics:
                        data = getattr(metric, metric.WhichOneof("data"))
                        for point in data.data_points:
                            out.setdefault(metric.name, []).append(
                                (attributes(point.attributes), point)
                            )
        return out


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            encoding = self.headers.get("content-encoding", "")
            if encoding == "gzip":
                body = gzip.decompress(body)
            if receiver.mode == "hang":
                receiver.stopping.wait(receiver.hang_for)
            if receiver.mode == "fail":
                self.send_response(500)
                self.send_header("content-length", "0")
                self.end_headers()
                return
            if self.path not in ("/v1/traces", "/v1/metrics"):
                self.send_response(404)
                self.send_header("content-length", "0")
                self.end_headers()
                return
            with receiver.lock:
                receiver.raw.append((self.path, body))
                receiver.encodings.append(encoding)
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def receiving() -> Iterator[Receiver]:
    receiver = Receiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    server.daemon_threads = True
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield receiver
    finally:
        receiver.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def wait_for_spans(receiver: Receiver, predicate: Any, timeout: float = 10.0) -> list[Span]:
    deadline = time.monotonic() + timeout
    while True:
        spans = receiver.spans()
        if predicate(spans) or time.monotonic() > deadline:
            return spans
        time.sleep(0.02)
