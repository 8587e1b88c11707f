"""Tracing alone, with hand-built scopes: around a foreign ASGI app, with hooks and apps that
fail, and the content helpers (redaction, caps).  The full stack, real exporters and the
official SDKs are in tests/e2e/test_tracing_e2e.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from asgi_rotator.exchange import RECORD
from asgi_rotator.middleware.tracing import Tracing
from asgi_rotator.middleware.tracing_content import capture_request, opaque, redact
from asgi_rotator.redaction import register_secret
from asgi_rotator.unified import Message, Reasoning, Request, Text

pytestmark = pytest.mark.anyio


@pytest.fixture
def exported() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def scope(
    path: str = "/anything", headers: list[tuple[bytes, bytes]] | None = None
) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "GET",
        "path": path,
        "root_path": "",
        "scheme": "http",
        "headers": headers or [],
        "query_string": b"",
    }


async def call(app: Any, request_scope: dict[str, Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(request_scope, receive, send)
    return sent


async def teapot(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 418, "headers": []})
    await send({"type": "http.response.body", "body": b"short and stout"})


def only(exporter: InMemorySpanExporter) -> ReadableSpan:
    (span,) = exporter.get_finished_spans()
    return span


async def test_around_a_foreign_app_it_gives_the_request_span(
    exported: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = exported
    request_scope = scope()
    sent = await call(Tracing(teapot, tracer_provider=provider), request_scope)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert request_scope[RECORD] is True  # the layers below would keep their passes
    span = only(exporter)
    assert span.kind is SpanKind.SERVER
    assert span.name == "GET"
    assert span.attributes is not None
    assert span.attributes["http.response.status_code"] == 418
    assert span.attributes["url.path"] == "/anything"


async def test_hooks_that_raise_break_nothing(
    exported: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = exported

    def broken(span: Any, scope: Any) -> None:
        raise RuntimeError("hook bug")

    app = Tracing(teapot, tracer_provider=provider, request_hook=broken, response_hook=broken)
    sent = await call(app, scope())
    assert sent[0]["status"] == 418
    assert only(exporter).attributes["http.response.status_code"] == 418  # type: ignore[index]


async def test_an_app_that_raises_ends_its_span_as_an_error(
    exported: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = exported

    async def crashes(scope: Any, receive: Any, send: Any) -> None:
        raise ValueError("inner bug")

    with pytest.raises(ValueError):
        await call(Tracing(crashes, tracer_provider=provider), scope())
    span = only(exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "ValueError"  # type: ignore[index]


async def test_non_http_scopes_pass_through_untraced(
    exported: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = exported
    seen: list[str] = []

    async def lifespan(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    await Tracing(lifespan, tracer_provider=provider)({"type": "lifespan"}, None, None)
    assert seen == ["lifespan"]
    assert not exporter.get_finished_spans()


async def test_a_clients_traceparent_is_continued_and_a_host_span_makes_it_internal(
    exported: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = exported
    traceparent = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    await call(
        Tracing(teapot, tracer_provider=provider), scope(headers=[(b"traceparent", traceparent)])
    )
    span = only(exporter)
    assert f"{span.context.trace_id:032x}" == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert span.parent is not None and f"{span.parent.span_id:016x}" == "00f067aa0ba902b7"
    exporter.clear()
    host = provider.get_tracer("host")
    with host.start_as_current_span("host request", kind=SpanKind.SERVER) as outer:
        await call(Tracing(teapot, tracer_provider=provider), scope())
    (ours,) = [s for s in exporter.get_finished_spans() if s.name != "host request"]
    assert ours.kind is SpanKind.INTERNAL
    assert ours.parent is not None and ours.parent.span_id == outer.get_span_context().span_id


def test_redact_removes_held_secrets_and_token_shapes() -> None:
    register_secret("canaryKey123456")
    text = "key canaryKey123456 and Bearer abc.def-ghi_12345 and sk-ant-api03-abcdefghijklmnop"
    out = redact(text)
    assert "canaryKey123456" not in out
    assert "abc.def-ghi_12345" not in out
    assert "sk-ant-api03" not in out
    assert out.count("[redacted]") == 3
    assert redact("a plain sentence") == "a plain sentence"


def test_opaque_payloads_become_length_and_hash() -> None:
    signature = "EqQBCgIYAhIM" * 20
    shown = opaque(signature)
    assert shown.startswith(f"[{len(signature)} chars sha256:")
    assert signature not in shown
    assert opaque(signature) == shown and opaque(signature + "x") != shown


def test_captured_messages_are_capped_and_signatures_hidden() -> None:
    request = Request(
        model="m",
        messages=[
            Message(role="user", content=[Text(text=f"message {i} " + "zqxSecretWord42 " * 500)])
            for i in range(20)
        ]
        + [
            Message(
                role="assistant",
                content=[Reasoning(text="thinking", signature="sig-" + "s" * 300, source="x")],
            )
        ],
    )
    attributes: dict[str, Any] = {}
    register_secret("zqxSecretWord42")
    capture_request(attributes, request, 8192)
    raw = attributes["gen_ai.input.messages"]
    assert len(raw.encode()) <= 8192
    messages = json.loads(raw)
    assert messages[0]["parts"][0]["content"].endswith("earlier items not captured]")
    last = messages[-1]["parts"][0]
    assert last["type"] == "reasoning"
    assert last["signature"].startswith("[304 chars sha256:")
    assert "zqxSecretWord42" not in raw  # a secret given to redact, however often it appears
