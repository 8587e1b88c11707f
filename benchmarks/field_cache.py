"""What FieldCache adds, in-process: ``python -m benchmarks.field_cache``.

FieldCache is called around a terminal that answers at once (no codec, no I/O), against the
same terminal called bare, side by side in one run (rounds interleaved, the best round of
each kept, since a loaded machine only ever adds time).

Every request is the same reasoning tool conversation, as an OpenAI Chat client sends it
back: the user's question, the assistant's tool call (its reasoning lost, the client has no
place for it), the tool's result; reasoning on.  Every answer is a streamed reasoning block
with its signature, then a tool call with the same id.  So from the second request on, the
rules find the previous answer's payload and put it back: the steady state of an agent loop.

* ``no_rule_us_per_request``: to a provider no rule is for (OpenAI Chat upstream), the case
  of most traffic: the goal is at most 10 µs.
* ``rule_us_per_event``: from a provider a built-in rule is for (Anthropic, thinking), per
  reasoning event, the slope between a short and a long stream: the goal is at most 2 µs.
* ``gemini_rule_us_per_event``: the same with the Gemini rule.
* ``text_rule_us_per_event``: the Gemini rule on a text answer, whose text it keeps (a text
  turn's signature is filed by the turn's text).
* ``rule_us_per_request``: the fixed part of the Anthropic case (a lookup that hits, the
  injection, the stores; the store in memory).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from asgi_rotator.config import parse_config
from asgi_rotator.exchange import EVENT, SCOPE_KEY, Exchange
from asgi_rotator.middleware.field_cache import FieldCache
from asgi_rotator.providers import Providers
from asgi_rotator.unified import (
    BlockStop,
    Finish,
    Message,
    Reasoning,
    ReasoningConfig,
    ReasoningDelta,
    Request,
    Signature,
    Text,
    TextDelta,
    ToolArgsDelta,
    ToolCall,
    ToolCallStart,
    ToolResult,
)

CONFIG = {
    "providers": {
        "chat": {"protocol": "openai_chat", "base_url": "http://x.invalid/v1", "keys": ["k"]},
        "claude": {"protocol": "anthropic_messages", "base_url": "http://x.invalid", "keys": ["k"]},
        "gemini": {"protocol": "gemini", "base_url": "http://x.invalid", "keys": ["k"]},
    }
}
_START = {"type": "http.response.start", "status": 200, "headers": []}
_END = {"type": "http.response.body", "body": b"", "more_body": False}


SOURCES = {"chat/bench": None, "claude/bench": "anthropic_messages", "gemini/bench": "gemini"}
CALL_ID = "call_bench_1"


def _answer(events: int, source: str | None, kind: str) -> list[Any]:
    """A streamed answer: ``events`` reasoning deltas, the block's signature, a tool call
    (``kind="reasoning"``); or ``events`` text deltas (``kind="text"``)."""
    if kind == "text":
        return [TextDelta(index=0, text="word ") for _ in range(events)] + [
            BlockStop(index=0),
            Finish(),
        ]
    return [
        *(ReasoningDelta(index=0, text="Let me think. ") for _ in range(events)),
        Signature(index=0, signature="c2lnbmF0dXJl" * 20, source=source),
        BlockStop(index=0),
        ToolCallStart(index=1, id=CALL_ID, name="get_weather"),
        ToolArgsDelta(index=1, delta='{"city":"Paris"}'),
        BlockStop(index=1),
        Finish(reason="tool_calls"),
    ]


class _Terminal:
    """Answers at once with the canned stream; counts the requests whose assistant turn came
    with a reasoning part (the rule's injection), which bare and cached arms both pay."""

    def __init__(self, events: int, source: str | None, kind: str = "reasoning") -> None:
        self.body = [
            {"type": "http.response.body", "body": b"data: x\n\n", "more_body": True, EVENT: [e]}
            for e in _answer(events, source, kind)
        ]
        self.calls = self.injected = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls += 1
        turn = scope[SCOPE_KEY].request.messages[1].content
        if any(isinstance(part, Reasoning) for part in turn):
            self.injected += 1
        await send(_START)
        for message in self.body:
            await send(message)
        await send(_END)


async def _send(message: Any) -> None:
    return None


async def _receive() -> Any:
    return {"type": "http.disconnect"}


def _scope(providers: Providers, model: str) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "query_string": b"",
        "headers": [(b"authorization", b"Bearer bench")],
    }
    exchange = Exchange(scope, b"")
    exchange.protocol = "openai_chat"
    exchange.request = Request(
        model=model,
        messages=[
            Message(role="user", content=[Text(text="What is the weather in Paris?")]),
            Message(
                role="assistant",
                content=[ToolCall(id=CALL_ID, name="get_weather", arguments='{"city":"Paris"}')],
            ),
            Message(
                role="tool",
                content=[
                    ToolResult(tool_call_id=CALL_ID, name="get_weather", content=[Text(text="18C")])
                ],
            ),
        ],
        reasoning=ReasoningConfig(effort="low"),
        stream=True,
    )
    exchange.current.target = providers.resolve(model)[0]
    scope[SCOPE_KEY] = exchange
    return scope


