"""ResponsesState with a hand-built scope, a recording send and a fake provider app.

The fake app plays dispatch's part: it answers from a unified ``Response`` it is given,
rendered for the Responses client by the real codec (plain body with its ``RESPONSE`` twin,
or one body message per group of events with its ``EVENT`` twin), and it records what it
received both from the exchange and from the body it was replayed (as a foreign app would
read it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from asgi_rotator.answer import send_error
from asgi_rotator.config import parse_config
from asgi_rotator.errors import GatewayError
from asgi_rotator.exchange import EVENT, RECORD, RESPONSE, SCOPE_KEY, Attempt, Exchange
from asgi_rotator.middleware.auth import PRINCIPAL
from asgi_rotator.middleware.responses import RESPONSE_ID, ResponsesState
from asgi_rotator.protocols import get_codec
from asgi_rotator.providers import Providers
from asgi_rotator.sse import SSEDecoder
from asgi_rotator.state import MemoryStore
from asgi_rotator.unified import (
    BlockStop,
    Error,
    Event,
    Finish,
    Message,
    MessageStart,
    Reasoning,
    Request,
    Response,
    Text,
    TextDelta,
    ToolCall,
    ToolResult,
    Usage,
)

pytestmark = pytest.mark.anyio

CODEC = get_codec("openai_responses")
encode = msgspec.json.Encoder().encode


# --- the fake provider ---------------------------------------------------------------------------


class Provider:
    """An inner app answering each call with the next reply (a ``Response`` or event groups)."""

    def __init__(self, *replies: Response | list[list[Event]], provider: str = "up") -> None:
        self.replies = list(replies)
        self.provider = provider
        self.protocol = "openai_responses"
        self.requests: list[Request] = []
        self.bodies: list[Any] = []
        self.calls = 0
        self.refuse_previous = False
        self.heartbeats = False  # a comment between events, as StreamGuard sends (no twin)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            self.calls += 1
            return
        body = (await receive())["body"]  # what a foreign app would read
        self.bodies.append(json.loads(body) if body else None)
        self.calls += 1
        exchange: Exchange | None = scope.get(SCOPE_KEY)
        if exchange is None:  # a route the layer left alone
            await send(start())
            await send({"type": "http.response.body", "body": b"{}"})
            return
        request = exchange.request
        assert request is not None
        self.requests.append(msgspec.structs.replace(request))
        if self.refuse_previous and request.previous_response_id is not None:
            await send_error(
                send, "openai_responses", GatewayError("not_found", "no such response")
            )
            return
        exchange.attempts.append(
            Attempt(
                number=len(exchange.attempts) + 1,
                provider=self.provider,
                model="m",
                protocol=self.protocol,
            )
        )
        reply = self.replies.pop(0)
        if isinstance(reply, Response):
            raw = encode(CODEC.build_response(reply, request))
            await send(start())
            await send({"type": "http.response.body", "body": raw, RESPONSE: reply})
            return
        encoder = CODEC.stream_encoder(request)
        await send(start(sse=True))
        for group in reply:
            if self.heartbeats:
                await send({"type": "http.response.body", "body": b":\n\n", "more_body": True})
            raw = b"".join(encoder.encode(e) for e in group)
            await send({"type": "http.response.body", "body": raw, "more_body": True, EVENT: group})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def start(*, sse: bool = False, status: int = 200) -> dict[str, Any]:
    kind = b"text/event-stream" if sse else b"application/json"
    return {"type": "http.response.start", "status": status, "headers": [(b"content-type", kind)]}


def text_reply(text: str, *, upstream_id: str = "up_1", origin: str | None = None) -> Response:
    return Response(
        id=upstream_id,
        model="m",
        content=[Text(text=text)],
        usage=Usage(input_tokens=3, output_tokens=2),
        created=1700000000,
        origin=origin,
    )


def text_stream(
    text: str, *, upstream_id: str = "up_s", end: Event | None = None
) -> list[list[Event]]:
    groups: list[list[Event]] = [
        [MessageStart(id=upstream_id, model="m", created=1700000000)],
        [TextDelta(index=0, text=text[: len(text) // 2])],
        [TextDelta(index=0, text=text[len(text) // 2 :])],
    ]
    if end is not None:
        groups.append([BlockStop(index=0), end])
    return groups


# --- calling the layer ---------------------------------------------------------------------------


class Answer:
    def __init__(self, messages: list[dict[str, Any]], scope: dict[str, Any]) -> None:
        self.messages = messages
        self.scope = scope
        starts = [m for m in messages if m["type"] == "http.response.start"]
        self.status = starts[0]["status"] if starts else None
        self.headers = dict(starts[0]["headers"]) if starts else {}
        self.raw = b"".join(
            m.get("body", b"") for m in messages if m["type"] == "http.response.body"
        )

    @property
    def json(self) -> Any:
        return json.loads(self.raw)

    def events(self) -> list[dict[str, Any]]:
        decoder = SSEDecoder()
        return [json.loads(e.data) for e in decoder.feed(self.raw) + decoder.close()]

    @property
    def exchange(self) -> Exchange:
        return self.scope[SCOPE_KEY]  # type: ignore[no-any-return]

    def passes(self) -> list[str]:
        return [p.name for p in self.exchange.passes]


async def call(
    app: Any,
    method: str,
    path: str,
    body: Any = None,
    *,
    principal: str | None = None,
    query: bytes = b"",
    on_send: Callable[[dict[str, Any]], Any] | None = None,
) -> Answer:
    scope: dict[str, Any] = {
        "type": "http",
        "method": method,
        "path": path,
        "root_path": "",
        "query_string": query,
        "headers": [(b"content-type", b"application/json")],
        RECORD: True,  # the tests read the exchange's transform passes
    }
    if principal is not None:
        scope[PRINCIPAL] = principal
    raw = json.dumps(body).encode() if body is not None else b""
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": raw, "more_body": False}
        return {"type": "http.disconnect"}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        if on_send is not None:
            await on_send(message)
        sent.append(message)

    await app(scope, receive, send)
    return Answer(sent, scope)


async def create(app: Any, text: Any = "Hello", **fields: Any) -> Answer:
    principal = fields.pop("principal", None)
    body = {"model": fields.pop("model", "up/m"), "input": text, **fields}
    return await call(app, "POST", "/v1/responses", body, principal=principal)


def texts(messages: list[Message]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for message in messages:
        for part in message.content:
            if isinstance(part, Text):
                out.append((message.role, part.text))
    return out


# --- plain responses -----------------------------------------------------------------------------


@pytest.mark.parametrize("origin", ["openai_responses", "anthropic_messages"])
async def test_plain_response_gets_our_id_and_is_stored(origin: str) -> None:
    provider = Provider(text_reply("Hi there", origin=origin))
    app = ResponsesState(provider)
    answer = await create(app)
    body = answer.json
    assert answer.status == 200
    assert RESPONSE_ID.fullmatch(body["id"]) and body["id"] != "up_1"
    assert int(answer.headers[b"content-length"]) == len(answer.raw)
    twin = answer.messages[-1][RESPONSE]
    assert twin.id == body["id"]  # bytes and twin agree
    assert answer.exchange.response_id == body["id"]
    assert "responses.store" in answer.passes()

    got = await call(app, "GET", f"/v1/responses/{body['id']}")
    assert got.status == 200 and got.json == body


async def test_lifespan_and_other_routes_pass_through() -> None:
    provider = Provider(text_reply("x"))
    store = MemoryStore()
    app = ResponsesState(provider, store=store)
    await app({"type": "lifespan"}, None, None)  # type: ignore[arg-type]
    assert provider.calls == 1
    answer = await call(app, "POST", "/v1/chat/completions", {"model": "up/m", "messages": []})
    assert provider.calls == 2 and answer.status == 200
    assert SCOPE_KEY not in answer.scope  # not even parsed
    assert await store.size() == 0


async def test_store_false_passes_through_and_leaves_nothing() -> None:
    store = MemoryStore()
    app = ResponsesState(Provider(text_reply("x")), store=store)
    answer = await create(app, store=False)
    assert answer.json["id"] == "up_1"  # untouched: nobody can continue from it anyway
    assert await store.size() == 0
    assert "responses.skip" in answer.passes()


async def test_write_failure_still_answers() -> None:
    class Broken(MemoryStore):
        async def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
            raise OSError("disk full")

    app = ResponsesState(Provider(text_reply("x")), store=Broken())
    answer = await create(app)
    assert answer.status == 200 and RESPONSE_ID.fullmatch(answer.json["id"])
    assert "responses.store_failed" in answer.passes()


async def test_unreadable_store_is_a_server_error_in_the_clients_shape() -> None:
    class Down(MemoryStore):
        async def get(self, key: str) -> bytes | None:
            raise ConnectionError("store down")

    provider = Provider(text_reply("x"))
    app = ResponsesState(provider, store=Down())
    got = await call(app, "GET", "/v1/responses/resp_" + "a" * 48)
    assert got.status == 500 and got.json["error"]["type"] == "server_error"
    refused = await create(app, "x", previous_response_id="resp_" + "a" * 48)
    assert refused.status == 500 and provider.calls == 0


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b'{"status": "completed", "body": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"],
)
async def test_a_stored_entry_that_cannot_be_read_is_answered_as_absent(raw: bytes) -> None:
    class Garbled(MemoryStore):
        async def get(self, key: str) -> bytes | None:
            return raw

    rid = "resp_" + "a" * 48
    provider = Provider(text_reply("x"))
    app = ResponsesState(provider, store=Garbled())
    for path in (rid, f"{rid}/input_items"):
        got = await call(app, "GET", f"/v1/responses/{path}")
        assert got.status == 404
        assert got.json["error"]["message"] == f"Response with id '{rid}' not found."
    refused = await create(app, "x", previous_response_id=rid)
    assert refused.status == 400 and provider.calls == 0
    assert refused.json["error"]["param"] == "previous_response_id"


async def test_foreign_app_without_twins_is_passed_on_untouched() -> None:
    async def foreign(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send(start())
        await send({"type": "http.response.body", "body": b'{"id": "theirs"}'})

    store = MemoryStore()
    answer = await create(ResponsesState(foreign, store=store))
    assert answer.json == {"id": "theirs"}
    assert await store.size() == 0
    assert "responses.untracked" in answer.passes()


# --- continuation --------------------------------------------------------------------------------


async def test_continuation_expands_history_into_request_and_body() -> None:
    provider = Provider(text_reply("First answer"), text_reply("Second answer", upstream_id="up_2"))
    app = ResponsesState(provider)
    first = (await create(app, "one")).json
    second = await create(
        app, [{"role": "user", "content": "two"}], previous_response_id=first["id"]
    )
    assert second.status == 200
    assert second.json["previous_response_id"] == first["id"]
    request = provider.requests[1]
    assert request.previous_response_id is None
    assert texts(request.messages) == [
        ("user", "one"),
        ("assistant", "First answer"),
        ("user", "two"),
    ]
    # A foreign app below reads the body: it carries the whole conversation too.
    replayed = provider.bodies[1]
    assert "previous_response_id" not in replayed
    assert [i.get("content") for i in replayed["input"]] == ["one", "First answer", "two"]
    assert "responses.expand" in second.passes()


async def test_instructions_are_not_carried_over() -> None:
    provider = Provider(text_reply("Arr"), text_reply("Ok"))
    app = ResponsesState(provider)
    first = (await create(app, "one", instructions="Talk like a pirate")).json
    await create(app, "two", instructions="Be brief", previous_response_id=first["id"])
    assert [t.text for t in provider.requests[1].system] == ["Be brief"]


async def test_earlier_developer_items_travel_with_the_instructions() -> None:
    provider = Provider(text_reply("a"), text_reply("b"))
    app = ResponsesState(provider)
    first_input = [
        {"role": "developer", "content": "Use metric units"},
        {"role": "user", "content": "one"},
    ]
    first = (await create(app, first_input)).json
    await create(app, "two", instructions="Be brief", previous_response_id=first["id"])
    assert [t.text for t in provider.requests[1].system] == ["Use metric units", "Be brief"]
    assert provider.bodies[1]["instructions"] == "Use metric units\n\nBe brief"


async def test_function_call_output_is_paired_with_its_call() -> None:
    call = Response(
        id="up_1",
        model="m",
        content=[ToolCall(id="call_7", name="get_weather", arguments='{"location":"Paris"}')],
        finish_reason="tool_calls",
    )
    provider = Provider(call, text_reply("Sunny"))
    app = ResponsesState(provider)
    first = (await create(app, "Weather?")).json
    assert first["output"][0]["call_id"] == "call_7"
    output = [{"type": "function_call_output", "call_id": "call_7", "output": "sunny"}]
    await create(app, output, previous_response_id=first["id"])
    messages = provider.requests[1].messages
    assert [m.role for m in messages] == ["user", "assistant", "tool"]
    (tool_call,) = messages[1].content
    (result,) = messages[2].content
    assert isinstance(tool_call, ToolCall) and isinstance(result, ToolResult)
    assert result.tool_call_id == tool_call.id == "call_7"
    assert result.name == "get_weather"  # Gemini matches results by name


async def test_foreign_reasoning_payloads_survive_and_foreign_extras_do_not() -> None:
    thinking = Reasoning(text="Let me think", signature="sig-1", source="anthropic_messages")
    answer = Text(text="42", extra={"citations": None})
    reply = Response(id="msg_1", model="m", content=[thinking, answer], origin="anthropic_messages")
    provider = Provider(reply, text_reply("ok"))
    app = ResponsesState(provider)
    first = (await create(app, "q")).json
    await create(app, "more", previous_response_id=first["id"])
    reasoning, text = provider.requests[1].messages[1].content
    assert isinstance(reasoning, Reasoning) and reasoning.signature == "sig-1"
    assert reasoning.source == "anthropic_messages"
    assert isinstance(text, Text) and text.extra == {}


async def test_own_protocol_output_is_replayed_without_provider_references() -> None:
    # Another key (organisation) or provider may serve the next turn: item ids and
    # id-only reasoning would be unknown there; encrypted reasoning travels.
    reply = CODEC.parse_response(
        {
            "id": "resp_up",
            "object": "response",
            "model": "m",
            "status": "completed",
            "output": [
                {"id": "rs_ref", "type": "reasoning", "summary": []},
                {"id": "rs_enc", "type": "reasoning", "summary": [], "encrypted_content": "e"},
                {
                    "id": "msg_up1",
                    "type": "message",
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "Hi", "annotations": []}],
                },
            ],
        }
    )
    provider = Provider(reply, text_reply("ok"))
    app = ResponsesState(provider)
    first = (await create(app, "q")).json
    await create(app, "more", previous_response_id=first["id"])
    replayed = provider.bodies[1]["input"]
    assert replayed[1] == {
        "type": "reasoning",
        "id": "rs_enc",
        "summary": [],
        "encrypted_content": "e",
    }
    assert replayed[2] == {"role": "assistant", "content": "Hi"}
    assert len(replayed) == 4


@pytest.mark.parametrize(
    ("previous", "code"),
    [
        ("resp_" + "0" * 48, "previous_response_not_found"),
        ("resp_../../etc", "invalid_value"),
        ("up_1", "invalid_value"),
    ],
)
async def test_unknown_or_malformed_previous_id_is_a_400(previous: str, code: str) -> None:
    provider = Provider(text_reply("x"))
    answer = await create(ResponsesState(provider), "two", previous_response_id=previous)
    assert answer.status == 400
    error = answer.json["error"]
    assert error["code"] == code and error["param"] == "previous_response_id"
    assert error["type"] == "invalid_request_error"
    assert provider.calls == 0


async def test_depth_limit_is_a_clear_400() -> None:
    provider = Provider(*(text_reply(f"r{i}") for i in range(3)))
    app = ResponsesState(provider, max_depth=2)
    previous = None
    for i in range(3):
        answer = await create(app, f"t{i}", previous_response_id=previous)
        previous = answer.json["id"]
    answer = await create(app, "t3", previous_response_id=previous)
    assert answer.status == 400
    error = answer.json["error"]
    assert "at most 2" in error["message"] and "max_depth" in error["message"]
    assert provider.calls == 3


async def test_scoped_by_principal() -> None:
    provider = Provider(text_reply("mine"), text_reply("again"))
    app = ResponsesState(provider)
    rid = (await create(app, principal="alice")).json["id"]
    path = f"/v1/responses/{rid}"
    for who in ("bob", None):
        assert (await call(app, "GET", path, principal=who)).status == 404
        assert (await call(app, "GET", f"{path}/input_items", principal=who)).status == 404
        assert (await call(app, "DELETE", path, principal=who)).status == 404
        refused = await create(app, "x", previous_response_id=rid, principal=who)
        assert refused.status == 400
    assert (await call(app, "GET", path, principal="alice")).status == 200
    assert (await create(app, "x", previous_response_id=rid, principal="alice")).status == 200


async def test_ttl_expires_records() -> None:
    now = [1000.0]
    store = MemoryStore(clock=lambda: now[0])
    app = ResponsesState(Provider(text_reply("x")), store=store, ttl=10)
    rid = (await create(app)).json["id"]
    assert (await call(app, "GET", f"/v1/responses/{rid}")).status == 200
    now[0] += 11
    assert (await call(app, "GET", f"/v1/responses/{rid}")).status == 404


async def test_cap_evicts_the_oldest() -> None:
    app = ResponsesState(Provider(*(text_reply(str(i)) for i in range(4))), max_responses=2)
    ids = [(await create(app, str(i))).json["id"] for i in range(4)]
    found = [(await call(app, "GET", f"/v1/responses/{rid}")).status for rid in ids]
    assert found == [404, 404, 200, 200]


def stored_size(answer: Answer) -> int:
    """The size of the record the answer was stored as (the layer's own store pass)."""
    [size] = [p.data["bytes"] for p in answer.exchange.passes if p.name == "responses.store"]
    return int(size)


async def test_byte_cap_evicts_the_oldest() -> None:
    big = "word " * 2000  # 10 KB of text per answer
    size = stored_size(await create(ResponsesState(Provider(text_reply(big))), "0"))
    # Room for two records of that size, not three.
    app = ResponsesState(Provider(*(text_reply(big) for _ in range(4))), max_bytes=int(size * 2.5))
    ids = [(await create(app, "0")).json["id"] for _ in range(4)]
    found = [(await call(app, "GET", f"/v1/responses/{rid}")).status for rid in ids]
    assert found == [404, 404, 200, 200]


async def test_byte_cap_and_count_cap_hold_together() -> None:
    app = ResponsesState(
        Provider(*(text_reply(str(i)) for i in range(5))), max_responses=2, max_bytes=10**9
    )
    ids = [(await create(app, str(i))).json["id"] for i in range(5)]
    found = [(await call(app, "GET", f"/v1/responses/{rid}")).status for rid in ids]
    assert found == [404, 404, 404, 200, 200]


async def test_a_response_larger_than_the_byte_cap_is_not_stored_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = ResponsesState(Provider(text_reply("x" * 5000), text_reply("small")), max_bytes=4000)
    with caplog.at_level("WARNING", logger="asgi_rotator.responses"):
        answer = await create(app)
    assert answer.status == 200  # the client has its answer all the same
    assert answer.headers.get(b"x-rotator-response-stored") == b"false"
    rid = answer.json["id"]
    assert (await call(app, "GET", f"/v1/responses/{rid}")).status == 404
    [warning] = [r for r in caplog.records if "responses.max_bytes" in r.getMessage()]
    assert rid in warning.getMessage()
    # One that fits is stored, and its answer has no such header.
    small = await create(app)
    assert b"x-rotator-response-stored" not in small.headers
    assert (await call(app, "GET", f"/v1/responses/{small.json['id']}")).status == 200


async def test_a_stored_answer_is_kept_twice_not_three_times() -> None:
    # The answer's text was in a record three times (turn.output, the unified twin and the
    # response object as the client saw it); the last now leaves its output to turn.output.
    text = "word " * 200_000  # 1 MB
    app = ResponsesState(Provider(text_reply(text)))
    answer = await create(app)
    assert stored_size(answer) < 2.2 * len(text)
    got = await call(app, "GET", f"/v1/responses/{answer.json['id']}")
    assert got.status == 200 and got.json == answer.json  # the output is put back


# --- streams -------------------------------------------------------------------------------------


async def test_stream_gets_our_id_everywhere_and_is_stored_before_its_end() -> None:
    store = MemoryStore()
    provider = Provider(text_reply("one"), text_stream("Streamed answer", end=Finish()))
    provider.heartbeats = True
    app = ResponsesState(provider, store=store)
    first = (await create(app, "one")).json["id"]
    stored_when_terminal_sent: list[bool] = []

    async def watch(message: dict[str, Any]) -> None:
        body = message.get("body", b"")
        if b"response.completed" in body:
            (rid,) = set(re.findall(r"resp_[0-9a-f]{48}", body.decode())) - {first}
            stored = await store.get(f"responses:-:{rid}")
            stored_when_terminal_sent.append(stored is not None)

    body = {"model": "up/m", "input": "two", "stream": True, "previous_response_id": first}
    answer = await call(app, "POST", "/v1/responses", body, on_send=watch)
    events = answer.events()
    envelopes = [e["response"] for e in events if "response" in e]
    assert [e["type"] for e in events if "response" in e] == [
        "response.created",
        "response.in_progress",
        "response.completed",
    ]
    rid = envelopes[0]["id"]
    assert RESPONSE_ID.fullmatch(rid) and all(e["id"] == rid for e in envelopes)
    assert all(e["previous_response_id"] == first for e in envelopes)
    starts = [e for m in answer.messages for e in m.get(EVENT, ()) if isinstance(e, MessageStart)]
    assert [s.id for s in starts] == [rid]  # the twin agrees with the bytes
    assert stored_when_terminal_sent == [True]
    assert answer.raw.count(b":\n\n") == 4  # heartbeats pass as they came
    got = (await call(app, "GET", f"/v1/responses/{rid}")).json
    assert got == envelopes[-1] and got["status"] == "completed"
    assert got["output"][0]["content"][0]["text"] == "Streamed answer"


async def test_failed_stream_is_stored_as_failed_and_cannot_be_continued() -> None:
    failure = Error(error=GatewayError("connection", "upstream went away"))
    provider = Provider(text_stream("partial answer", end=failure))
    app = ResponsesState(provider)
    answer = await create(app, "q", stream=True)
    rid = answer.events()[0]["response"]["id"]
    got = (await call(app, "GET", f"/v1/responses/{rid}")).json
    assert got["status"] == "failed" and got["id"] == rid
    refused = await create(app, "again", previous_response_id=rid)
    assert refused.status == 400 and "failed" in refused.json["error"]["message"]


async def test_cut_stream_is_stored_as_incomplete_never_completed() -> None:
    provider = Provider(text_stream("half of it"))  # no terminal event: the client went away
    app = ResponsesState(provider)
    answer = await create(app, "q", stream=True)
    rid = answer.events()[0]["response"]["id"]
    got = (await call(app, "GET", f"/v1/responses/{rid}")).json
    assert got["status"] == "incomplete"
    assert got["output"][0]["content"][0]["text"] == "half of it"


async def test_length_stop_is_incomplete_and_can_be_continued() -> None:
    provider = Provider(text_stream("cut at max", end=Finish(reason="length")), text_reply("rest"))
    app = ResponsesState(provider)
    rid = (await create(app, "q", stream=True)).events()[0]["response"]["id"]
    got = (await call(app, "GET", f"/v1/responses/{rid}")).json
    assert got["status"] == "incomplete"
    assert got["incomplete_details"] == {"reason": "max_output_tokens"}
    assert (await create(app, "go on", previous_response_id=rid)).status == 200
    assert texts(provider.requests[1].messages)[1] == ("assistant", "cut at max")


# --- retrieve, delete, input_items ---------------------------------------------------------------


async def test_delete_then_everything_is_404() -> None:
    app = ResponsesState(Provider(text_reply("x")))
    rid = (await create(app)).json["id"]
    deleted = await call(app, "DELETE", f"/v1/responses/{rid}")
    assert deleted.status == 200
    assert deleted.json == {"id": rid, "object": "response", "deleted": True}
    for method, path in [("GET", rid), ("GET", f"{rid}/input_items"), ("DELETE", rid)]:
        answer = await call(app, method, f"/v1/responses/{path}")
        assert answer.status == 404
        assert answer.json["error"]["message"] == f"Response with id '{rid}' not found."


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", "/v1/responses/resp_" + "a" * 48, 405),
        ("DELETE", "/v1/responses/resp_" + "a" * 48 + "/input_items", 405),
        ("GET", "/v1/responses/resp_" + "a" * 48 + "/other", 404),
        ("GET", "/v1/responses/resp_short", 404),
        ("GET", "/v1/responses/../../secret", 404),
        ("DELETE", "/v1/responses/resp_" + "A" * 48, 404),
    ],
)
async def test_item_routes_are_validated(method: str, path: str, status: int) -> None:
    answer = await call(ResponsesState(Provider()), method, path)
    assert answer.status == status
    assert set(answer.json["error"]) == {"message", "type", "param", "code"}


