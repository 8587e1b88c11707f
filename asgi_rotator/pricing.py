"""What a response cost, in USD: the provider's own figure first, else a price table.

Order, per attempt:

1. **Provider-reported.**  A codec that finds the provider's own figure in its usage object
   puts it on ``Usage.cost`` (``protocols._common.reported_cost``: OpenRouter ``usage.cost``
   plus ``cost_details.upstream_inference_cost`` on BYOK requests, xAI
   ``usage.cost_in_usd_ticks``).  It is what was billed, discounts included, so it wins.
2. **Configured prices** (``[prices."provider/model"]``, USD per million tokens), for a
   negotiated rate, a self-hosted model, or a model the library does not know yet.
3. **The library**: pydantic's ``genai-prices`` price data, matched by the provider's base
   URL (``api.openai.com``, ``openrouter.ai`` ...) and the model name.

Unknown stays unknown: a model that neither the configuration nor the library prices, or a
provider the library cannot place (a self-hosted URL), gives ``None``, never ``0``.

The library's own ``calc_price`` works through Decimal arithmetic and a unit registry on
every call, far too much to do for every response, so its prices are read once per
``(provider, model)`` into floats per token, tiers included, and the arithmetic below is the
library's rule: input includes cache reads and writes, which are priced at their own rates;
a tier's price applies to every token once the request's input passes the tier's start.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from msgspec import Struct

from .unified import Usage

__all__ = ["Price", "PriceTable", "Rates"]

_PER_MILLION = 1e-6
# Distinct (provider, model) pairs remembered; a client free to send any model name (a
# provider that lists none) must not grow this without bound.
_MAX_CACHED = 4096


class Price(Struct, kw_only=True, forbid_unknown_fields=True):
    """Configured prices, USD per million tokens.  A cache price left out is the input price
    (one-hour cache writes: the cache-write price)."""

    input: float
    output: float
    cache_read: float | None = None
    cache_write: float | None = None
    cache_write_1h: float | None = None  # Anthropic cache writes with the one-hour TTL


# A per-token price: flat, or tiered as ((start, price), ...) above ``base``, highest first.
_Unit = tuple[float, tuple[tuple[int, float], ...]]
# Per-token prices of the five kinds, in the order of ``Rates.cost``'s arithmetic.
_Prices = tuple[float, float, float, float, float]


class Rates:
    """Per-token prices for one model, ready for ``cost``.

    Tiers are resolved here, once: ``levels`` holds, highest first, the input size above
    which another set of prices applies (the library's tiers all count input tokens), so
    pricing a response is one comparison per tier and one sum."""

    __slots__ = ("base", "levels", "source")

    def __init__(
        self,
        *,
        input: _Unit,
        output: _Unit,
        cache_read: _Unit | None = None,
        cache_write: _Unit | None = None,
        cache_write_1h: _Unit | None = None,
        source: str,
    ) -> None:
        cache_read = cache_read or input
        cache_write = cache_write or input
        units = (input, cache_read, cache_write, cache_write_1h or cache_write, output)
        starts = sorted({start for _, tiers in units for start, _ in tiers}, reverse=True)
        self.base: _Prices = tuple(base for base, _ in units)  # type: ignore[assignment]
        self.levels: tuple[tuple[int, _Prices], ...] = tuple(
            (start, tuple(_price(unit, start + 1) for unit in units))  # type: ignore[misc]
            for start in starts
        )
        self.source = source  # "config" or "genai-prices"

    @classmethod
    def from_price(cls, price: Price) -> Rates:
        def unit(value: float | None) -> _Unit | None:
            return None if value is None else (value * _PER_MILLION, ())

        return cls(
            input=(price.input * _PER_MILLION, ()),
            output=(price.output * _PER_MILLION, ()),
            cache_read=unit(price.cache_read),
            cache_write=unit(price.cache_write),
            cache_write_1h=unit(price.cache_write_1h),
            source="config",
        )

    def cost(self, usage: Usage) -> float:
        inp = usage.input_tokens
        prices = self.base
        for start, level in self.levels:
            if inp > start:
                prices = level
                break
        uncached, read, write, write_1h, out = prices
        cache_read = usage.cache_read_tokens
        cache_write = usage.cache_write_tokens
        one_hour = usage.cache_write_1h_tokens
        fresh = inp - cache_read - cache_write
        return (
            uncached * (fresh if fresh > 0 else 0)
            + read * cache_read
            + write * (cache_write - one_hour)
            + write_1h * one_hour
            + out * usage.output_tokens
        )


def _price(unit: _Unit, input_tokens: int) -> float:
    base, tiers = unit
    for start, price in tiers:
        if input_tokens > start:
            return price
    return base


class PriceTable:
    """``cost(provider, api_url, model, usage)``: USD or ``None`` (unknown).

    ``prices`` maps ``"provider/model"`` (the provider's name in the configuration, the model
    as sent upstream) to a ``Price``; those win over the library.  ``library=False`` leaves
    the library out (only configured prices are known)."""

    __slots__ = ("_cache", "_configured", "_snapshot")

    def __init__(self, prices: Mapping[str, Price] | None = None, *, library: bool = True) -> None:
        self._configured = {key: Rates.from_price(p) for key, p in (prices or {}).items()}
        # Loading the library's data takes half a second: here, at startup, not on the
        # first request's event loop turn.
        self._snapshot = _load_snapshot() if library else None
        self._cache: dict[tuple[str, str], Rates | None] = {}

    def warm(self, targets: Iterable[tuple[str, str | None, str]]) -> None:
        """Look ``(provider, api_url, model)`` up now (a few ms each), for the models known
        at startup; others are looked up on their first response."""
        for provider, api_url, model in targets:
            self.rates(provider, api_url, model)

    def cost(self, provider: str, api_url: str | None, model: str, usage: Usage) -> float | None:
        if usage.cost is not None:
            return usage.cost  # the provider's own figure
        rates = self.rates(provider, api_url, model)
        return None if rates is None else rates.cost(usage)

    def rates(self, provider: str, api_url: str | None, model: str) -> Rates | None:
        key = (provider, model)
        try:
            return self._cache[key]
        except KeyError:
            pass
        rates = self._configured.get(f"{provider}/{model}")
        if rates is None and self._snapshot is not None and api_url is not None:
            rates = _library_rates(self._snapshot, api_url, model)
        if len(self._cache) >= _MAX_CACHED:
            self._cache.clear()
        self._cache[key] = rates
        return rates


def _load_snapshot() -> Any:
    try:
        from genai_prices import data_snapshot
    except ImportError:  # pragma: no cover - a declared dependency; guarded for embedders
        return None
    return data_snapshot.get_snapshot()


def _library_rates(snapshot: Any, api_url: str, model: str) -> Rates | None:
    try:
        _provider, info = snapshot.find_provider_model(model, None, None, api_url)
    except LookupError:
        return None
    prices = info.get_prices(datetime.now(UTC))
    found = {name: _unit(getattr(prices, f"{name}_mtok", None)) for name in _UNITS}
    if found["input"] is None or found["output"] is None:
        return None  # priced per request or per image only: not a token price we can use
    return Rates(**found, source="genai-prices")  # type: ignore[arg-type]


_UNITS = ("input", "output", "cache_read", "cache_write", "cache_write_1h")


def _unit(value: Any) -> _Unit | None:
    if value is None:
        return None
    tiers = getattr(value, "tiers", None)
    if tiers is None:
        return (float(value) * _PER_MILLION, ())
    ordered = sorted(tiers, key=lambda tier: tier.start, reverse=True)
    return (
        float(value.base) * _PER_MILLION,
        tuple((int(t.start), float(t.price) * _PER_MILLION) for t in ordered),
    )
