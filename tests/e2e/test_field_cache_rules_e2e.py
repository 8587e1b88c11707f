"""Configured field-cache rules ([[field_cache.rules]]): a value the provider answered with
goes back in the next request, plain and streamed, through the real stack."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from asgi_rotator.config import ConfigError, parse_config
from asgi_rotator.mock import MockUpstream
from asgi_rotator.stack import build_app
from tests.server import serve


@pytest.fixture(scope="module")
def mock_server() -> Iterator[tuple[MockUpstream, str]]:
    mock = MockUpstream()
    with serve(mock) as url:
        yield mock, url


def config(mock_url: str, rules: list[dict[str, Any]]) -> Any:
    return parse_config(
        {
            "providers": {
                "echo": {
                    "protocol": "anthropic_messages",
                    "base_url": mock_url,
                    "keys": ["k"],
                    "models": ["claude-echo"],
                }
            },
            "field_cache": {"rules": rules},
        },
        {},
    )


# The answer's id goes back in the next request's metadata: the shape of a backend that
# wants its session id repeated.
ECHO_ID = {
    "name": "echo-message-id",
    "match": {"provider": "echo", "model": "claude-*"},
    "source": "response",
    "path": "id",
    "mode": "last",
    "scope": ["inbound", "provider"],
    "inject": {"path": "metadata.previous_id", "when": "always"},
}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_configured_rule_carries_a_native_field_to_the_next_request(
    stream: bool, mock_server: tuple[MockUpstream, str]
) -> None:
    mock, mock_url = mock_server
    mock.clear()
    rule = dict(ECHO_ID, source="stream", path="message.id") if stream else ECHO_ID
    with serve(build_app(config(mock_url, [rule]), environ={})) as url:
        client = anthropic.Anthropic(base_url=url, api_key="client", max_retries=0)
        with client:
            ask: Any = {"model": "claude-echo", "max_tokens": 64}
            ask["messages"] = [{"role": "user", "content": "hello"}]
            if stream:
                with client.messages.stream(**ask) as events:
                    first = events.get_final_message()
            else:
                first = client.messages.create(**ask)
            client.messages.create(**ask)
        other = anthropic.Anthropic(base_url=url, api_key="someone-else", max_retries=0)
        with other:
            other.messages.create(**ask)
    sent = [r.body for r in mock.requests if r.protocol == "anthropic_messages"]
    assert "previous_id" not in sent[0].get("metadata", {})
    assert sent[1]["metadata"]["previous_id"] == first.id
    # Always scoped by inbound key: another client never gets it.
    assert "previous_id" not in sent[2].get("metadata", {})


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"path": "content[?type"}, "field_cache.rules[0].path"),
        ({"mode": "sometimes"}, "field_cache.rules[0].mode"),
        ({"scope": ["planet"]}, "field_cache.rules[0].scope"),
        ({"inject": {"path": "content[0]"}}, "field_cache.rules[0].inject.path"),
        ({"inject": {"path": "x", "when": "never"}}, "field_cache.rules[0].inject.when"),
    ],
)
def test_rule_config_errors_name_the_path(change: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config({"field_cache": {"rules": [{**ECHO_ID, **change}]}}, {})
    assert path in str(error.value)
