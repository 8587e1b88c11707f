"""FieldCache alone, around a foreign ASGI app: hand-built scopes, a recording send."""

from __future__ import annotations

import gc
import json
from typing import Any

import pytest

from asgi_rotator.config import ConfigError, parse_config
from asgi_rotator.exchange import EVENT, RECORD, RESPONSE, SCOPE_KEY, CurrentAttempt, Exchange
from asgi_rotator.field_rules import GEMINI_PLACEHOLDER, ReasoningRule, Rule, turn_hash
from asgi_rotator.middleware.field_cache import FieldCache
from asgi_rotator.state import MemoryStore
from asgi_rotator.unified import (
    Finish,
    Reasoning,
    ReasoningDelta,
    Response,
    Signature,
    Text,
    ToolArgsDelta,
    ToolCall,
    ToolCallStart,
)

pytestmark = pytest.mark.anyio

SECRET_SIGNATURE = "sig-secret-value-0123456789"


def scope_for(path: str, key: str = "client-a", record: bool = True) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"x-goog-api-key", key.encode())],
        RECORD: record,
    }


def receiver(body: dict[str, Any]) -> Any:
    raw = json.dumps(body).encode()
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


class ForeignApp:
    """Stands where dispatch would: answers with a unified twin beside its bytes, and keeps
    the request each call saw."""

    def __init__(self, content: list[Any], *, stream: bool = False) -> None:
        self.content = content
        self.stream = stream
        self.seen: list[Any] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        exchange = scope[SCOPE_KEY]
        self.seen.append(exchange.request)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        if not self.stream:
            response = Response(id="r1", model="gemini-3-pro", content=self.content)
            await send({"type": "http.response.body", "body": b"{}", RESPONSE: response})
            return
        events: list[Any] = [
            ReasoningDelta(index=0, text="thinking "),
            Signature(index=0, signature=SECRET_SIGNATURE, source="gemini"),
            ToolCallStart(index=1, id="call_1", name="get_weather"),
            ToolArgsDelta(index=1, delta='{"location": '),
            ToolArgsDelta(index=1, delta='"Paris"}'),
        ]
        for event in events:
            await send(
                {"type": "http.response.body", "body": b"x", "more_body": True, EVENT: [event]}
            )
        await send(
            {"type": "http.response.body", "body": b"y", "more_body": True, EVENT: [Finish()]}
        )
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def gemini_turn_two() -> dict[str, Any]:
    return {
        "contents": [
            {"role": "user", "parts": [{"text": "weather?"}]},
            {
                "role": "model",
                "parts": [{"functionCall": {"name": "get_weather", "args": {"location": "Paris"}}}],
            },
            {
                "role": "user",
                "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"result": "sunny"}}}
                ],
            },
        ]
    }


