"""Tracing end to end: the whole stack behind a real uvicorn server, the official SDKs as
clients, the mock upstream behind its own server, and the spans and metrics exported over
OTLP/HTTP (gzip) into a real receiver on loopback.  Everything asserted about telemetry is
read from the bytes that receiver was sent."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anthropic
import httpx
import openai
import pytest

from asgi_rotator.config import parse_config
from asgi_rotator.middleware.tracing import SCHEMA_URL
from asgi_rotator.mock import Fault, MockUpstream
from asgi_rotator.stack import Gateway, build_app
from tests.e2e.conftest import provider_config
from tests.otlp_receiver import Receiver, Span, receiving, wait_for_spans
from tests.server import serve

# Canaries: neither shape matches a well-known key pattern, so only the gateway's knowledge
# of its own secrets can keep them out of the exported bytes.
PROVIDER_CANARY = "canaryProviderKey7f3a9c21"
INBOUND_CANARY = "canaryInboundKey51c2e8d4"


def tracing_config(mock_url: str, receiver_url: str, **tracing: Any) -> dict[str, Any]:
    providers = provider_config(mock_url)
    providers["up-chat"]["keys"] = [PROVIDER_CANARY]
    return {
        "providers": providers,
        "groups": {"fb": {"targets": ["up-chat/bad", "up-anthropic/good"]}},
        # One try per target: the fallback shows as exactly one attempt each.
        "cooldown": {"max_attempts": 1},
        "server": {"inbound_keys": [INBOUND_CANARY]},
        "tracing": {"endpoint": receiver_url, **tracing},
        # A price for the model that answers: its attempt, the request and the cost metric
        # carry what it cost; the refused attempt cost nothing.
        "prices": {"up-anthropic/good": {"input": 3.0, "output": 15.0}},
    }


ENV = {"OTEL_EXPORTER_OTLP_COMPRESSION": "gzip", "OTEL_METRIC_EXPORT_INTERVAL": "60000"}


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with receiving() as received:
        yield received


@pytest.fixture(scope="module", params=[False, True], ids=["capture-off", "capture-on"])
def traced(
    request: pytest.FixtureRequest,
    mock_server: tuple[MockUpstream, str],
    receiver: Receiver,
) -> Iterator[tuple[Gateway, str]]:
    config = parse_config(
        tracing_config(mock_server[1], receiver.url, capture_content=request.param), {}
    )
    gateway = build_app(config, environ=ENV)
    with serve(gateway) as url:
        yield gateway, url


@pytest.fixture
def gateway(traced: tuple[Gateway, str], receiver: Receiver, mock: MockUpstream) -> Gateway:
    receiver.clear()
    return traced[0]


@pytest.fixture
def url(traced: tuple[Gateway, str]) -> str:
    return traced[1]


def chat(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=INBOUND_CANARY, max_retries=0)


def flush(gateway: Gateway) -> None:
    telemetry = gateway.telemetry
    assert telemetry is not None
    # Spans first: the layer records a request's metrics before it ends its span, so once a
    # span is in, the metrics flushed after it include that request's.
    telemetry.tracer_provider.force_flush()
    telemetry.meter_provider.force_flush()


def collect(gateway: Gateway, receiver: Receiver, predicate: Any) -> list[Span]:
    """The spans once ``predicate`` holds, flushing as it waits: the client has its answer
    a moment before the layer has finished the request's spans."""

    def flushed(spans: list[Span]) -> bool:
        if predicate(spans):
            return True
        flush(gateway)
        return False

    return wait_for_spans(receiver, flushed)


def trace_of(spans: list[Span], request_id: str | None = None) -> tuple[Span, list[Span]]:
    """The request span (the only SERVER span of the trace) and its CLIENT spans in
    attempt order."""
    servers = [s for s in spans if s.kind == "SERVER"]
    if request_id is not None:
        servers = [s for s in servers if s.attributes.get("asgi_rotator.request_id") == request_id]
    assert len(servers) == 1, [s.name for s in servers]
    server = servers[0]
    clients = [s for s in spans if s.kind == "CLIENT" and s.trace_id == server.trace_id]
    return server, sorted(clients, key=lambda s: s.attributes["asgi_rotator.attempt"])


