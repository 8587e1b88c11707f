"""Usage and cost where users read them: response headers through the official SDKs
(``with_raw_response``), the stream close record, the request log, and the totals by key.

The gateway runs behind a real uvicorn server, the mock upstream behind another; the
configured prices are per million tokens, so the expected cost is computed from the counts
the client itself was told."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import jsonschema
import openai
import pytest

from asgi_rotator.config import parse_config
from asgi_rotator.mock import Fault, MockUpstream
from asgi_rotator.stack import Gateway, build_app
from tests.e2e.conftest import provider_config, wait_for
from tests.jsonl_log import records as read_records
from tests.server import serve

pytestmark = pytest.mark.slow

SCHEMA = json.loads((Path(__file__).parents[2] / "docs" / "request-log.schema.json").read_text())
CLIENT_KEY = "sk-team-a-0123456789"
PRICE = {"input": 1.0, "output": 2.0, "cache_read": 0.5}  # USD per million tokens
REPORTED = 0.0421  # what the "billed" upstream says each response cost


@pytest.fixture(scope="module")
def billed_mock() -> Iterator[str]:
    """An upstream that reports its own cost (OpenRouter's usage.cost)."""
    with serve(MockUpstream(reported_cost=REPORTED)) as url:
        yield url


@pytest.fixture(scope="module")
def setup(
    mock_server: tuple[MockUpstream, str], billed_mock: str, tmp_path_factory: Any
) -> Iterator[tuple[str, Gateway, Path, Path]]:
    directory = tmp_path_factory.mktemp("usage")
    log, close_log = directory / "requests.jsonl", directory / "close.jsonl"
    providers = provider_config(mock_server[1])
    providers["up-billed"] = {
        "protocol": "openai_chat",
        "base_url": f"{billed_mock}/v1",
        "keys": ["key-billed-secret"],
    }
    prices = {
        f"{name}/{model}": PRICE
        for name in providers
        for model in ("mock-gpt", "mock-claude", "mock-gemini", "good")
    }
    config = parse_config(
        {
            "providers": providers,
            "groups": {"with-fallback": {"targets": ["up-chat/bad", "up-anthropic/good"]}},
            "prices": prices,
            "server": {"inbound_keys": ["env:TEAM_A"]},
            "stream": {"close_log": str(close_log)},
            "logging": {"requests": str(log), "totals": True},
        },
        {},
    )
    gateway = build_app(config, environ={"TEAM_A": CLIENT_KEY})
    with serve(gateway) as url:
        yield url, gateway, log, close_log


def expected_cost(inp: int, out: int, cached: int = 0) -> float:
    return (
        (inp - cached) * PRICE["input"] + cached * PRICE["cache_read"] + out * PRICE["output"]
    ) / 1e6


def usage_header(value: str) -> dict[str, int]:
    return {k.strip(): int(v) for k, v in (item.split("=") for item in value.split(","))}


def log_lines(path: Path) -> list[dict[str, Any]]:
    return read_records(path)


def last_line(path: Path, model: str, *, stream: bool = False) -> dict[str, Any]:
    """The newest line for ``model`` (a streamed request's, with ``stream``): lines are
    written once the response is out, so a client may read the file before its line is
    there."""
    found = wait_for(
        lambda: [
            line for line in log_lines(path) if line["model"] == model and line["stream"] == stream
        ],
        timeout=10,
    )
    assert found, f"no line for {model} in {path}"
    return found[-1]


def openai_client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=CLIENT_KEY, max_retries=0)


def test_chat_headers_carry_usage_and_cost(setup: Any, mock: MockUpstream) -> None:
    url, *_ = setup
    with openai_client(url) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="up-chat/mock-gpt", messages=[{"role": "user", "content": "hello there"}]
        )
    body = raw.parse()
    usage = body.usage
    assert usage is not None
    assert usage_header(raw.headers["x-asgi-rotator-usage"]) == {
        "input": usage.prompt_tokens,
        "output": usage.completion_tokens,
    }
    assert float(raw.headers["x-asgi-rotator-cost-usd"]) == pytest.approx(
        expected_cost(usage.prompt_tokens, usage.completion_tokens), rel=1e-9
    )
    assert raw.headers["x-rotator-attempts"] == "1"