async def run(app: Any, scope: dict[str, Any], body: dict[str, Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receiver(body), send)
    return sent


PATH = "/v1beta/models/gemini-3-pro:generateContent"
TURN_ONE = {"contents": [{"role": "user", "parts": [{"text": "weather?"}]}]}
ANSWER = [
    Reasoning(signature=SECRET_SIGNATURE, source="gemini"),
    ToolCall(id="call_1", name="get_weather", arguments='{"location": "Paris"}'),
]


def model_parts(request: Any) -> list[Any]:
    return next(m for m in request.messages if m.role == "assistant").content


@pytest.mark.parametrize("stream", [False, True])
async def test_alone_around_a_foreign_app_the_signature_comes_back(stream: bool) -> None:
    inner = ForeignApp(ANSWER, stream=stream)
    app = FieldCache(inner)
    await run(app, scope_for(PATH), TURN_ONE)
    scope = scope_for(PATH)
    await run(app, scope, gemini_turn_two())
    parts = model_parts(inner.seen[1])
    # A Gemini client sends no ids: found by the turn's place and calls.
    assert isinstance(parts[0], Reasoning) and parts[0].signature == SECRET_SIGNATURE
    assert isinstance(parts[1], ToolCall)
    passes = [(p.name, p.data) for p in scope[SCOPE_KEY].passes]
    inject = [d for n, d in passes if n == "field_cache.inject"]
    assert inject and inject[0]["rule"] == "gemini_thought_signatures" and inject[0]["hit"]
    # Passes say what happened, never the value.
    assert SECRET_SIGNATURE not in repr(passes)


async def test_the_stream_goes_on_message_by_message() -> None:
    inner = ForeignApp(ANSWER, stream=True)
    order: list[str] = []

    class Watching(ForeignApp):
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            async def noted(message: dict[str, Any]) -> None:
                order.append("app")
                await send(message)

            await inner(scope, receive, noted)

    sent: list[Any] = []

    async def send(message: dict[str, Any]) -> None:
        order.append("client")
        sent.append(message)

    await FieldCache(Watching([]))(scope_for(PATH), receiver(TURN_ONE), send)
    # Every message reached the client before the app sent the next: nothing held back.
    assert order == ["app", "client"] * (len(order) // 2)
    assert [m.get("body") for m in sent[1:]] == [b"x"] * 5 + [b"y", b""]


async def test_another_inbound_key_gets_the_placeholder_not_the_value() -> None:
    inner = ForeignApp(ANSWER)
    app = FieldCache(inner)
    await run(app, scope_for(PATH, key="alice"), TURN_ONE)
    scope = scope_for(PATH, key="mallory")
    await run(app, scope, gemini_turn_two())
    parts = model_parts(inner.seen[1])
    assert parts[0].signature == GEMINI_PLACEHOLDER
    names = [p.name for p in scope[SCOPE_KEY].passes]
    assert "field_cache.placeholder" in names


async def test_fields_of_another_provider_are_dropped_and_noted() -> None:
    inner = ForeignApp([Text(text="hi")])
    app = FieldCache(inner)
    body = gemini_turn_two()
    scope = scope_for(PATH)
    # An Anthropic-signed block reaching a Gemini request: dropped (and the drop noted).
    await run(app, scope, body)
    request = inner.seen[0]
    assistant = next(m for m in request.messages if m.role == "assistant")
    assistant.content.insert(
        0, Reasoning(text="t", signature="anthropic-sig", source="anthropic_messages")
    )
    scope = scope_for(PATH)
    exchange = Exchange(scope, b"")
    exchange.protocol = "gemini"
    exchange.request = request
    scope[SCOPE_KEY] = exchange
    await FieldCache(inner)(scope, receiver({}), _drop)
    sent_parts = model_parts(inner.seen[-1])
    assert not any(getattr(p, "source", None) == "anthropic_messages" for p in sent_parts)
    assert "field_cache.drop" in [p.name for p in exchange.passes]
    # The client's request itself is left as it was, for the next attempt.
    assert exchange.request is request


async def _drop(message: dict[str, Any]) -> None:
    return None


async def test_a_store_that_fails_is_a_miss_not_an_error() -> None:
    class Broken(MemoryStore):
        async def get_many(self, keys: Any) -> Any:
            raise ConnectionError("store down")

    inner = ForeignApp(ANSWER)
    app = FieldCache(inner, store=Broken())
    sent = await run(app, scope_for(PATH), gemini_turn_two())
    assert sent[0]["status"] == 200
    assert model_parts(inner.seen[0])[0].signature == GEMINI_PLACEHOLDER


async def test_no_rule_for_the_protocol_passes_straight_through() -> None:
    inner = ForeignApp([Text(text="hi")])
    rule = ReasoningRule("only_anthropic", source="anthropic_messages")
    app = FieldCache(inner, rules=[rule])
    sent = await run(app, scope_for(PATH), TURN_ONE)
    assert sent[0]["status"] == 200
    assert inner.seen[0] is not None


class _Noting(Rule):
    """Notes its name in ``order`` when its inject runs."""

    def __init__(self, name: str, order: list[str], protocols: tuple[str, ...] = ()) -> None:
        super().__init__(name)
        self.order = order
        self.protocols = protocols

    async def inject(self, attempt: Any, request: Any) -> Any:
        self.order.append(self.name)
        return request


async def test_rules_run_in_the_order_they_are_given() -> None:
    # An adapter (for any protocol) is given first so that the rules after it see the
    # request as it will go: its model, its reasoning knob.  A rule's protocols choose
    # whether it runs, never when.
    order: list[str] = []
    rules = [
        _Noting("adapter", order),
        _Noting("gemini_rule", order, protocols=("gemini",)),
        _Noting("any_rule", order),
    ]
    await run(FieldCache(ForeignApp([Text(text="hi")]), rules=rules), scope_for(PATH), TURN_ONE)
    assert order == ["adapter", "gemini_rule", "any_rule"]


async def test_lifespan_and_other_scopes_pass_through() -> None:
    seen: list[str] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    await FieldCache(inner)({"type": "lifespan"}, receiver({}), _drop)
    assert seen == ["lifespan"]


def test_duplicate_rule_names_are_refused() -> None:
    rule = ReasoningRule("same", source="gemini")
    with pytest.raises(ValueError, match="duplicate"):
        FieldCache(None, rules=[rule, ReasoningRule("same", source="gemini")])


def test_unknown_builtin_rule_in_config_names_the_path() -> None:
    with pytest.raises(ConfigError, match=r"field_cache\.builtin\.gemini_signatures"):
        parse_config({"field_cache": {"builtin": {"gemini_signatures": False}}}, {})


async def test_session_scope_keeps_two_sessions_of_one_key_apart() -> None:
    inner = ForeignApp(ANSWER)
    rule = ReasoningRule(
        "per_session", source="gemini", scope=("provider", "session"), placeholder="none"
    )
    app = FieldCache(inner, rules=[rule])

    def with_session(session: str) -> dict[str, Any]:
        scope = scope_for(PATH)
        scope["headers"].append((b"x-session-id", session.encode()))
        return scope

    await run(app, with_session("one"), TURN_ONE)
    await run(app, with_session("two"), gemini_turn_two())
    await run(app, with_session("one"), gemini_turn_two())
    assert model_parts(inner.seen[1])[0].signature == "none"
    assert model_parts(inner.seen[2])[0].signature == SECRET_SIGNATURE


async def test_file_store_keeps_values_across_instances(tmp_path: Any) -> None:
    from asgi_rotator.state import FileStore

    inner = ForeignApp(ANSWER)
    first = FieldCache(inner, store=FileStore(tmp_path))
    await run(first, scope_for(PATH), TURN_ONE)
    second = FieldCache(inner, store=FileStore(tmp_path))  # a restart
    await run(second, scope_for(PATH), gemini_turn_two())
    assert model_parts(inner.seen[1])[0].signature == SECRET_SIGNATURE


async def test_anthropic_tool_loop_without_its_thinking_goes_with_thinking_off() -> None:
    inner = ForeignApp([Text(text="ok")])
    body = {
        "model": "claude-x",
        "max_tokens": 2048,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "messages": [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}],
            },
        ],
    }
    scope = scope_for("/v1/messages")
    await run(FieldCache(inner), scope, body)
    assert inner.seen[0].reasoning is None
    passes = [p.name for p in scope[SCOPE_KEY].passes]
    assert "field_cache.thinking_off" in passes
    # With its thinking block cached, the same loop keeps thinking on.
    thinking = Reasoning(text="t", signature="sig-1", source="anthropic_messages")
    cached = ForeignApp([thinking, ToolCall(id="toolu_1", name="get_weather")])
    app = FieldCache(cached)
    await run(app, scope_for("/v1/messages"), {**body, "messages": body["messages"][:1]})
    await run(app, scope_for("/v1/messages"), body)
    sent = cached.seen[1]
    assert sent.reasoning is not None
    assert next(m for m in sent.messages if m.role == "assistant").content[0] == thinking