def test_fallback_after_429_gives_one_request_span_and_two_client_spans(
    gateway: Gateway, url: str, mock: MockUpstream, receiver: Receiver
) -> None:
    mock.add_fault(Fault(status=429, model="bad", times=None))
    with chat(url) as client:
        completion = client.chat.completions.create(
            model="fb", messages=[{"role": "user", "content": "hello there"}], max_tokens=50
        )
    spans = collect(gateway, receiver, lambda s: any(x.kind == "SERVER" for x in s))
    server, clients = trace_of(spans)
    assert receiver.encodings and set(receiver.encodings) == {"gzip"}
    assert server.name == "POST /v1/chat/completions"
    assert server.parent_id == ""
    assert server.schema_url == SCHEMA_URL
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["http.route"] == "/v1/chat/completions"
    assert server.attributes["gen_ai.request.model"] == "fb"
    assert server.attributes["gen_ai.operation.name"] == "chat"
    assert server.attributes["asgi_rotator.client_protocol"] == "openai_chat"
    assert server.resource["service.name"] == "asgi-rotator"

    assert [c.name for c in clients] == ["chat bad", "chat good"]
    assert all(c.parent_id == server.span_id for c in clients)
    first, second = clients
    assert first.attributes["asgi_rotator.attempt"] == 1
    assert first.attributes["asgi_rotator.provider"] == "up-chat"
    assert first.attributes["asgi_rotator.credential"] == "up-chat#0"
    assert first.attributes["gen_ai.provider.name"] == "openai"
    assert first.attributes["http.response.status_code"] == 429
    assert first.attributes["error.type"] == "rate_limited"
    assert first.status == 2  # ERROR
    assert "gen_ai.usage.input_tokens" not in first.attributes
    assert first.attributes["server.address"] == "127.0.0.1"
    assert first.attributes["gen_ai.request.max_tokens"] == 50

    assert second.attributes["asgi_rotator.attempt"] == 2
    assert second.attributes["asgi_rotator.previous_failure"] == "rate_limited"
    assert second.attributes["gen_ai.provider.name"] == "anthropic"
    assert second.attributes["asgi_rotator.translated"] is True
    assert second.attributes["gen_ai.request.model"] == "good"
    assert second.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert second.attributes["gen_ai.usage.input_tokens"] == completion.usage.prompt_tokens
    assert second.attributes["gen_ai.usage.output_tokens"] == completion.usage.completion_tokens
    assert "error.type" not in second.attributes
    assert first.end <= second.start
    expected = (
        completion.usage.prompt_tokens * 3.0 + completion.usage.completion_tokens * 15.0
    ) / 1e6
    assert first.attributes["asgi_rotator.cost_usd"] == 0.0
    assert second.attributes["asgi_rotator.cost_usd"] == pytest.approx(expected)
    assert server.attributes["asgi_rotator.cost_usd"] == pytest.approx(expected)

    metrics = receiver.metrics()
    usage = {
        (a["gen_ai.token.type"], a["asgi_rotator.provider"]): p.sum
        for a, p in metrics["gen_ai.client.token.usage"]
    }
    assert usage[("input", "up-anthropic")] >= completion.usage.prompt_tokens
    assert ("input", "up-chat") not in usage
    outcomes = {
        (a["asgi_rotator.outcome"], a.get("error.type"), a["gen_ai.request.model"])
        for a, _ in metrics["asgi_rotator.attempts"]
    }
    assert ("failure", "rate_limited", "_OTHER") in outcomes  # never answered: no label
    costs = {
        (a["asgi_rotator.provider"], a["gen_ai.request.model"]): p.as_double
        for a, p in metrics["asgi_rotator.cost"]
    }
    assert costs[("up-anthropic", "good")] >= expected
    assert ("up-chat", "_OTHER") not in costs  # a refused attempt adds no cost
    assert ("success", None, "good") in outcomes
    durations = metrics["gen_ai.client.operation.duration"]
    assert list(durations[0][1].explicit_bounds)[:3] == [0.01, 0.02, 0.04]

    # Transform passes are events on the span they belong to.
    server_events = dict(server.events)
    assert server_events["protocol.parse"]["asgi_rotator.protocol"] == "openai_chat"
    assert server_events["protocol.parse"]["asgi_rotator.bytes"] > 0
    # The step that failed over is an event; the one that answered is its attempt's span.
    steps = [attrs for name, attrs in server.events if name == "fallback.attempt"]
    assert [(a["asgi_rotator.target"], a["asgi_rotator.outcome"]) for a in steps] == [
        ("up-chat/bad", "rate_limited")
    ]
    # The plan is the request span's attributes, not an event; of the two closes, the
    # failed attempt's is an event and the completed answer's is said by its status.
    assert server.attributes["asgi_rotator.fallback.group"] == "fb"
    assert server.attributes["asgi_rotator.fallback.targets"] == [
        "up-chat/bad",
        "up-anthropic/good",
    ]
    assert "fallback.plan" not in server_events
    closes = [a for name, a in server.events if name == "stream_guard.close"]
    assert [(a["asgi_rotator.reason"], a["asgi_rotator.attempt"]) for a in closes] == [
        ("upstream_error", 1)
    ]
    # Each attempt's own passes are on its span: the request as sent, and the translation
    # of the answer on the translated one.
    assert [name for name, _ in first.events] == ["dispatch.request"]
    assert [name for name, _ in second.events] == [
        "dispatch.request",
        "dispatch.translate_response",
    ]
    request = dict(second.events)["dispatch.request"]
    assert request["asgi_rotator.translated"] is True
    assert request["asgi_rotator.protocol"] == "anthropic_messages"
    assert request["asgi_rotator.bytes"] > 0


