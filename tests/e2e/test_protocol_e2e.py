"""ProtocolNegotiation behind a real uvicorn server, driven by the official SDKs: bad input
becomes each SDK's own exception with the gateway's message, the upstream protocol follows
the client's, one port under a prefix serves all four SDKs, and failures from below (ours
or a foreign app's) arrive in the client's protocol."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anthropic
import anyio
import httpx
import openai
import pytest
from google.genai import errors as genai_errors
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Mount, Route

from asgi_rotator.config import parse_config
from asgi_rotator.exchange import EVENT, RECORD, SCOPE_KEY, Exchange
from asgi_rotator.middleware.protocol import ProtocolNegotiation
from asgi_rotator.mock import MockUpstream
from asgi_rotator.stack import Gateway, build_app
from asgi_rotator.unified import TextDelta
from tests.e2e.clients import DRIVERS
from tests.e2e.conftest import UPSTREAMS, provider_config, wait_for
from tests.server import serve

pytestmark = pytest.mark.slow

MAX_BODY = 64 * 1024


class Recorded:
    """Outermost: keeps each request's exchange so a test can read what the layers did."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.exchanges: list[Exchange] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        scope[RECORD] = True  # the layers keep their transform passes, for the tests to read
        try:
            await self.app(scope, receive, send)
        finally:
            if scope["type"] == "http" and SCOPE_KEY in scope:
                self.exchanges.append(scope[SCOPE_KEY])

    def asking(self, text: str) -> list[Exchange]:
        """The exchanges whose last message says ``text``: a request of an earlier test
        may still be finishing (dispatch drains a pooled upstream after the client has its
        answer) and land here after that test's ``clear()``."""
        found = []
        for exchange in self.exchanges:
            request = exchange.request
            if request is not None and request.messages and request.messages[-1].content:
                part = request.messages[-1].content[0]
                if getattr(part, "text", None) == text:
                    found.append(exchange)
        return found


