"""Adapters ([[field_cache.adapters]]): per-provider and per-model request shaping, seen in
what the upstream received."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from asgi_rotator.config import ConfigError, parse_config
from asgi_rotator.mock import MockUpstream
from asgi_rotator.stack import build_app
from tests.server import serve

ADAPTERS = [
    {"adapter": "model_override", "match": {"model": "alias-*"}, "options": {"model": "real-1"}},
    {"adapter": "developer_role", "match": {"provider": "chat"}},
    {"adapter": "reasoning", "match": {"model": "no-think*"}, "options": {"knob": "none"}},
    {"adapter": "drop_fields", "match": {"provider": "chat"}, "options": {"paths": ["seed"]}},
    {
        "adapter": "field_rename",
        "match": {"model": "renames"},
        "options": {"from": "max_tokens", "to": "max_completion_tokens"},
    },
    {"adapter": "reasoning", "match": {"provider": "claude"}, "options": {"knob": "budget"}},
]


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[MockUpstream, str]]:
    mock = MockUpstream()
    with serve(mock) as mock_url:
        config = parse_config(
            {
                "providers": {
                    "chat": {
                        "protocol": "openai_chat",
                        "base_url": f"{mock_url}/v1",
                        "keys": ["k"],
                        "models": ["alias-a", "no-think-1", "renames", "plain"],
                    },
                    "claude": {
                        "protocol": "anthropic_messages",
                        "base_url": mock_url,
                        "keys": ["k"],
                        "models": ["claude-x"],
                    },
                },
                "field_cache": {"adapters": ADAPTERS},
            },
            {},
        )
        with serve(build_app(config, environ={})) as url:
            yield mock, url


def sent(upstream: tuple[MockUpstream, str], model: str, **kwargs: Any) -> dict[str, Any]:
    mock, url = upstream
    mock.clear()
    with openai.OpenAI(base_url=f"{url}/v1", api_key="c", max_retries=0) as client:
        client.chat.completions.create(
            model=model,
            messages=[
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": "hi"},
            ],
            **kwargs,
        )
    return mock.requests[-1].body  # type: ignore[no-any-return]


def test_model_override(upstream: tuple[MockUpstream, str]) -> None:
    assert sent(upstream, "alias-a")["model"] == "real-1"
    assert sent(upstream, "plain")["model"] == "plain"


def test_developer_role_sent_as_system(upstream: tuple[MockUpstream, str]) -> None:
    body = sent(upstream, "plain")
    assert [m["role"] for m in body["messages"]] == ["system", "user"]


def test_reasoning_knob_none_drops_reasoning(upstream: tuple[MockUpstream, str]) -> None:
    assert "reasoning_effort" not in sent(upstream, "no-think-1", reasoning_effort="low")
    assert sent(upstream, "plain", reasoning_effort="low")["reasoning_effort"] == "low"


def test_drop_fields_and_field_rename(upstream: tuple[MockUpstream, str]) -> None:
    assert "seed" not in sent(upstream, "plain", seed=7)
    body = sent(upstream, "renames", max_tokens=50)
    assert body["max_completion_tokens"] == 50 and "max_tokens" not in body


def test_reasoning_effort_becomes_a_budget(upstream: tuple[MockUpstream, str]) -> None:
    body = sent(upstream, "claude/claude-x", reasoning_effort="high")
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 24576}


@pytest.mark.parametrize(
    ("entry", "path"),
    [
        ({"adapter": "teleport"}, "field_cache.adapters[0].adapter"),
        ({"adapter": "model_override"}, "field_cache.adapters[0].options.model"),
        (
            {"adapter": "reasoning", "options": {"knob": "loud"}},
            "field_cache.adapters[0].options.knob",
        ),
        (
            {"adapter": "drop_fields", "options": {"paths": ["a[0]"]}},
            "field_cache.adapters[0].options.paths[0]",
        ),
        (
            {"adapter": "developer_role", "options": {"colour": 1}},
            "field_cache.adapters[0].options",
        ),
        ({"adapter": "developer_role", "match": {"planet": "x"}}, "field_cache.adapters[0].match"),
    ],
)
def test_adapter_config_errors_name_the_path(entry: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config({"field_cache": {"adapters": [entry]}}, {})
    assert path in str(error.value)