def test_a_stream_gives_its_time_to_first_chunk_finish_and_close_reason(
    gateway: Gateway, url: str, receiver: Receiver
) -> None:
    with chat(url) as client:
        stream = client.chat.completions.create(
            model="up-chat/good",
            messages=[{"role": "user", "content": "stream this please"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    assert chunks
    spans = collect(gateway, receiver, lambda s: any(x.kind == "CLIENT" for x in s))
    server, (attempt,) = trace_of(spans)
    assert attempt.attributes["gen_ai.request.stream"] is True
    assert attempt.attributes["gen_ai.response.time_to_first_chunk"] > 0
    assert attempt.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert attempt.attributes["asgi_rotator.stream.close_reason"] == "completed"
    assert attempt.attributes["asgi_rotator.stream.events"] > 1
    assert attempt.attributes["asgi_rotator.stream.bytes"] > 0
    assert attempt.attributes["gen_ai.usage.output_tokens"] == chunks[-1].usage.completion_tokens
    assert server.attributes["asgi_rotator.stream.close_reason"] == "completed"
    metrics = receiver.metrics()
    assert metrics["gen_ai.client.operation.time_to_first_chunk"]
    closes = {a["asgi_rotator.close_reason"] for a, _ in metrics["asgi_rotator.stream.closes"]}
    assert closes == {"completed"}


def test_a_paced_stream_gives_the_time_per_output_chunk(receiver: Receiver) -> None:
    paced = MockUpstream(chunk_delay=0.02, stream_events=5)
    with serve(paced) as mock_url:
        config = parse_config(tracing_config(mock_url, receiver.url), {})
        gateway = build_app(config, environ=ENV)
        receiver.clear()
        with serve(gateway) as url, chat(url) as client:
            stream = client.chat.completions.create(
                model="up-chat/good", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            assert len([c for c in stream if c.choices and c.choices[0].delta.content]) == 5
            collect(gateway, receiver, lambda s: any(x.kind == "CLIENT" for x in s))
    # Cumulative: the last export holds every chunk so far.
    _labels, point = receiver.metrics()["gen_ai.client.operation.time_per_output_chunk"][-1]
    assert point.count == 1
    assert point.sum >= 0.01  # the mock paces its events 20 ms apart
    # The client chunk histograms share the duration buckets (semconv 1.41 gen-ai-metrics.md).
    assert list(point.explicit_bounds)[:3] == [0.01, 0.02, 0.04]


def test_a_client_that_disconnects_gives_client_disconnected(
    gateway: Gateway, url: str, mock: MockUpstream, receiver: Receiver
) -> None:
    mock.add_fault(Fault(stall_after=2, model="stalls"))
    with chat(url) as client:
        stream = client.chat.completions.create(
            model="up-chat/stalls",
            messages=[{"role": "user", "content": "one two three four five six"}],
            stream=True,
        )
        next(iter(stream))
        stream.close()

    def closed(spans: list[Span]) -> bool:
        flush(gateway)
        return any(
            s.attributes.get("asgi_rotator.stream.close_reason") == "client_disconnected"
            for s in spans
        )

    spans = wait_for_spans(receiver, closed)
    server, (attempt,) = trace_of(spans)
    assert server.attributes["asgi_rotator.stream.close_reason"] == "client_disconnected"
    assert attempt.attributes["asgi_rotator.stream.close_reason"] == "client_disconnected"
    assert attempt.attributes["gen_ai.response.time_to_first_chunk"] > 0


def test_the_upstream_request_carries_the_attempt_spans_traceparent(
    gateway: Gateway, url: str, mock: MockUpstream, receiver: Receiver
) -> None:
    with chat(url) as client:
        client.chat.completions.create(
            model="up-chat/good", messages=[{"role": "user", "content": "hi"}]
        )
    spans = collect(gateway, receiver, lambda s: any(x.kind == "CLIENT" for x in s))
    _server, (attempt,) = trace_of(spans)
    (sent,) = [r for r in mock.requests if r.protocol == "openai_chat"]
    version, trace_id, span_id, flags = sent.headers["traceparent"].split("-")
    assert (version, trace_id, span_id) == ("00", attempt.trace_id, attempt.span_id)
    assert int(flags, 16) & 1  # sampled


def test_a_plain_answer_in_the_clients_own_protocol_gives_its_finish_and_model(
    gateway: Gateway, url: str, receiver: Receiver
) -> None:
    # Passed on as its bytes: the span still reads its finish reason and model from the
    # answer's twin, which the tracing layer asks dispatch for.
    with chat(url) as client:
        answer = client.chat.completions.create(
            model="up-chat/good", messages=[{"role": "user", "content": "hi"}]
        )
    spans = collect(gateway, receiver, lambda s: any(x.kind == "CLIENT" for x in s))
    _server, (attempt,) = trace_of(spans)
    assert attempt.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert attempt.attributes["gen_ai.response.model"] == answer.model
    assert attempt.attributes["gen_ai.response.id"] == answer.id


def test_a_client_traceparent_is_continued(gateway: Gateway, url: str, receiver: Receiver) -> None:
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    with chat(url) as client:
        client.chat.completions.create(
            model="up-chat/good",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"traceparent": f"00-{trace_id}-{parent}-01"},
        )
    spans = collect(gateway, receiver, lambda s: any(x.kind == "CLIENT" for x in s))
    server, (attempt,) = trace_of(spans)
    assert server.trace_id == trace_id
    assert server.parent_id == parent
    assert attempt.trace_id == trace_id


def test_refusals_are_traced_too(gateway: Gateway, url: str, receiver: Receiver) -> None:
    with openai.OpenAI(base_url=f"{url}/v1", api_key="wrong-key", max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(
                model="up-chat/good", messages=[{"role": "user", "content": "hi"}]
            )
    spans = collect(gateway, receiver, lambda s: any(x.kind == "SERVER" for x in s))
    (server,) = [s for s in spans if s.kind == "SERVER"]
    assert server.attributes["http.response.status_code"] == 401
    assert server.attributes["error.type"] == "auth"
    assert not [s for s in spans if s.kind == "CLIENT"]


def test_no_secret_in_any_exported_byte(
    gateway: Gateway, url: str, mock: MockUpstream, receiver: Receiver
) -> None:
    # The provider key in the conversation (the mock echoes it back), and in an upstream
    # error message, which some providers do echo.
    mock.add_fault(Fault(status=400, message=f"bad key {PROVIDER_CANARY}", model="echo"))
    prompt = f"my keys are {PROVIDER_CANARY} and {INBOUND_CANARY}, Bearer abcdefgh12345678"
    with chat(url) as client:
        answer = client.chat.completions.create(
            model="up-chat/good", messages=[{"role": "user", "content": prompt}]
        )
        assert PROVIDER_CANARY in (answer.choices[0].message.content or "")
        stream = client.chat.completions.create(
            model="up-chat/good", messages=[{"role": "user", "content": prompt}], stream=True
        )
        list(stream)
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(
                model="up-chat/echo", messages=[{"role": "user", "content": prompt}]
            )
    collect(gateway, receiver, lambda s: len([x for x in s if x.kind == "SERVER"]) >= 3)
    exported = receiver.all_bytes()
    assert b"/v1/chat/completions" in exported  # the bytes are the telemetry, not nothing
    assert PROVIDER_CANARY.encode() not in exported
    assert INBOUND_CANARY.encode() not in exported
    assert b"abcdefgh12345678" not in exported


def test_captured_content_is_in_the_conventions_shape_with_signatures_redacted(
    traced: tuple[Gateway, str], gateway: Gateway, receiver: Receiver
) -> None:
    if not gateway.telemetry.capture_content:
        pytest.skip("content capture is off for this gateway")
    url = traced[1]
    with anthropic.Anthropic(base_url=url, api_key=INBOUND_CANARY, max_retries=0) as client:
        message = client.messages.create(
            model="up-anthropic/good",
            max_tokens=2048,
            system="Be brief.",
            thinking={"type": "enabled", "budget_tokens": 1024},
            messages=[{"role": "user", "content": "think about it"}],
        )
    signature = next(b.signature for b in message.content if b.type == "thinking")
    spans = collect(gateway, receiver, lambda s: any(x.kind == "CLIENT" for x in s))
    _server, (attempt,) = trace_of(spans)
    inputs = json.loads(attempt.attributes["gen_ai.input.messages"])
    assert inputs == [{"role": "user", "parts": [{"type": "text", "content": "think about it"}]}]
    system = json.loads(attempt.attributes["gen_ai.system_instructions"])
    assert system == [{"type": "text", "content": "Be brief."}]
    (output,) = json.loads(attempt.attributes["gen_ai.output.messages"])
    assert output["role"] == "assistant"
    assert output["finish_reason"] == "stop"
    kinds = [p["type"] for p in output["parts"]]
    assert kinds == ["reasoning", "text"]
    reasoning = output["parts"][0]
    assert reasoning["signature"].startswith(f"[{len(signature)} chars sha256:")
    assert signature.encode() not in receiver.all_bytes()


def test_capture_off_records_no_messages(
    traced: tuple[Gateway, str], gateway: Gateway, url: str, receiver: Receiver
) -> None:
    if gateway.telemetry.capture_content:
        pytest.skip("content capture is on for this gateway")
    with chat(url) as client:
        client.chat.completions.create(
            model="up-chat/good", messages=[{"role": "user", "content": "private words"}]
        )
    collect(gateway, receiver, lambda s: any(x.kind == "CLIENT" for x in s))
    assert b"private words" not in receiver.all_bytes()


@pytest.mark.parametrize("mode", ["hang", "fail"])
def test_an_exporter_that_hangs_or_fails_costs_no_request_an_error(
    mode: str, mock_server: tuple[MockUpstream, str]
) -> None:
    with receiving() as broken:
        broken.mode = mode
        broken.hang_for = 5.0
        config = parse_config(tracing_config(mock_server[1], broken.url), {})
        env = {
            **ENV,
            "OTEL_EXPORTER_OTLP_TIMEOUT": "1000",
            # Export all the time, so requests run while the exporter is stuck.
            "OTEL_METRIC_EXPORT_INTERVAL": "50",
        }
        gateway = build_app(config, environ=env)
        with serve(gateway) as url, chat(url) as client:
            started = time.monotonic()
            for i in range(6):
                answer = client.chat.completions.create(
                    model="up-chat/good", messages=[{"role": "user", "content": f"n{i}"}]
                )
                assert answer.choices[0].message.content
                stream = client.chat.completions.create(
                    model="up-chat/good",
                    messages=[{"role": "user", "content": f"n{i}"}],
                    stream=True,
                )
                assert list(stream)
            # Generous: a request that waited on the exporter would take a second or more.
            assert time.monotonic() - started < 5.0


def test_the_fastapi_hosts_span_is_the_parent(
    mock_server: tuple[MockUpstream, str], receiver: Receiver, mock: MockUpstream
) -> None:
    from fastapi import FastAPI
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from asgi_rotator.middleware.tracing import Tracing

    receiver.clear()
    host_provider = TracerProvider()
    host_provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{receiver.url}/v1/traces"))
    )
    config = parse_config({"providers": provider_config(mock_server[1])}, {})
    gateway = build_app(config, environ={})

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await gateway.aclose()  # a mounted app's lifespan does not run: close its clients

    host = FastAPI(lifespan=lifespan)

    @host.get("/hello")
    def hello() -> dict[str, str]:
        return {"hello": "world"}

    # The host's own provider, as a host that set up OpenTelemetry passes it (or sets it
    # globally, which the layer then uses by default).
    host.mount("/llm", Tracing(gateway, tracer_provider=host_provider))
    FastAPIInstrumentor.instrument_app(host, tracer_provider=host_provider)
    try:
        with serve(host) as url, chat(f"{url}/llm") as client:
            client.chat.completions.create(
                model="up-chat/good", messages=[{"role": "user", "content": "hi"}]
            )
        host_provider.force_flush()
        spans = wait_for_spans(receiver, lambda s: any(x.kind == "CLIENT" for x in s))
    finally:
        FastAPIInstrumentor.uninstrument_app(host)
        host_provider.shutdown()
    (host_span,) = [s for s in spans if s.kind == "SERVER"]
    (ours,) = [s for s in spans if s.attributes.get("asgi_rotator.request_id")]
    (attempt,) = [s for s in spans if s.kind == "CLIENT"]
    assert ours.kind == "INTERNAL"
    assert ours.parent_id == host_span.span_id
    assert attempt.parent_id == ours.span_id
    assert attempt.trace_id == host_span.trace_id


def test_semconv_opt_in_uses_the_newest_names(
    mock_server: tuple[MockUpstream, str], receiver: Receiver
) -> None:
    from asgi_rotator.middleware.tracing import SCHEMA_URL_LATEST

    receiver.clear()
    config = parse_config(tracing_config(mock_server[1], receiver.url), {})
    env = {**ENV, "OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental"}
    gateway = build_app(config, environ=env)
    with serve(gateway) as url, chat(url) as client:
        client.chat.completions.create(
            model="up-chat/good", messages=[{"role": "user", "content": "hi"}]
        )
    spans = wait_for_spans(receiver, lambda s: any(x.kind == "CLIENT" for x in s))
    assert {s.schema_url for s in spans} == {SCHEMA_URL_LATEST}


def test_a_request_outside_the_llm_routes_still_gets_its_span(
    gateway: Gateway, url: str, receiver: Receiver
) -> None:
    # Not a generation route: still one span, and its status.
    response = httpx.get(f"{url}/v1/nowhere", headers={"authorization": f"Bearer {INBOUND_CANARY}"})
    assert response.status_code == 404
    spans = collect(gateway, receiver, lambda s: any(x.kind == "SERVER" for x in s))
    (server,) = [s for s in spans if s.kind == "SERVER"]
    assert server.name == "GET"
    assert server.attributes["http.response.status_code"] == 404


def test_a_cooldown_wait_is_an_event_with_its_length(
    mock_server: tuple[MockUpstream, str], receiver: Receiver, mock: MockUpstream
) -> None:
    receiver.clear()
    settings = tracing_config(mock_server[1], receiver.url)
    settings["cooldown"] = {"max_attempts": 3}
    gateway = build_app(parse_config(settings, {}), environ=ENV)
    # One key: after its 429 the only way on is to wait out the retry-after.
    mock.add_fault(Fault(status=429, retry_after=0.3, model="waits", times=1))
    with serve(gateway) as url, chat(url) as client:
        client.chat.completions.create(
            model="up-chat/waits", messages=[{"role": "user", "content": "hi"}]
        )
        spans = collect(gateway, receiver, lambda s: any(x.kind == "SERVER" for x in s))
    server, clients = trace_of(spans)
    waits = [attrs for name, attrs in server.events if name == "cooldown.wait"]
    assert len(waits) == 1
    assert 0.1 <= waits[0]["asgi_rotator.seconds"] <= 0.3
    assert [c.attributes["asgi_rotator.attempt"] for c in clients] == [1, 2]
    assert clients[1].attributes["asgi_rotator.previous_failure"] == "rate_limited"
    assert clients[1].start - clients[0].end >= 0.1e9  # the wait sits between them
    cooldowns = receiver.metrics()["asgi_rotator.cooldowns"]
    assert {a["asgi_rotator.reason"] for a, _ in cooldowns} == {"rate_limited"}
