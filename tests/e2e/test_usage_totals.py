"""Usage totals by inbound key, model and day, and ``asgi-rotator usage`` printing them:
in process on the memory store, and across processes on a real Redis."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from asgi_rotator.cli import main
from asgi_rotator.config import parse_config
from asgi_rotator.middleware.request_log import RequestLog
from asgi_rotator.stack import Gateway, build_app
from asgi_rotator.state import MemoryStore
from asgi_rotator.unified import Usage
from asgi_rotator.usage_totals import UsageTotals, format_rows
from tests.e2e.conftest import provider_config, wait_for
from tests.server import serve

PRICE = {"input": 1.0, "output": 2.0}
KEYS = {"TEAM_A": "sk-team-a-secret-1", "TEAM_B": "sk-team-b-secret-2"}


def gateway_config(mock_url: str, state: dict[str, Any]) -> Any:
    providers = provider_config(mock_url)
    return parse_config(
        {
            "providers": providers,
            "prices": {"up-chat/mock-gpt": PRICE, "up-anthropic/mock-claude": PRICE},
            "server": {"inbound_keys": ["env:TEAM_A", "env:TEAM_B"]},
            "logging": {"totals": True},
            "state": state,
        },
        {},
    )


def totals_of(gateway: Gateway) -> UsageTotals:
    app = gateway.app
    while not isinstance(app, RequestLog):
        app = app.app
    assert app.totals is not None
    return app.totals


@pytest.mark.anyio
async def test_totals_on_the_memory_store(mock_server: Any) -> None:
    """In process (one event loop for the gateway, its store and the SDK client)."""
    gateway = build_app(gateway_config(mock_server[1], {"backend": "memory"}), environ=KEYS)
    try:
        for key, model, times in (
            ("TEAM_A", "up-chat/mock-gpt", 2),
            ("TEAM_B", "up-chat/mock-gpt", 1),
            ("TEAM_B", "up-gemini/unpriced", 1),
        ):
            transport = httpx.ASGITransport(app=gateway)
            async with openai.AsyncOpenAI(
                base_url="http://gateway/v1",
                api_key=KEYS[key],
                max_retries=0,
                http_client=httpx.AsyncClient(transport=transport),
            ) as client:
                for _ in range(times):
                    await client.chat.completions.create(
                        model=model, messages=[{"role": "user", "content": "count me please"}]
                    )
        rows = {(r.key, r.model): r for r in await totals_of(gateway).rows()}
    finally:
        await gateway.aclose()
    a = rows["TEAM_A", "up-chat/mock-gpt"]
    b = rows["TEAM_B", "up-chat/mock-gpt"]
    assert (a.requests, b.requests) == (2, 1)
    assert a.input == 2 * b.input and a.output == 2 * b.output
    assert a.cost_ticks == 2 * b.cost_ticks
    assert a.cost_usd == pytest.approx(2 * (b.input * 1.0 + b.output * 2.0) / 1e6)
    unpriced = rows["TEAM_B", "up-gemini/unpriced"]
    assert (unpriced.cost_unknown, unpriced.cost_ticks) == (1, 0)  # unknown, not zero
    table = format_rows(list(rows.values()))
    assert "TEAM_A" in table and "up-gemini/unpriced" in table
    assert all(secret not in table for secret in KEYS.values())


@pytest.mark.anyio
async def test_totals_add_up_by_day() -> None:
    totals = UsageTotals(MemoryStore())
    day1, day2 = 1_780_000_000.0, 1_780_000_000.0 + 86400
    await totals.add("k", "p/m", Usage(input_tokens=10, output_tokens=5), 0.25, now=day1)
    await totals.add("k", "p/m", Usage(input_tokens=1, output_tokens=1), 0.5, now=day1)
    await totals.add("k", "p/m", Usage(input_tokens=7, output_tokens=3), None, now=day2)
    first, second = await totals.rows()
    assert (first.day, first.requests, first.input, first.output) == ("2026-05-28", 2, 11, 6)
    assert first.cost_usd == 0.75 and first.cost_unknown == 0
    assert (second.day, second.requests, second.cost_ticks, second.cost_unknown) == (
        "2026-05-29",
        1,
        0,
        1,
    )
    assert [r.day for r in await totals.rows(["2026-05-29"])] == ["2026-05-29"]


@pytest.mark.slow
def test_usage_command_on_redis(
    mock_server: Any, redis_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two gateways (as two workers would) share one Redis; the command, a separate store
    client, prints what both counted."""
    state = {"backend": "redis", "url": redis_server}
    config = gateway_config(mock_server[1], state)
    path = tmp_path / "gateway.json"
    path.write_text(
        json.dumps(
            {
                "providers": provider_config(mock_server[1]),
                "state": state,
            }
        )
    )
    with (
        serve(build_app(config, environ=KEYS)) as one,
        serve(build_app(config, environ=KEYS)) as two,
    ):
        for url in (one, two):
            with openai.OpenAI(base_url=f"{url}/v1", api_key=KEYS["TEAM_A"], max_retries=0) as c:
                c.chat.completions.create(
                    model="up-anthropic/mock-claude",
                    messages=[{"role": "user", "content": "redis counts"}],
                )

        def printed() -> list[dict[str, Any]]:
            capsys.readouterr()
            assert main(["usage", "--config", str(path), "--json"]) == 0
            rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
            return [
                r for r in rows if r["model"] == "up-anthropic/mock-claude" and r["requests"] >= 2
            ]

        rows = wait_for(printed, timeout=5)
    assert rows, "the command did not print both requests"
    (row,) = rows
    assert row["key"] == "TEAM_A"
    assert row["requests"] == 2
    assert row["cost_usd"] == pytest.approx((row["input"] * 1.0 + row["output"] * 2.0) / 1e6)
    assert main(["usage", "--config", str(path)]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:3] == ["day", "key", "model"]
    assert "up-anthropic/mock-claude" in table


def test_usage_command_refuses_the_memory_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gateway.json"
    path.write_text(json.dumps({"state": {"backend": "memory"}}))
    assert main(["usage", "--config", str(path)]) == 2
    assert "memory" in capsys.readouterr().err