async def test_input_items_lists_the_whole_context_in_openai_shapes() -> None:
    call_reply = Response(
        id="up_1",
        model="m",
        content=[ToolCall(id="call_1", name="f", arguments="{}")],
        finish_reason="tool_calls",
    )
    app = ResponsesState(Provider(call_reply, text_reply("Done")))
    first = (await create(app, [{"role": "user", "content": "do it"}])).json
    output = [{"type": "function_call_output", "call_id": "call_1", "output": "ok"}]
    second = (await create(app, output, previous_response_id=first["id"])).json
    path = f"/v1/responses/{second['id']}/input_items"

    listed = (await call(app, "GET", path, query=b"order=asc")).json
    assert listed["object"] == "list" and listed["has_more"] is False
    items = listed["data"]
    assert [i["type"] for i in items] == ["message", "function_call", "function_call_output"]
    assert items[0]["content"] == [{"type": "input_text", "text": "do it"}]
    assert items[0]["role"] == "user" and items[0]["status"] == "completed"
    assert items[1]["id"] == first["output"][0]["id"]  # as the client saw it
    assert items[2]["call_id"] == "call_1" and items[2]["status"] == "completed"
    ids = [i["id"] for i in items]
    assert len(set(ids)) == 3 and listed["first_id"] == ids[0] and listed["last_id"] == ids[-1]

    default = (await call(app, "GET", path)).json
    assert [i["id"] for i in default["data"]] == ids[::-1]  # desc, as OpenAI defaults
    page = (await call(app, "GET", path, query=b"order=asc&limit=1")).json
    assert [i["id"] for i in page["data"]] == ids[:1] and page["has_more"] is True
    after = f"order=asc&limit=1&after={ids[0]}".encode()
    page = (await call(app, "GET", path, query=after)).json
    assert [i["id"] for i in page["data"]] == ids[1:2] and page["has_more"] is True
    before = f"order=asc&limit=1&before={ids[2]}".encode()
    page = (await call(app, "GET", path, query=before)).json
    assert [i["id"] for i in page["data"]] == ids[1:2] and page["has_more"] is True
    # The listing ids stay the same from one call to the next.
    assert [i["id"] for i in (await call(app, "GET", path, query=b"order=asc")).json["data"]] == ids

    for query in (b"limit=0", b"limit=101", b"limit=x", b"order=up", b"after=nope"):
        assert (await call(app, "GET", path, query=query)).status == 400