def test_responses_headers_count_cache_and_reasoning_inside(setup: Any, mock: MockUpstream) -> None:
    """Translated (Responses client, Anthropic upstream) with reasoning: the mock caches 10
    tokens and reasons, and both are parts of the totals in the header."""
    url, *_ = setup
    with openai_client(url) as client:
        raw = client.responses.with_raw_response.create(
            model="up-anthropic/mock-claude",
            input="think about hello",
            reasoning={"effort": "low"},
        )
    usage = raw.parse().usage
    assert usage is not None
    counts = usage_header(raw.headers["x-asgi-rotator-usage"])
    assert counts["input"] == usage.input_tokens
    assert counts["output"] == usage.output_tokens
    assert counts["cache_read"] == usage.input_tokens_details.cached_tokens == 10
    assert float(raw.headers["x-asgi-rotator-cost-usd"]) == pytest.approx(
        expected_cost(usage.input_tokens, usage.output_tokens, cached=10), rel=1e-9
    )


def test_anthropic_headers(setup: Any, mock: MockUpstream) -> None:
    url, *_ = setup
    with anthropic.Anthropic(base_url=url, api_key=CLIENT_KEY, max_retries=0) as client:
        raw = client.messages.with_raw_response.create(
            model="up-gemini/mock-gemini",
            max_tokens=100,
            messages=[{"role": "user", "content": "hello"}],
        )
    usage = raw.parse().usage
    total_input = (
        usage.input_tokens
        + (usage.cache_read_input_tokens or 0)
        + (usage.cache_creation_input_tokens or 0)
    )
    assert usage_header(raw.headers["x-asgi-rotator-usage"])["input"] == total_input
    assert float(raw.headers["x-asgi-rotator-cost-usd"]) == pytest.approx(
        expected_cost(total_input, usage.output_tokens), rel=1e-9
    )


def test_provider_reported_cost_beats_the_price_table(setup: Any) -> None:
    url, *_ = setup
    with openai_client(url) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="up-billed/mock-gpt", messages=[{"role": "user", "content": "hello"}]
        )
    assert float(raw.headers["x-asgi-rotator-cost-usd"]) == pytest.approx(REPORTED)


def test_unknown_price_gives_no_cost(setup: Any, mock: MockUpstream) -> None:
    """No configured price, and a base URL the library cannot place: unknown, not zero."""
    url, _gateway, log, _ = setup
    with openai_client(url) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="up-chat/unpriced-model", messages=[{"role": "user", "content": "hello"}]
        )
    assert "x-asgi-rotator-cost-usd" not in raw.headers
    assert "x-asgi-rotator-usage" in raw.headers
    line = last_line(log, "up-chat/unpriced-model")
    assert line["cost"] is None
    assert line["attempts"][0]["cost"] is None


def test_fallback_cost_is_the_sum_over_attempts(setup: Any, mock: MockUpstream) -> None:
    url, _gateway, log, _ = setup
    mock.add_fault(Fault(status=500, model="bad", times=None))
    with openai_client(url) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="with-fallback", messages=[{"role": "user", "content": "hello"}]
        )
    usage = raw.parse().usage
    assert usage is not None
    cost = float(raw.headers["x-asgi-rotator-cost-usd"])
    assert cost == pytest.approx(expected_cost(usage.prompt_tokens, usage.completion_tokens))
    line = last_line(log, "with-fallback")
    # The first target is retried (cooldown) before the group moves on: every failed try is
    # an attempt, and each costs what its provider reported (nothing: no usage on a 500).
    *failed, answered = line["attempts"]
    assert raw.headers["x-rotator-attempts"] == str(len(line["attempts"]))
    assert failed
    for attempt in failed:
        assert (attempt["target"], attempt["status"]) == ("up-chat/bad", 500)
        assert attempt["kind"] == "server_error"
        assert attempt["usage"] is None
        assert attempt["cost"] == 0.0
    assert answered["target"] == "up-anthropic/good"
    assert answered["cost"] == pytest.approx(cost)
    assert line["cost"] == pytest.approx(sum(a["cost"] for a in line["attempts"]))