class _Hooking(Rule):
    """Hooks into every attempt: changes nothing, reads the provider-native answer."""

    observes = True

    def shapes(self, attempt: Any, request: Any) -> bool:
        return True


async def test_an_answer_that_is_not_json_reaches_no_rule() -> None:
    # A stream event's data is decoded for the rules; what cannot be decoded (malformed, or
    # nested deeper than the decoder goes) is nothing for them, and no failure here: the
    # stream's decoder reports it as the upstream's error.
    seen: list[Any] = []

    class Recording(_Hooking):
        def observe(self, attempt: Any, data: Any) -> None:
            seen.append(data)

    class Observed(ForeignApp):
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            observe = scope[SCOPE_KEY].current.observe
            for data in ("{not json", "[" * 10_000 + "]" * 10_000, '{"ok": 1}'):
                observe(data)
            await super().__call__(scope, receive, send)

    await run(
        FieldCache(Observed(ANSWER), rules=[Recording("recording")]), scope_for(PATH), TURN_ONE
    )
    assert seen == [{"ok": 1}]


def test_a_turn_whose_arguments_are_nested_too_deeply_is_addressed_by_their_text() -> None:
    # As arguments that are not JSON: the turn still has an address, the rule no failure.
    deep = "[" * 10_000 + "]" * 10_000
    address = turn_hash(3, [ToolCall(id="c", name="f", arguments=deep)])
    assert address == turn_hash(3, [ToolCall(id="other", name="f", arguments=deep)])
    assert address != turn_hash(3, [ToolCall(id="c", name="f", arguments=deep + " ")])


async def test_an_attempt_with_hooks_leaves_no_reference_cycle() -> None:
    # The hooks hold the exchange (through the rules' view of the attempt), and the exchange
    # holds the attempt: a request must not leave that cycle to the garbage collector.
    # What the collector finds is kept (DEBUG_SAVEALL) and searched for this request's
    # objects: garbage from elsewhere in the process (the test runner's) does not count.
    app = FieldCache(ForeignApp(ANSWER), rules=[_Hooking("hooking")])
    gc.collect()
    gc.disable()
    try:
        for _ in range(20):
            scope = scope_for(PATH, record=False)
            await run(app, scope, TURN_ONE)
            exchange = scope[SCOPE_KEY]
            assert exchange.request is not None
            exchange.detach()  # what the outermost layer of a stack does
        del scope, exchange
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        left = [obj for obj in gc.garbage if isinstance(obj, (Exchange, CurrentAttempt))]
        assert left == []
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