# --- native continuation -------------------------------------------------------------------------


def providers(groups: dict[str, Any] | None = None) -> Providers:
    config = {
        "providers": {
            "oa": {"protocol": "openai_responses", "base_url": "http://oa.invalid", "keys": ["k"]},
            "an": {
                "protocol": "anthropic_messages",
                "base_url": "http://an.invalid",
                "keys": ["k"],
            },
        },
        "groups": groups or {},
    }
    return Providers(parse_config(config, {}), {})


async def test_native_continuation_passes_the_providers_own_id() -> None:
    provider = Provider(text_reply("one", upstream_id="resp_up1"), text_reply("two"), provider="oa")
    app = ResponsesState(provider, providers=providers())
    first = (await create(app, "one", model="oa/m")).json
    second = await create(app, "two", model="oa/m", previous_response_id=first["id"])
    request = provider.requests[1]
    assert request.previous_response_id == "resp_up1"
    assert texts(request.messages) == [("user", "two")]
    assert provider.bodies[1]["previous_response_id"] == "resp_up1"
    assert second.json["previous_response_id"] == first["id"]  # the client sees ours
    assert "responses.native" in second.passes()


async def test_no_native_continuation_on_another_provider_or_a_mixed_group() -> None:
    groups = {"mixed": {"targets": ["oa/m", "an/m"]}}
    provider = Provider(
        *(text_reply(str(i), upstream_id="resp_up") for i in range(3)), provider="oa"
    )
    app = ResponsesState(provider, providers=providers(groups))
    first = (await create(app, "one", model="oa/m")).json
    for model in ("an/m", "mixed"):
        await create(app, "two", model=model, previous_response_id=first["id"])
    for request in provider.requests[1:]:
        assert request.previous_response_id is None
        assert texts(request.messages) == [("user", "one"), ("assistant", "0"), ("user", "two")]


