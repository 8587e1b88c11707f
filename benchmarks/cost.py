"""What pricing adds to a request, in process: ``python -m benchmarks.cost``.

Two copies of the same stack (``benchmarks.inprocess``: canned upstream bytes, no sockets)
answer plain Chat requests in alternating rounds, so machine load falls on both alike:

* ``priced``: the provider and model have a price, so each response is priced (the lookup,
  the arithmetic, the exchange's sum over attempts) and carries ``x-asgi-rotator-cost-usd``;
* ``unpriced``: the price table is swapped for one that knows nothing and returns at once.

Each arm runs twice, in the order priced, unpriced, unpriced, priced, so that the spread
between the two runs of one arm (``aa_spread_us``) shows what the machine's noise is: the
difference between the arms is only meaningful above it.

Closer to the figure the goal is about, ``pricing_work_us`` times, in a loop, exactly what
dispatch does for a priced plain response (the ``_Pricer`` call with its table lookup, the
exchange's sum over attempts, the header's formatting), and ``*_lookup_us`` the table's
``cost`` alone for a model found through the genai-prices data (a tiered Anthropic price) and
for a configured one.  ``noop_us`` (an empty call) says how fast the machine is right now.
The goal: at most 5 µs per request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import timeit
from typing import Any

from benchmarks.apps import stack_config
from benchmarks.inprocess import CannedClient, _body, _call
from benchmarks.upstream import harvest

GOAL_US = 5.0


class _Unpriced:
    def cost(self, provider: str, api_url: str | None, model: str, usage: Any) -> None:
        return None


def _dispatch(app: Any) -> Any:
    from asgi_rotator.dispatch import ProviderDispatch

    while not isinstance(app, ProviderDispatch):
        app = app.app
    return app


async def measure(requests: int, rounds: int, canned: Any, calls: int = 100_000) -> dict[str, Any]:
    from asgi_rotator.config import parse_config
    from asgi_rotator.stack import build_app

    config = stack_config("http://upstream.invalid")
    config["prices"] = {"chat/bench": {"input": 3.0, "output": 15.0, "cache_read": 0.3}}
    arms = {}
    for name in ("priced", "unpriced", "unpriced_2", "priced_2"):
        gateway = build_app(parse_config(config, {}), environ={})
        client = CannedClient(canned)
        for provider in gateway.providers:
            provider.client = client
        if name.startswith("unpriced"):
            _dispatch(gateway.app).prices = _Unpriced()
        arms[name] = gateway
    body = _body("chat/bench", False)
    samples: dict[str, list[float]] = {name: [] for name in arms}
    for gateway in arms.values():
        for _ in range(300):
            await _call(gateway, body)
    for _ in range(rounds):
        for name, gateway in arms.items():
            started = time.process_time()
            for _ in range(requests):
                await _call(gateway, body)
            samples[name].append((time.process_time() - started) / requests * 1e6)
    for gateway in arms.values():
        await gateway.aclose()
    median = {name: statistics.median(values) for name, values in samples.items()}
    priced = (median["priced"] + median["priced_2"]) / 2
    unpriced = (median["unpriced"] + median["unpriced_2"]) / 2
    spread = max(
        abs(median["priced"] - median["priced_2"]),
        abs(median["unpriced"] - median["unpriced_2"]),
    )
    return {
        "priced_us_per_request": round(priced, 2),
        "unpriced_us_per_request": round(unpriced, 2),
        "stack_difference_us": round(priced - unpriced, 2),
        "aa_spread_us": round(spread, 2),
        "goal_us": GOAL_US,
        **_work_alone(calls),
    }


def _work_alone(calls: int) -> dict[str, float]:
    from asgi_rotator.dispatch import COST_HEADER, _Pricer, format_cost
    from asgi_rotator.exchange import Attempt, Exchange
    from asgi_rotator.pricing import Price, PriceTable
    from asgi_rotator.unified import Usage

    table = PriceTable({"mine/model": Price(input=1.0, output=2.0)})
    usage = Usage(
        input_tokens=12_000,
        output_tokens=800,
        cache_read_tokens=9_000,
        cache_write_tokens=1_000,
        cache_write_1h_tokens=200,
    )
    exchange = Exchange({"type": "http"})
    attempt = Attempt(number=1, provider="anthropic", model="claude-sonnet-4-5")
    exchange.attempts.append(attempt)
    pricer = _Pricer(table, attempt, "https://api.anthropic.com")

    def work() -> Any:
        # What _plain does for pricing: price the attempt, sum, format the header.
        pricer(usage)
        cost = exchange.cost
        return (COST_HEADER, format_cost(cost).encode()) if cost is not None else None

    out = {"noop_us": _per_call(lambda: None, calls), "pricing_work_us": _per_call(work, calls)}
    for name, args in (
        ("library_lookup_us", ("anthropic", "https://api.anthropic.com", "claude-sonnet-4-5")),
        ("configured_lookup_us", ("mine", None, "model")),
    ):
        assert table.cost(*args, usage) is not None
        out[name] = _per_call(lambda a=args: table.cost(*a, usage), calls)
    return out


def _per_call(function: Any, number: int) -> float:
    return round(min(timeit.repeat(function, number=number, repeat=7)) / number * 1e6, 3)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cost")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--calls", type=int, default=100_000, help="calls per timing of the work alone"
    )
    args = parser.parse_args(argv)
    canned = harvest()  # runs its own event loop
    print(json.dumps(asyncio.run(measure(args.requests, args.rounds, canned, args.calls))))


if __name__ == "__main__":
    main()
