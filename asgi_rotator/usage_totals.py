"""Usage and cost totals by inbound key name, model and day, kept in a ``StateStore``.

With the Redis store every worker and machine adds to the same totals; ``asgi-rotator usage``
reads them back.  The store has counters (``incr``) and no key listing, so:

* each figure of a ``(day, key, model)`` row is one integer counter, expiring ``ttl`` after
  the day's first request;
* cost is counted in xAI's ticks (1 USD = 1e10), an integer, so totals add up exactly;
  a response of unknown cost adds to ``cost_unknown`` (the row's cost is then a lower bound);
* the rows of a day are listed under ``day:<day>`` and the days under ``days``, each a JSON
  list updated with ``compare_and_set`` (retried on a race); a process remembers the rows it
  listed, so a row's listing costs one write per process and day.

Days are UTC dates (``2026-12-06``).  A key name is the name of the inbound key (the
environment variable its value came from, or ``key1``, ``key2`` ...), never the key itself;
``-`` when no inbound keys are configured.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import msgspec

from .config import LoggingConfig
from .state import StateStore
from .unified import Usage

__all__ = ["FIELDS", "TICKS_PER_USD", "TotalsRow", "UsageTotals"]

TICKS_PER_USD = 10**10
# The counters of a row, in the order ``asgi-rotator usage`` prints them.
FIELDS = (
    "requests",
    "input",
    "output",
    "cache_read",
    "cache_write",
    "reasoning",
    "cost_ticks",
    "cost_unknown",
)
_MAX_ROWS_REMEMBERED = 10_000
_json_encode = msgspec.json.Encoder().encode
_json_decode = msgspec.json.Decoder(list[str]).decode


class TotalsRow(msgspec.Struct, kw_only=True):
    day: str
    key: str
    model: str
    requests: int = 0
    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0
    reasoning: int = 0
    cost_ticks: int = 0
    cost_unknown: int = 0

    @property
    def cost_usd(self) -> float:
        return self.cost_ticks / TICKS_PER_USD


class UsageTotals:
    """``add`` one request's usage and cost; ``rows`` reads them back."""

    def __init__(self, store: StateStore, *, ttl_days: int = LoggingConfig().totals_days) -> None:
        self.store = store
        self.ttl = ttl_days * 86400.0
        self._listed: set[tuple[str, str, str]] = set()

    async def add(
        self,
        key: str,
        model: str,
        usage: Usage | None,
        cost: float | None,
        *,
        now: float | None = None,
    ) -> None:
        day = _day(time.time() if now is None else now)
        row = f"{day}|{key}|{model}"
        usage = usage or Usage()
        counts = (
            1,
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_read_tokens,
            usage.cache_write_tokens,
            usage.reasoning_tokens,
            0 if cost is None else round(cost * TICKS_PER_USD),
            1 if cost is None else 0,
        )
        store, ttl = self.store, self.ttl
        for name, amount in zip(FIELDS, counts, strict=True):
            if amount or name == "requests":
                await store.incr(f"{row}|{name}", amount, ttl=ttl)
        if (day, key, model) not in self._listed:
            await self._list(day, f"{key}|{model}")
            if len(self._listed) >= _MAX_ROWS_REMEMBERED:
                self._listed.clear()
            self._listed.add((day, key, model))

    async def rows(self, days: Iterable[str] | None = None) -> list[TotalsRow]:
        """Every row of ``days`` (default: every day still kept), by day, key, model."""
        wanted = sorted(days) if days is not None else await self._members("days")
        out: list[TotalsRow] = []
        for day in wanted:
            for member in await self._members(f"day:{day}"):
                key, _, model = member.partition("|")
                values = await self.store.get_many(
                    [f"{day}|{key}|{model}|{name}" for name in FIELDS]
                )
                counts: dict[str, Any] = {
                    name: int(value) if value is not None else 0
                    for name, value in zip(FIELDS, values, strict=True)
                }
                if counts["requests"]:
                    out.append(TotalsRow(day=day, key=key, model=model, **counts))
        return out

    async def _list(self, day: str, member: str) -> None:
        await self._add_member(f"day:{day}", member)
        await self._add_member("days", day)

    async def _add_member(self, list_key: str, member: str) -> None:
        store = self.store
        for _ in range(100):  # a race lost means another writer listed something: read again
            current = await store.get(list_key)
            members = _json_decode(current) if current is not None else []
            if member in members:
                return
            value = _json_encode(sorted([*members, member]))
            if await store.compare_and_set(list_key, current, value, ttl=self.ttl):
                return
        raise RuntimeError(f"usage totals: could not update {list_key} (too much contention)")

    async def _members(self, list_key: str) -> list[str]:
        raw = await self.store.get(list_key)
        return _json_decode(raw) if raw is not None else []


def _day(epoch: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(epoch))


def format_rows(rows: list[TotalsRow]) -> str:
    """The table ``asgi-rotator usage`` prints: one line per day, key and model."""
    header = ("day", "key", "model", *FIELDS[:-2], "cost_usd", "cost_unknown")
    table = [header] + [
        (
            r.day,
            r.key,
            r.model,
            *(str(getattr(r, name)) for name in FIELDS[:-2]),
            f"{r.cost_usd:.6f}",
            str(r.cost_unknown),
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if i < 3 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in table
    )


def print_usage(config: Any, *, days: list[str] | None = None, as_json: bool = False) -> int:
    """``asgi-rotator usage``: the totals in the configured store, printed."""
    import os
    import sys

    import anyio

    from .stack import make_store

    if config.state.backend == "memory":
        print(
            "asgi-rotator: state.backend is memory, so usage totals live only inside the "
            "serving process; use the file or redis backend to read them here",
            file=sys.stderr,
        )
        return 2

    async def read() -> list[TotalsRow]:
        store = make_store(config, "usage", os.environ)
        try:
            return await UsageTotals(store).rows(days)
        finally:
            await store.aclose()

    rows = anyio.run(read)
    if as_json:
        for row in rows:
            line = msgspec.structs.asdict(row)
            line["cost_usd"] = row.cost_usd
            print(msgspec.json.encode(line).decode())
    else:
        print(format_rows(rows) if rows else "no usage recorded")
    return 0
