"""Cost: the provider's figure first, then configured prices, then genai-prices; unknown is
``None``, never zero; a request's cost is the sum over its attempts."""

from __future__ import annotations

import pytest
from genai_prices import Usage as LibraryUsage
from genai_prices import calc_price
from hypothesis import given, settings
from hypothesis import strategies as st

from asgi_rotator.dispatch import format_cost, format_usage
from asgi_rotator.exchange import Attempt, Exchange
from asgi_rotator.pricing import Price, PriceTable
from asgi_rotator.unified import Usage

ANTHROPIC_URL = "https://api.anthropic.com"
OPENAI_URL = "https://api.openai.com/v1"
TABLE = PriceTable()  # loading the library's data once for the module

USAGE = Usage(
    input_tokens=10_000,
    output_tokens=2_000,
    cache_read_tokens=4_000,
    cache_write_tokens=3_000,
    cache_write_1h_tokens=1_000,
    reasoning_tokens=500,
)


def library(usage: Usage, model: str, url: str) -> float:
    """The library's own (slow, Decimal) calculation, the oracle for the fast path."""
    priced = calc_price(
        LibraryUsage(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            cache_write_1h_tokens=usage.cache_write_1h_tokens,
        ),
        model,
        provider_api_url=url,
    )
    return float(priced.total_price)


@st.composite
def usages(draw: st.DrawFn) -> Usage:
    read = draw(st.integers(0, 300_000))
    write = draw(st.integers(0, 300_000))
    return Usage(
        input_tokens=draw(st.integers(0, 300_000)) + read + write,
        output_tokens=draw(st.integers(0, 100_000)),
        cache_read_tokens=read,
        cache_write_tokens=write,
        cache_write_1h_tokens=draw(st.integers(0, write)),
    )


@settings(max_examples=50, deadline=None)
@given(usage=usages())
@pytest.mark.parametrize(
    ("model", "url"),
    [
        ("claude-sonnet-4-5", ANTHROPIC_URL),  # cache writes by TTL, a tier above 200k input
        ("gpt-4o-mini", OPENAI_URL),  # flat prices, no cache-write price
        ("gemini-2.5-pro", "https://generativelanguage.googleapis.com"),  # tiered
    ],
)
def test_the_fast_lookup_prices_as_the_library_does(usage: Usage, model: str, url: str) -> None:
    assert TABLE.cost("p", url, model, usage) == pytest.approx(
        library(usage, model, url), rel=1e-9, abs=1e-12
    )


def test_provider_reported_cost_beats_every_table() -> None:
    reported = Usage(input_tokens=1_000_000, output_tokens=1_000_000, cost=0.0123)
    table = PriceTable({"p/gpt-4o": Price(input=100.0, output=100.0)})
    assert table.cost("p", OPENAI_URL, "gpt-4o", reported) == 0.0123
    assert TABLE.cost("p", OPENAI_URL, "gpt-4o", reported) == 0.0123
    # A reported zero is a figure too (a free model), not "unknown".
    assert TABLE.cost("p", None, "x", Usage(input_tokens=5, cost=0.0)) == 0.0


def test_configured_price_beats_the_library() -> None:
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    table = PriceTable({"openai/gpt-4o-mini": Price(input=1.0, output=3.0)})
    assert table.cost("openai", OPENAI_URL, "gpt-4o-mini", usage) == pytest.approx(4.0)
    assert TABLE.cost("openai", OPENAI_URL, "gpt-4o-mini", usage) == pytest.approx(
        library(usage, "gpt-4o-mini", OPENAI_URL)
    )
    # The key is the provider's configured name: another provider keeps the library price.
    assert table.cost("other", OPENAI_URL, "gpt-4o-mini", usage) != pytest.approx(4.0)


def test_configured_cache_prices_and_anthropic_ttl() -> None:
    # 10k input = 3k uncached + 4k cache reads + 3k cache writes (1k of them for an hour)
    price = Price(input=3.0, output=15.0, cache_read=0.3, cache_write=3.75, cache_write_1h=6.0)
    table = PriceTable({"a/m": price}, library=False)
    expected = (3_000 * 3.0 + 4_000 * 0.3 + 2_000 * 3.75 + 1_000 * 6.0 + 2_000 * 15.0) / 1e6
    assert table.cost("a", None, "m", USAGE) == pytest.approx(expected)
    # Cache prices left out are the input price (one-hour writes: the cache-write price).
    plain = PriceTable({"a/m": Price(input=3.0, output=15.0)}, library=False)
    assert plain.cost("a", None, "m", USAGE) == pytest.approx((10_000 * 3.0 + 2_000 * 15.0) / 1e6)


@pytest.mark.parametrize(
    ("url", "model"),
    [
        (OPENAI_URL, "no-such-model-anywhere"),
        ("http://127.0.0.1:8000/v1", "gpt-4o-mini"),  # a self-hosted URL: provider unknown
        (None, "gpt-4o-mini"),
    ],
)
def test_unknown_model_or_provider_costs_null_not_zero(url: str | None, model: str) -> None:
    # A fresh provider name: lookups are remembered per (provider, model).
    assert TABLE.cost(f"unknown-{url}", url, model, USAGE) is None


def test_request_cost_sums_attempts_and_stays_unknown_when_one_is() -> None:
    exchange = Exchange({"type": "http"})
    assert exchange.cost is None  # no attempt: nothing known
    failed = Attempt(number=1, provider="a", model="m", status=500, kind="server_error")
    answered = Attempt(number=2, provider="b", model="m", status=200, usage=USAGE, cost=0.25)
    exchange.attempts += [failed, answered]
    assert failed.charged() == 0.0  # no usage reported for the error: not billed
    assert exchange.cost == 0.25
    billed_failure = Attempt(number=3, provider="c", model="m", kind="timeout", cost=0.1)
    exchange.attempts.append(billed_failure)
    assert exchange.cost == pytest.approx(0.35)
    unpriced = Attempt(number=4, provider="d", model="m", status=200, usage=USAGE)
    exchange.attempts.append(unpriced)
    assert exchange.cost is None


def test_a_stream_cut_before_its_usage_costs_unknown_not_zero() -> None:
    """The provider answered (200) and billed what it generated before the cut; with no
    usage reported, nobody here knows how much."""
    cut = Attempt(number=1, provider="a", model="m", status=200, kind="connection")
    refused = Attempt(number=1, provider="a", model="m", kind="connection")  # no answer
    assert cut.charged() is None
    assert refused.charged() == 0.0


def test_header_formats() -> None:
    assert format_usage(USAGE) == (
        "input=10000, output=2000, cache_read=4000, cache_write=3000, cache_write_1h=1000,"
        " reasoning=500"
    )
    assert format_usage(Usage()) == "input=0, output=0"
    assert format_cost(0.00001) == "0.00001"  # never an exponent
    assert format_cost(0.0037756) == "0.0037756"
    assert format_cost(0.0) == "0"
    assert format_cost(12.5) == "12.5"