class FailsAfterContent:
    """A layer that breaks after the first content reached the client (after commit)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def failing_send(message: Any) -> None:
            await send(message)
            if any(isinstance(e, TextDelta) for e in message.get(EVENT, ())):
                raise RuntimeError("a layer broke mid-stream")

        await self.app(scope, receive, failing_send)


def gateway_config(mock_url: str) -> dict[str, Any]:
    providers = provider_config(mock_url)
    providers["up-dual"] = {
        "protocols": ["openai_chat", "openai_responses"],
        "base_url": f"{mock_url}/v1",
        "keys": ["key-up-dual"],
        "models": ["model-d"],
    }
    return {
        "providers": providers,
        "groups": {"team": {"targets": ["up-chat/model-x", "up-anthropic/model-x"]}},
        "aliases": {"best": "team"},
    }


@contextlib.contextmanager
def running(gateway: Gateway, app: Any) -> Iterator[str]:
    try:
        with serve(app) as url:
            yield url
    finally:
        anyio.run(gateway.aclose)


@pytest.fixture(scope="module")
def stack(mock_server: tuple[MockUpstream, str]) -> Iterator[tuple[str, Recorded]]:
    """The default stack under ProtocolNegotiation, with a recorder above it."""
    gateway = build_app(parse_config(gateway_config(mock_server[1]), {}), environ={})
    recorded = Recorded(ProtocolNegotiation(gateway.app, max_body=MAX_BODY))
    with running(gateway, recorded) as url:
        yield url, recorded


@pytest.fixture(scope="module")
def breaking_stack(mock_server: tuple[MockUpstream, str]) -> Iterator[tuple[str, Recorded]]:
    gateway = build_app(parse_config(gateway_config(mock_server[1]), {}), environ={})
    recorded = Recorded(ProtocolNegotiation(FailsAfterContent(gateway.app)))
    with running(gateway, recorded) as url:
        yield url, recorded


@pytest.fixture(scope="module")
def mounted(mock_server: tuple[MockUpstream, str]) -> Iterator[str]:
    """A host Starlette app with its own route, and the gateway mounted at /llm."""
    gateway = build_app(parse_config(gateway_config(mock_server[1]), {}), environ={})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await gateway.aclose()  # a mounted app's own lifespan does not run

    async def hello(request: StarletteRequest) -> PlainTextResponse:
        return PlainTextResponse("host app")

    host = Starlette(
        routes=[Route("/hello", hello), Mount("/llm", app=ProtocolNegotiation(gateway.app))],
        lifespan=lifespan,
    )
    with serve(host) as url:
        yield url


def status_of(exc: BaseException) -> int:
    return exc.code if isinstance(exc, genai_errors.APIError) else exc.status_code  # type: ignore[attr-defined]


# --- bad input: each SDK's own exception, the gateway's message, nothing upstream ------------


def _bad_request(client: Any, protocol: str) -> None:
    sdk = client.client
    if protocol == "openai_chat":
        sdk.chat.completions.create(
            model="up-chat/model-x", messages=[{"role": "robot", "content": "hi"}]
        )
    elif protocol == "openai_responses":
        sdk.responses.create(
            model="up-responses/model-x",
            input=[{"type": "function_call_output", "call_id": "call_x", "output": "x"}],
        )
    elif protocol == "anthropic_messages":
        sdk.messages.create(
            model="up-anthropic/model-x",
            max_tokens=16,
            messages=[{"role": "robot", "content": "hi"}],
        )
    else:
        sdk.models.generate_content(
            model="up-gemini/model-x", contents=[{"role": "robot", "parts": [{"text": "hi"}]}]
        )


BAD_REQUEST = {
    "openai_chat": (openai.BadRequestError, "messages[0].role: unknown role 'robot'"),
    "openai_responses": (openai.BadRequestError, "input[0].call_id: no matching tool call"),
    "anthropic_messages": (anthropic.BadRequestError, "messages[0].role: unknown role 'robot'"),
    "gemini": (genai_errors.ClientError, "contents[0].role: unknown role 'robot'"),
}
NOT_FOUND = {
    "openai_chat": openai.NotFoundError,
    "openai_responses": openai.NotFoundError,
    "anthropic_messages": anthropic.NotFoundError,
    "gemini": genai_errors.ClientError,
}


@pytest.mark.parametrize("protocol", list(DRIVERS))
def test_sdks_raise_bad_request_with_the_gateways_message(
    stack: tuple[str, Recorded], mock: MockUpstream, protocol: str
) -> None:
    expected, message = BAD_REQUEST[protocol]
    with DRIVERS[protocol](stack[0]) as driver, pytest.raises(expected) as info:
        _bad_request(driver, protocol)
    assert status_of(info.value) == 400
    assert message in str(info.value)
    assert mock.requests == []  # nothing that failed validation reached a provider


@pytest.mark.parametrize("upstream", ["gemini", "anthropic_messages"])
def test_tool_arguments_nested_too_deeply_are_translated_like_invalid_ones(
    gateway_url: str, mock: MockUpstream, upstream: str
) -> None:
    # Arguments are text a model wrote: JSON nested deeper than the decoder goes is kept as
    # text for Gemini and dropped for Anthropic, as arguments that are not JSON are (it was
    # a 500 from the gateway itself).
    deep = "[" * 10_000 + "]" * 10_000
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": deep}}
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    with openai.OpenAI(base_url=f"{gateway_url}/v1", api_key="client", max_retries=0) as client:
        answer = client.chat.completions.create(
            model=f"{UPSTREAMS[upstream]}/model-x",
            messages=[
                {"role": "user", "content": "go"},
                {"role": "assistant", "content": None, "tool_calls": [call]},  # type: ignore[list-item]
                {"role": "tool", "tool_call_id": "call_1", "content": "done"},
            ],
            tools=[tool],  # type: ignore[list-item]
        )
    assert answer.choices[0].finish_reason in ("stop", "tool_calls")
    (request,) = mock.requests
    if upstream == "gemini":
        part = request.body["contents"][1]["parts"][0]
        assert part["functionCall"]["args"] == {"arguments": deep}
    else:
        block = request.body["messages"][1]["content"][0]
        assert block["type"] == "tool_use" and block["input"] == {}


@pytest.mark.parametrize("protocol", list(DRIVERS))
def test_sdks_raise_not_found_for_an_unknown_model_and_endpoint(
    stack: tuple[str, Recorded], mock: MockUpstream, protocol: str
) -> None:
    with DRIVERS[protocol](stack[0]) as driver:
        with pytest.raises(NOT_FOUND[protocol]) as unknown_model:
            driver.ask("nowhere-model")
        with pytest.raises(NOT_FOUND[protocol]) as unknown_endpoint:
            sdk = driver.client
            if protocol.startswith("openai"):
                sdk.embeddings.create(model="up-chat/model-x", input="hi")
            elif protocol == "anthropic_messages":
                sdk.messages.count_tokens(
                    model="up-anthropic/model-x", messages=[{"role": "user", "content": "hi"}]
                )
            else:
                sdk.models.count_tokens(model="up-gemini/model-x", contents="hi")
    assert status_of(unknown_model.value) == status_of(unknown_endpoint.value) == 404
    assert "'nowhere-model' is not configured" in str(unknown_model.value)
    assert "no endpoint POST" in str(unknown_endpoint.value)
    # Neither request reached a provider; the gateway may have asked the providers which
    # models they serve (discovery, once an hour), to know that none serves this one.
    assert {(r.method, r.path) for r in mock.requests} <= {("GET", "/v1/models")}


@pytest.mark.parametrize("protocol", list(DRIVERS))
def test_a_body_over_the_limit_is_refused_in_the_clients_protocol(
    stack: tuple[str, Recorded], mock: MockUpstream, protocol: str
) -> None:
    with DRIVERS[protocol](stack[0]) as driver, pytest.raises(Exception) as info:
        driver.ask(f"{UPSTREAMS[protocol]}/model-x", "word " * MAX_BODY)
    assert status_of(info.value) == 413
    assert f"exceeds the limit of {MAX_BODY} bytes" in str(info.value)
    assert mock.requests == []


@pytest.mark.parametrize(
    ("path", "protocol"),
    [
        ("/v1/chat/completions", "openai_chat"),
        ("/v1/responses", "openai_responses"),
        ("/v1/messages", "anthropic_messages"),
        ("/v1beta/models/up-gemini/model-x:generateContent", "gemini"),
    ],
)
def test_curl_style_requests(
    stack: tuple[str, Recorded], mock: MockUpstream, path: str, protocol: str
) -> None:
    """curl -d sends application/x-www-form-urlencoded: still read as JSON.  text/plain is
    refused with 415 (the unit tests cover the others and the error shapes)."""
    body = {
        "openai_chat": b'{"model": "up-chat/model-x", "messages": [{"role": "user", "content": "hi"}]}',
        "openai_responses": b'{"model": "up-chat/model-x", "input": "hi"}',
        "anthropic_messages": b'{"model": "up-chat/model-x", "max_tokens": 9,'
        b' "messages": [{"role": "user", "content": "hi"}]}',
        "gemini": b'{"contents": [{"parts": [{"text": "hi"}]}]}',
    }[protocol]
    with httpx.Client(base_url=stack[0]) as client:
        form = client.post(
            path, content=body, headers={"content-type": "application/x-www-form-urlencoded"}
        )
        text = client.post(path, content=body, headers={"content-type": "text/plain"})
    assert form.status_code == 200, form.text
    assert text.status_code == 415
    assert "application/json" in text.text and len(mock.requests) == 1


# --- negotiation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("protocol", "upstream"),
    [
        ("openai_responses", "openai_responses"),  # spoken by the provider: no translation
        ("openai_chat", "openai_chat"),
        ("anthropic_messages", "openai_chat"),  # not spoken: the provider's preferred one
        ("gemini", "openai_chat"),
    ],
)
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_the_upstream_protocol_follows_the_clients(
    stack: tuple[str, Recorded], mock: MockUpstream, protocol: str, upstream: str, stream: bool
) -> None:
    url, recorded = stack
    recorded.exchanges.clear()
    text = f"Hello there, {protocol} to {upstream}, stream={stream}"
    with DRIVERS[protocol](url) as driver:
        result = driver.ask("up-dual/model-d", text, stream=stream)
    assert f"You said: {text}" in result.text
    (request,) = mock.requests
    assert request.protocol == upstream and request.key == "key-up-dual"
    assert request.path.endswith("/responses" if upstream == "openai_responses" else "/completions")
    (exchange,) = wait_for(lambda: recorded.asking(text))
    assert exchange.protocol == protocol and exchange.current.upstream_protocol == upstream
    sent = [p for p in exchange.passes if p.name == "dispatch.request"]
    assert [(p.data["protocol"], p.data["translated"]) for p in sent] == [
        (upstream, upstream != protocol)
    ]
    assert [p.name for p in exchange.passes[:2]] == ["protocol.detect", "protocol.parse"]
    assert not any(p.name in ("parse", "dispatch.parse") for p in exchange.passes)


# --- one port, any prefix, all four SDKs -----------------------------------------------------


@pytest.mark.parametrize("protocol", list(DRIVERS))
def test_one_port_under_a_prefix_serves_all_four_sdks(
    mounted: str, mock: MockUpstream, protocol: str
) -> None:
    with DRIVERS[protocol](f"{mounted}/llm") as driver:
        for upstream, stream in itertools.product(UPSTREAMS.values(), (False, True)):
            result = driver.ask(f"{upstream}/model-x", "Hello there", stream=stream)
            assert "You said: Hello there" in result.text, (upstream, stream)
    assert len(mock.requests) == 8
    assert httpx.get(f"{mounted}/hello").text == "host app"


LISTED = {"up-dual/model-d", "model-d", "team", "best"}


@pytest.mark.parametrize("protocol", list(DRIVERS))
def test_each_sdk_lists_the_models_in_its_own_shape(mounted: str, protocol: str) -> None:
    with DRIVERS[protocol](f"{mounted}/llm") as driver:
        if protocol == "gemini":
            names = {m.name for m in driver.client.models.list()}
            assert {f"models/{m}" for m in LISTED} <= names
        else:
            ids = {m.id for m in driver.client.models.list()}
            assert ids >= LISTED


# --- failures from below ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("protocol", "upstream"),
    [
        pytest.param(c, u, id=f"{c}->{u}")
        for c in DRIVERS
        for u in dict.fromkeys((c, "openai_chat"))  # passthrough, and translated
    ],
)
def test_a_failure_after_commit_reaches_the_sdk_as_its_stream_error(
    breaking_stack: tuple[str, Recorded],
    mock: MockUpstream,
    protocol: str,
    upstream: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, recorded = breaking_stack
    recorded.exchanges.clear()
    # Paced like a real model: events that arrive in one read go out in one message, and
    # the layer must break between the first content and the end, not after the end.
    monkeypatch.setattr(mock, "chunk_delay", 0.02)
    text = f"Hello there, {protocol} to {upstream}"
    with DRIVERS[protocol](url) as driver, pytest.raises(Exception) as info:
        driver.ask(f"{UPSTREAMS[upstream]}/model-x", text, stream=True)
    # The SDK's own API error, not a parse failure or a complaint about the stream's shape.
    assert isinstance(info.value, (openai.APIError, anthropic.APIError, genai_errors.APIError)), (
        repr(info.value)
    )
    assert "internal gateway error" in str(info.value)
    assert "a layer broke" not in str(info.value)
    (exchange,) = wait_for(lambda: recorded.asking(text))
    (failed,) = [p.data for p in exchange.passes if p.name == "protocol.error"]
    assert failed["committed"] is True  # in-band, after a 200 and some content


def test_alone_around_a_foreign_app(mock: MockUpstream) -> None:
    """A plain Starlette app stands in for the layers below; what it answers badly (a bare
    500, FastAPI-style JSON errors) reaches each SDK in its own protocol."""

    async def chat(request: StarletteRequest) -> Any:
        exchange = request.scope[SCOPE_KEY]  # parsed once, above
        text = exchange.request.messages[-1].content[0].text
        if text == "crash":
            raise RuntimeError("secret internal detail")
        if text == "busy":
            return JSONResponse({"detail": "backend is busy"}, status_code=503)
        return JSONResponse(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 0,
                "model": exchange.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": f"echo: {text}"},
                        "finish_reason": "stop",
                    }
                ],
            }
        )

    foreign = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
    with (
        serve(ProtocolNegotiation(foreign), lifespan="off") as url,
        openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0) as client,
    ):

        def ask(text: str) -> Any:
            return client.chat.completions.create(
                model="any", messages=[{"role": "user", "content": text}]
            )

        assert ask("hi").choices[0].message.content == "echo: hi"
        with pytest.raises(openai.InternalServerError) as crashed:
            ask("crash")
        assert crashed.value.body["message"] == "Internal Server Error (HTTP 500)"  # type: ignore[index]
        assert "secret" not in crashed.value.response.text
        with pytest.raises(openai.InternalServerError) as busy:
            ask("busy")
        assert busy.value.status_code == 503 and "backend is busy" in str(busy.value)
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="any", messages=[{"role": "x", "content": "y"}])  # type: ignore[misc, list-item]
