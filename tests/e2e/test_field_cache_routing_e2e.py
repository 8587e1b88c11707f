"""The field cache when the conversation moves: between providers (fallback in the middle of
a tool loop), between inbound keys and credentials (never), between workers (through Redis),
and with each built-in rule switched off (the failure it fixes comes back)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from asgi_rotator.config import parse_config
from asgi_rotator.mock import Fault, MockUpstream
from asgi_rotator.stack import build_app
from tests.e2e.test_field_cache_e2e import (
    CLIENTS,
    UPSTREAMS,
    carried,
    converse,
    gateway_config,
    question,
    reasoning_on,
    upstream,
)
from tests.server import serve


@pytest.fixture(scope="module")
def mock_server() -> Iterator[tuple[MockUpstream, str]]:
    mock = MockUpstream()
    with serve(mock) as url:
        yield mock, url


@pytest.fixture
def mock(mock_server: tuple[MockUpstream, str]) -> Iterator[MockUpstream]:
    upstream = mock_server[0]
    upstream.clear()
    upstream.tool_steps = 1
    yield upstream
    upstream.clear()


def gateway(mock_url: str, **changes: Any) -> Any:
    field_cache = changes.pop("field_cache", {})
    data = gateway_config(mock_url, **field_cache)
    for section, values in changes.items():
        data[section] = {**data.get(section, {}), **values}
    return build_app(parse_config(data, {}), environ={})


# --- switching a built-in rule off brings its failure back ------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_without_the_gemini_rule_gemini_3_rejects_turn_two(
    stream: bool, mock_server: tuple[MockUpstream, str], mock: MockUpstream
) -> None:
    app = gateway(mock_server[1], field_cache={"builtin": {"gemini_thought_signatures": False}})
    with serve(app) as url, converse(url, "openai_chat", "think-gemini", stream=stream) as chat:
        first = chat.ask(question())
        with pytest.raises(openai.BadRequestError) as refused:
            chat.answer(first)
    assert "thought_signature" in str(refused.value)
    assert len(upstream(mock, "gemini")) == 2


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_without_the_anthropic_rule_turn_two_loses_thinking(
    stream: bool, mock_server: tuple[MockUpstream, str], mock: MockUpstream
) -> None:
    app = gateway(mock_server[1], field_cache={"builtin": {"anthropic_thinking": False}})
    with serve(app) as url, converse(url, "openai_chat", "think-claude", stream=stream) as chat:
        chat.run(question())
    first, second = upstream(mock, "anthropic_messages")
    assert reasoning_on("anthropic_messages", first.body)
    # No thinking block to start the tool-use turn with: thinking had to go.
    assert not reasoning_on("anthropic_messages", second.body)
    assert not carried("anthropic_messages", second.body, mock)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_without_the_responses_rule_reasoning_is_not_carried(
    stream: bool, mock_server: tuple[MockUpstream, str], mock: MockUpstream
) -> None:
    app = gateway(mock_server[1], field_cache={"builtin": {"openai_encrypted_reasoning": False}})
    with serve(app) as url, converse(url, "openai_chat", "think-openai", stream=stream) as chat:
        chat.run(question())
    first, second = upstream(mock, "openai_responses")
    assert "include" not in first.body
    assert not [i for i in second.body["input"] if i.get("type") == "reasoning"]


def test_field_cache_off_entirely(
    mock_server: tuple[MockUpstream, str], mock: MockUpstream
) -> None:
    app = gateway(mock_server[1], field_cache={"enabled": False})
    with serve(app) as url, converse(url, "openai_chat", "think-gemini", stream=False) as chat:
        first = chat.ask(question())
        with pytest.raises(openai.BadRequestError):
            chat.answer(first)


# --- fallback in the middle of a tool loop ---------------------------------------------------


@pytest.mark.parametrize(
    ("client", "stream"),
    [(c, False) for c in CLIENTS] + [("openai_chat", True), ("anthropic_messages", True)],
)
def test_fallback_anthropic_to_gemini_and_back_mid_tool_loop(
    client: str, stream: bool, mock_server: tuple[MockUpstream, str], mock: MockUpstream
) -> None:
    mock.tool_steps = 3
    # No cooldown layer: Anthropic's one failure must not keep it out of turn 3.
    app = gateway(mock_server[1], cooldown={"enabled": False})
    with serve(app) as url, converse(url, client, "claude-then-gemini", stream=stream) as talk:
        turns = [talk.ask(question())]
        mock.add_fault(Fault(status=529, protocol="anthropic_messages", times=1))
        turns.append(talk.answer(turns[-1]))  # Anthropic overloaded: Gemini answers
        turns.append(talk.answer(turns[-1]))  # Anthropic again
        turns.append(talk.answer(turns[-1]))
    assert [len(t.calls) for t in turns] == [1, 1, 1, 0]
    assert turns[-1].text == "Tool said: sunny"
    anthropic = upstream(mock, "anthropic_messages")
    gemini = upstream(mock, "gemini")
    assert len(anthropic) == 4 and len(gemini) == 1
    # Gemini got Anthropic's history with the documented placeholder, never a thinking block.
    contents = gemini[0].body["contents"]
    model_parts = [p for c in contents if c.get("role") == "model" for p in c["parts"]]
    assert model_parts[0]["thoughtSignature"] == "skip_thought_signature_validator"
    assert "thinking" not in str(contents)
    # Back on Anthropic, the step Gemini answered has no thinking block: thinking goes off
    # for that request (Anthropic's documented rule) rather than a 400.
    assert not reasoning_on("anthropic_messages", anthropic[2].body)
    # The step Anthropic answered first still goes back with its own thinking block.
    step_one = next(m for m in anthropic[2].body["messages"] if m["role"] == "assistant")
    assert step_one["content"][0]["signature"] in mock.issued.thinking


# --- isolation -------------------------------------------------------------------------------


def test_two_inbound_keys_never_share_cached_fields(
    mock_server: tuple[MockUpstream, str], mock: MockUpstream
) -> None:
    app = gateway(mock_server[1])
    with serve(app) as url:
        with converse(url, "openai_chat", "think-gemini", stream=False, key="alice") as alice:
            first = alice.ask(question())
        with converse(url, "openai_chat", "think-gemini", stream=False, key="mallory") as mallory:
            mallory.history = list(alice.history)
            with pytest.raises(openai.BadRequestError):
                mallory.answer(first)  # Alice's signature is not Mallory's to use
        with converse(url, "openai_chat", "think-gemini", stream=False, key="alice") as again:
            again.history = list(alice.history)
            assert again.answer(first).text == "Tool said: sunny"
    sent = upstream(mock, "gemini")
    mallory_parts = [
        p for c in sent[1].body["contents"] if c.get("role") == "model" for p in c["parts"]
    ]
    assert mallory_parts[0]["thoughtSignature"] == "skip_thought_signature_validator"
    alice_parts = [
        p for c in sent[2].body["contents"] if c.get("role") == "model" for p in c["parts"]
    ]
    assert alice_parts[0]["thoughtSignature"] in mock.issued.gemini_signatures


def test_encrypted_reasoning_never_goes_out_with_another_credential(
    mock_server: tuple[MockUpstream, str], mock: MockUpstream
) -> None:
    mock_url = mock_server[1]
    data = gateway_config(mock_url)
    data["providers"]["fc-responses"]["keys"] = ["key-one", "key-two"]
    data["cooldown"] = {"rotation": "round_robin"}
    app = build_app(parse_config(data, {}), environ={})
    with serve(app) as url, converse(url, "openai_chat", "think-openai", stream=False) as chat:
        turns = chat.run(question())
    assert turns[-1].text == "Tool said: sunny"
    first, second = upstream(mock, "openai_responses")
    assert first.key != second.key  # the pool rotated
    # Issued to the first key: OpenAI would answer invalid_encrypted_content for the second.
    assert not [i for i in second.body["input"] if i.get("type") == "reasoning"]


# --- stores ----------------------------------------------------------------------------------


@pytest.fixture
def redis_workers(
    mock_server: tuple[MockUpstream, str], redis_server: str
) -> Iterator[tuple[str, str]]:
    with (
        serve(gateway(mock_server[1], state={"backend": "redis", "url": redis_server})) as one,
        serve(gateway(mock_server[1], state={"backend": "redis", "url": redis_server})) as two,
    ):
        yield one, two


@pytest.mark.parametrize("family", list(UPSTREAMS))
def test_two_workers_on_redis_share_the_cache(
    family: str, redis_workers: tuple[str, str], mock: MockUpstream
) -> None:
    one, two = redis_workers
    model, protocol = UPSTREAMS[family]
    with converse(one, "openai_chat", model, stream=True) as chat:
        first = chat.ask(question())
    with converse(two, "openai_chat", model, stream=True) as chat_two:
        chat_two.history = list(chat.history)
        assert chat_two.answer(first).text == "Tool said: sunny"
    assert carried(protocol, upstream(mock, protocol)[1].body, mock)


def test_two_workers_with_memory_stores_do_not_share(
    mock_server: tuple[MockUpstream, str], mock: MockUpstream
) -> None:
    with serve(gateway(mock_server[1])) as one, serve(gateway(mock_server[1])) as two:
        with converse(one, "openai_chat", "think-gemini", stream=False) as chat:
            first = chat.ask(question())
        with converse(two, "openai_chat", "think-gemini", stream=False) as chat_two:
            chat_two.history = list(chat.history)
            with pytest.raises(openai.BadRequestError):
                chat_two.answer(first)