async def test_native_continuation_refused_upstream_is_sent_again_expanded() -> None:
    provider = Provider(text_reply("one", upstream_id="resp_up1"), text_reply("two"), provider="oa")
    app = ResponsesState(provider, providers=providers())
    first = (await create(app, "one", model="oa/m")).json
    provider.refuse_previous = True
    second = await create(app, "two", model="oa/m", previous_response_id=first["id"])
    assert second.status == 200 and second.json["output"][0]["content"][0]["text"] == "two"
    assert [r.previous_response_id for r in provider.requests[1:]] == ["resp_up1", None]
    assert texts(provider.requests[2].messages) == [
        ("user", "one"),
        ("assistant", "one"),
        ("user", "two"),
    ]
    assert "responses.native_refused" in second.passes()


async def test_native_continuation_can_be_switched_off() -> None:
    provider = Provider(text_reply("one", upstream_id="resp_up1"), text_reply("two"), provider="oa")
    app = ResponsesState(provider, providers=providers(), native_continuation=False)
    first = (await create(app, "one", model="oa/m")).json
    await create(app, "two", model="oa/m", previous_response_id=first["id"])
    assert provider.requests[1].previous_response_id is None


def test_options_are_validated() -> None:
    bad: list[dict[str, Any]] = [{"ttl": 0}, {"max_responses": 0}, {"max_depth": 0}]
    for options in bad:
        with pytest.raises(ValueError):
            ResponsesState(Provider(), **options)


async def test_other_endpoints_get_the_original_receive_and_send() -> None:
    seen: list[Any] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.extend((receive, send))

    async def receive() -> dict[str, Any]:
        raise AssertionError("not read")

    async def send(message: dict[str, Any]) -> None:
        raise AssertionError("nothing sent")

    app = ResponsesState(inner)
    for path in ("/v1/chat/completions", "/v1/messages", "/v1beta/models/m:generateContent"):
        seen.clear()
        scope = {"type": "http", "method": "POST", "path": path, "headers": []}
        await app(scope, receive, send)
        assert seen == [receive, send] and SCOPE_KEY not in scope