def test_stream_close_record_and_request_log_carry_usage_and_cost(
    setup: Any, mock: MockUpstream
) -> None:
    url, _gateway, log, close_log = setup
    with openai_client(url) as client:
        stream = client.chat.completions.create(
            model="up-gemini/mock-gemini",
            messages=[{"role": "user", "content": "stream to me"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    usage = chunks[-1].usage
    assert usage is not None
    cost = expected_cost(usage.prompt_tokens, usage.completion_tokens)
    # This stream's record: the log has the plain requests' records too, and a record is
    # written once the response has ended, maybe after the client read its last chunk.
    records = wait_for(
        lambda: [
            record for record in read_records(close_log) if record["response_id"] == chunks[0].id
        ],
        timeout=10,
    )
    assert records, "no close record for the stream"
    close = records[-1]
    assert close["reason"] == "completed"
    assert close["usage"]["input_tokens"] == usage.prompt_tokens
    assert close["usage"]["output_tokens"] == usage.completion_tokens
    assert close["cost"] == pytest.approx(cost)
    line = last_line(log, "up-gemini/mock-gemini", stream=True)
    assert line["stream"] is True
    assert line["close_reason"] == "completed"
    assert line["usage"]["input"] == usage.prompt_tokens
    assert line["cost"] == pytest.approx(cost)
    assert line["ttfb"] is not None and line["ttfb"] <= line["duration"]


def test_every_log_line_follows_the_documented_schema_and_holds_no_secret(
    setup: Any, mock: MockUpstream
) -> None:
    url, _gateway, log, _ = setup
    with openai_client(url) as client:
        client.chat.completions.create(
            model="up-chat/mock-gpt", messages=[{"role": "user", "content": "a secret prompt"}]
        )
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="up-chat/mock-gpt", messages=[])
        # A client pasting its key into the model name: the line names the model redacted.
        try:
            client.chat.completions.create(
                model=f"up-chat/{CLIENT_KEY}", messages=[{"role": "user", "content": "x"}]
            )
        except openai.APIStatusError:
            pass
    assert last_line(log, "up-chat/[redacted]")["key"] == "TEAM_A"
    # Refused before it was parsed: still a line, with no model and no attempt.
    refused = httpx.post(
        f"{url}/v1/chat/completions",
        content=b'{"model": "up-chat/mock-gpt", "messages": [',
        headers={"authorization": f"Bearer {CLIENT_KEY}"},
    )
    assert refused.status_code == 400
    found = wait_for(
        lambda: [
            line
            for line in log_lines(log)
            if line["status"] == 400 and line["model"] is None and not line["attempts"]
        ],
        timeout=10,
    )
    assert found and found[-1]["error"] == "bad_request"
    assert found[-1]["close_reason"] == "error" and found[-1]["cost"] is None
    text = log.read_text()
    lines = log_lines(log)
    for line in lines:
        jsonschema.validate(line, SCHEMA)
        assert line["key"] == "TEAM_A"
    for secret in (CLIENT_KEY, "key-up-chat", "key-billed-secret", "a secret prompt", "Hello from"):
        assert secret not in text


@pytest.mark.parametrize("model", ["up-chat/mock-gpt", "up-anthropic/mock-claude"])
def test_chat_client_asks_for_the_cost_in_band(setup: Any, mock: MockUpstream, model: str) -> None:
    """OpenRouter's ``usage: {"include": true}``: the request's cost in the usage object, plain
    and in the final usage chunk of a stream; the option itself is not sent upstream."""
    url, *_ = setup
    with openai_client(url) as client:
        raw = client.chat.completions.with_raw_response.create(
            model=model,
            messages=[{"role": "user", "content": "what does this cost"}],
            extra_body={"usage": {"include": True}},
        )
        usage = raw.parse().usage
        assert usage is not None
        cost = expected_cost(usage.prompt_tokens, usage.completion_tokens)
        assert (usage.model_extra or {})["cost"] == pytest.approx(cost)
        assert float(raw.headers["x-asgi-rotator-cost-usd"]) == pytest.approx(cost)
        chunks = list(
            client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": "what does this cost"}],
                stream=True,
                extra_body={"usage": {"include": True}},
            )
        )
    final = chunks[-1]
    assert final.choices == [] and final.usage is not None
    assert (final.usage.model_extra or {})["cost"] == pytest.approx(
        expected_cost(final.usage.prompt_tokens, final.usage.completion_tokens)
    )
    assert all(c.usage is None for c in chunks[:-1])
    for sent in mock.requests:
        assert "usage" not in sent.body


def test_without_asking_no_cost_in_the_body(setup: Any, mock: MockUpstream) -> None:
    url, *_ = setup
    with openai_client(url) as client:
        body = client.chat.completions.create(
            model="up-chat/mock-gpt", messages=[{"role": "user", "content": "hello"}]
        )
    assert body.usage is not None
    assert "cost" not in (body.usage.model_extra or {})
