"""What FieldCache adds, in-process: ``python -m benchmarks.field_cache``.

FieldCache is called around a terminal that answers at once (no codec, no I/O), against the
same terminal called bare, side by side in one run (rounds interleaved, the best round of
each kept, since a loaded machine only ever adds time):

* ``no_rule_us_per_request``: a request to a provider no rule is for (OpenAI Chat upstream),
  the case of most traffic: the goal is at most 10 µs.
* ``rule_us_per_event``: a streamed answer from a provider a built-in rule is for (Anthropic,
  thinking on), per event, the slope between a short and a long stream: the goal is at most
  2 µs.
* ``text_rule_us_per_event``: the same with the Gemini rule, which also keeps the text.
* ``rule_us_per_request``: the fixed part of that case (lookups and stores in memory).
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
    Finish,
    Message,
    ReasoningConfig,
    Request,
    Text,
    TextDelta,
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


def _terminal(events: int) -> Any:
    body = [
        {"type": "http.response.body", "body": b"data: x\n\n", "more_body": True, EVENT: [e]}
        for e in [TextDelta(index=0, text="word ") for _ in range(events)] + [Finish()]
    ]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(_START)
        for message in body:
            await send(message)
        await send(_END)

    return app


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
        messages=[Message(role="user", content=[Text(text="Say hello")])],
        reasoning=ReasoningConfig(effort="low"),
        stream=True,
    )
    exchange.target = providers.resolve(model)[0]
    scope[SCOPE_KEY] = exchange
    return scope


async def _time(app: Any, providers: Providers, model: str, count: int) -> float:
    started = time.process_time()
    for _ in range(count):
        await app(_scope(providers, model), _receive, _send)
    return (time.process_time() - started) / count * 1e6


async def measure(requests: int, rounds: int, long_stream: int) -> dict[str, float]:
    providers = Providers(parse_config(CONFIG, {}), {})
    short, long = _terminal(0), _terminal(long_stream)
    arms = {
        "bare_short": short,
        "cache_short": FieldCache(short),
        "bare_long": long,
        "cache_long": FieldCache(long),
    }
    best: dict[tuple[str, str], float] = {}
    for _ in range(rounds):
        for name, app in arms.items():
            for model in ("chat/bench", "claude/bench", "gemini/bench"):
                took = await _time(app, providers, model, requests)
                key = (name, model)
                best[key] = min(best.get(key, float("inf")), took)

    def per_event(arm: str, model: str) -> float:
        return (best[(f"{arm}_long", model)] - best[(f"{arm}_short", model)]) / long_stream

    return {
        "no_rule_us_per_request": best[("cache_short", "chat/bench")]
        - best[("bare_short", "chat/bench")],
        "rule_us_per_request": best[("cache_short", "claude/bench")]
        - best[("bare_short", "claude/bench")],
        "rule_us_per_event": per_event("cache", "claude/bench") - per_event("bare", "claude/bench"),
        # The Gemini rule also keeps a text turn's text (its signature is filed by it).
        "text_rule_us_per_event": per_event("cache", "gemini/bench")
        - per_event("bare", "gemini/bench"),
    }


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