async def _time(app: Any, providers: Providers, model: str, count: int) -> float:
    started = time.process_time()
    for _ in range(count):
        await app(_scope(providers, model), _receive, _send)
    return (time.process_time() - started) / count * 1e6


async def measure(requests: int, rounds: int, long_stream: int) -> dict[str, float]:
    providers = Providers(parse_config(CONFIG, {}), {})
    cases = [(model, "reasoning") for model in SOURCES] + [("gemini/bench", "text")]
    # (arm, model, kind) -> app; each FieldCache with its own store, as in a gateway.
    arms: dict[tuple[str, str, str], Any] = {}
    for model, kind in cases:
        for length, events in (("short", 0), ("long", long_stream)):
            arms[(f"bare_{length}", model, kind)] = _Terminal(events, SOURCES[model], kind)
            arms[(f"cache_{length}", model, kind)] = FieldCache(
                _Terminal(events, SOURCES[model], kind)
            )
    best: dict[tuple[str, str, str], float] = {}
    for _ in range(rounds):
        for key, app in arms.items():
            took = await _time(app, providers, key[1], requests)
            best[key] = min(best.get(key, float("inf")), took)

    def added(model: str, kind: str = "reasoning") -> float:
        return best[("cache_short", model, kind)] - best[("bare_short", model, kind)]

    def per_event(model: str, kind: str = "reasoning") -> float:
        def slope(arm: str) -> float:
            long, short = best[(f"{arm}_long", model, kind)], best[(f"{arm}_short", model, kind)]
            return (long - short) / long_stream

        return slope("cache") - slope("bare")

    return {
        "no_rule_us_per_request": added("chat/bench"),
        "rule_us_per_request": added("claude/bench"),
        "rule_us_per_event": per_event("claude/bench"),
        "gemini_rule_us_per_event": per_event("gemini/bench"),
        "text_rule_us_per_event": per_event("gemini/bench", "text"),
        # A check that the rules applied: the share of requests whose assistant turn reached
        # the provider with its reasoning put back (every request but each arm's first).
        "anthropic_injected": _injected(arms, "claude/bench"),
        "gemini_injected": _injected(arms, "gemini/bench"),
    }


def _injected(arms: dict[tuple[str, str, str], Any], model: str) -> float:
    apps = [
        app.app
        for (arm, m, kind), app in arms.items()
        if arm.startswith("cache") and m == model and kind == "reasoning"
    ]
    return sum(a.injected for a in apps) / max(1, sum(a.calls for a in apps))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.field_cache")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--events", type=int, default=200, help="events of the long stream")
    args = parser.parse_args(argv)
    figures = asyncio.run(measure(args.requests, args.rounds, args.events))
    print(json.dumps({k: round(v, 2) for k, v in figures.items()}))


if __name__ == "__main__":
    main()
