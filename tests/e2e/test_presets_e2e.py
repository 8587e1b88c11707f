"""The coding tools' backends through their presets: each one end to end, driven by the
official SDK of the protocol it speaks, against the mock's emulation of the backend (which
refuses what the real one refuses), plain and streamed: text, a tool call, usage."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from asgi_rotator.config import parse_config
from asgi_rotator.mock import Fault, MockUpstream
from asgi_rotator.mock.backends import MockBackends
from asgi_rotator.stack import build_app
from tests.e2e.clients import DRIVERS, TOOL_OUTPUT
from tests.server import serve

TOKENS = {
    "claude_code": "oauth-claude-token",
    "codex": "oauth-codex-token",
    "copilot": "copilot-session-token",
    "gemini_cli": "ya29.gemini-cli-token",
    "antigravity": "ya29.antigravity-token",
}
PROJECT = "mock-project-1"
ACCOUNT = "acct-mock-1"
# preset -> (the protocol its clients speak, a model)
PRESETS = {
    "claude_code": ("anthropic_messages", "claude-sonnet-4-5"),
    "codex": ("openai_responses", "gpt-5-codex"),
    "copilot": ("openai_chat", "gpt-4.1"),
    "gemini_cli": ("gemini", "gemini-2.5-pro"),
    "antigravity": ("gemini", "gemini-2.5-flash"),
}


def _credential(preset: str) -> dict[str, Any]:
    # A static token with the context the backend's auth strategy would discover (the
    # strategies themselves are tested on their own).
    context = {"codex": {"account_id": ACCOUNT}}.get(preset, {"project": PROJECT})
    return {"strategy": "keys", "keys": [TOKENS[preset]], "context": context}


@pytest.fixture(scope="module")
def backends() -> Iterator[tuple[MockBackends, str]]:
    mock = MockBackends(
        MockUpstream(),
        tokens=set(TOKENS.values()),
        projects={PROJECT},
        account_ids={ACCOUNT},
    )
    with serve(mock) as mock_url:
        providers: dict[str, Any] = {
            name: {
                "preset": name,
                "base_url": f"{mock_url}/{name}",
                "credential": _credential(name),
            }
            for name in PRESETS
        }
        # A backend declared from steps alone, no preset: Code Assist as Gemini CLI speaks it.
        providers["my_code_assist"] = {
            "protocol": "gemini",
            "base_url": f"{mock_url}/gemini_cli",
            "auth": "bearer",
            "credential": _credential("gemini_cli"),
            "shaping": [
                {
                    "step": "envelope",
                    "options": {
                        "wrap": "request",
                        "fields": {"model": "{model}", "project": "{project}"},
                        "unwrap": "response",
                        "path": "/v1internal:{method}",
                    },
                }
            ],
        }
        # The preset without the project its envelope needs.
        providers["no_project"] = {
            "preset": "gemini_cli",
            "base_url": f"{mock_url}/gemini_cli",
            "keys": [TOKENS["gemini_cli"]],
        }
        providers["strict"] = {
            "preset": "copilot",
            "base_url": f"{mock_url}/copilot",
            "keys": [TOKENS["copilot"]],
            "shaping": [{"step": "body_rules", "options": {"refuse": ["seed"]}}],
        }
        config = parse_config({"providers": providers, "cooldown": {"max_attempts": 1}}, {})
        with serve(build_app(config, environ={})) as url:
            yield mock, url


@pytest.fixture
def gateway(backends: tuple[MockBackends, str]) -> Iterator[tuple[MockBackends, str]]:
    backends[0].clear()
    yield backends
    backends[0].clear()


def _passed(mock: MockBackends, backend: str) -> list[Any]:
    return [r for r in mock.requests if r.backend == backend and r.status == 200]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("preset", list(PRESETS))
def test_text_and_usage(gateway: tuple[MockBackends, str], preset: str, stream: bool) -> None:
    mock, url = gateway
    protocol, model = PRESETS[preset]
    with DRIVERS[protocol](url) as driver:
        result = driver.ask(f"{preset}/{model}", "Hello there", stream=stream)
    assert "You said: Hello there" in result.text
    # The mock counts words: 2 + 10 in, the reply's words out.
    assert result.input_tokens == 12
    assert result.output_tokens == len(result.text.split())
    (seen,) = _passed(mock, preset)
    assert seen.headers["authorization"] == f"Bearer {TOKENS[preset]}"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("preset", list(PRESETS))
def test_tool_call_round_trip(gateway: tuple[MockBackends, str], preset: str, stream: bool) -> None:
    _, url = gateway
    protocol, model = PRESETS[preset]
    with DRIVERS[protocol](url) as driver:
        first, second = driver.tool_round_trip(f"{preset}/{model}", stream=stream)
    assert [c.name for c in first.calls] == ["get_weather"]
    assert first.calls[0].arguments == {"location": "Paris"}
    assert first.output_tokens == 10
    assert second.text == f"Tool said: {TOOL_OUTPUT}"


def test_claude_code_sends_the_oauth_beta_beside_the_clients(
    gateway: tuple[MockBackends, str],
) -> None:
    mock, url = gateway
    with anthropic.Anthropic(base_url=url, api_key="client-key", max_retries=0) as client:
        client.messages.create(
            model="claude_code/claude-sonnet-4-5",
            max_tokens=64,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"anthropic-beta": "interleaved-thinking-2025-05-14"},
        )
    (seen,) = _passed(mock, "claude_code")
    assert "x-api-key" not in seen.headers
    betas = seen.headers["anthropic-beta"].split(",")
    assert betas == ["interleaved-thinking-2025-05-14", "oauth-2025-04-20"]


def test_codex_body_rules_and_forced_stream(gateway: tuple[MockBackends, str]) -> None:
    mock, url = gateway
    with openai.OpenAI(base_url=f"{url}/v1", api_key="client-key", max_retries=0) as client:
        response = client.responses.create(
            model="codex/gpt-5-codex", input="Hello there", max_output_tokens=50
        )
    assert response.object == "response"
    assert "You said: Hello there" in response.output_text
    (seen,) = _passed(mock, "codex")
    assert seen.headers["chatgpt-account-id"] == ACCOUNT
    body = seen.body
    # A plain client, a streamed upstream; what the backend refuses left out.
    assert body["stream"] is True
    assert body["store"] is False
    assert body["instructions"] == ""
    assert "max_output_tokens" not in body


def test_codex_continuation_is_expanded_by_the_gateway(
    gateway: tuple[MockBackends, str],
) -> None:
    mock, url = gateway
    with openai.OpenAI(base_url=f"{url}/v1", api_key="client-key", max_retries=0) as client:
        first = client.responses.create(model="codex/gpt-5-codex", input="My name is Ada")
        second = client.responses.create(
            model="codex/gpt-5-codex", input="What is my name?", previous_response_id=first.id
        )
    assert "You said: What is my name?" in second.output_text
    last = _passed(mock, "codex")[-1].body
    assert "previous_response_id" not in last
    texts = [str(item) for item in last["input"]]
    assert any("My name is Ada" in t for t in texts)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_code_assist_envelopes(gateway: tuple[MockBackends, str], stream: bool) -> None:
    mock, url = gateway
    for preset in ("gemini_cli", "antigravity"):
        with DRIVERS["gemini"](url) as driver:
            driver.ask(f"{preset}/gemini-2.5-pro", stream=stream)
    (cli,) = _passed(mock, "gemini_cli")
    (agy,) = _passed(mock, "antigravity")
    method = "streamGenerateContent" if stream else "generateContent"
    assert cli.path == agy.path == f"/v1internal:{method}"
    assert set(cli.body) == {"model", "project", "user_prompt_id", "request"}
    assert cli.body["model"] == "gemini-2.5-pro"
    assert cli.body["project"] == PROJECT
    assert set(agy.body) == {"model", "project", "userAgent", "requestType", "requestId", "request"}
    assert agy.body["requestType"] == "agent"
    # The gateway's request id, so the backend's logs and ours correlate.
    assert cli.body["user_prompt_id"].startswith("req_")
    assert agy.body["requestId"].startswith("agent-req_")
    assert cli.body["request"]["contents"][0]["parts"] == [{"text": "Hello there"}]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_an_envelope_nested_too_deeply_is_the_backends_error(
    gateway: tuple[MockBackends, str], stream: bool
) -> None:
    mock, url = gateway
    # Before the first event: the whole answer is an HTTP error, not an in-band one.
    mock.upstream.add_fault(Fault(deep_json=True, eof_after=0))
    with openai.OpenAI(base_url=f"{url}/v1", api_key="client-key", max_retries=0) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            answer = client.chat.completions.create(
                model="gemini_cli/gemini-2.5-pro",
                messages=[{"role": "user", "content": "hi"}],
                stream=stream,
            )
            if stream:
                list(answer)
    # The event's own error has no status (as for malformed JSON in an event): a 500 then.
    assert caught.value.status_code == (500 if stream else 502)
    assert "nested too deeply" in caught.value.message


def test_a_backend_declared_from_steps(gateway: tuple[MockBackends, str]) -> None:
    mock, url = gateway
    with DRIVERS["gemini"](url) as driver:
        plain = driver.ask("my_code_assist/gemini-2.5-pro")
        streamed = driver.ask("my_code_assist/gemini-2.5-pro", stream=True)
    assert plain.text == streamed.text
    assert "You said: Hello there" in plain.text
    assert len(_passed(mock, "gemini_cli")) == 2


def test_a_credential_without_the_project_is_refused_before_anything_goes_out(
    gateway: tuple[MockBackends, str],
) -> None:
    mock, url = gateway
    with openai.OpenAI(base_url=f"{url}/v1", api_key="client-key", max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError) as caught:
            client.chat.completions.create(
                model="no_project/gemini-2.5-pro", messages=[{"role": "user", "content": "hi"}]
            )
    assert "'project'" in caught.value.message
    assert TOKENS["gemini_cli"] not in caught.value.message
    assert mock.requests == []


def test_a_refused_field_is_the_clients_400_and_nothing_goes_out(
    gateway: tuple[MockBackends, str],
) -> None:
    mock, url = gateway
    with openai.OpenAI(base_url=f"{url}/v1", api_key="client-key", max_retries=0) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(
                model="strict/gpt-4.1", messages=[{"role": "user", "content": "hi"}], seed=3
            )
    assert caught.value.param == "seed"  # type: ignore[attr-defined]
    assert "seed" in caught.value.message
    assert mock.requests == []


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Fault(status=429, error_event_after=2), openai.RateLimitError),
        (Fault(eof_after=2), openai.InternalServerError),
    ],
    ids=["in-band error", "cut short"],
)
def test_a_forced_stream_that_fails_is_an_error_for_the_plain_client(
    gateway: tuple[MockBackends, str], fault: Fault, error: type[Exception]
) -> None:
    mock, url = gateway
    mock.upstream.add_fault(fault)
    with openai.OpenAI(base_url=f"{url}/v1", api_key="client-key", max_retries=0) as client:
        with pytest.raises(error):
            # Never a 200 with the text the stream had before it broke.
            client.responses.create(model="codex/gpt-5-codex", input="Hello there")
    assert mock.upstream.requests[-1].stream


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize(
    ("protocol", "preset"),
    [("openai_chat", "codex"), ("anthropic_messages", "gemini_cli"), ("gemini", "claude_code")],
)
def test_a_preset_serves_clients_of_other_protocols(
    gateway: tuple[MockBackends, str], protocol: str, preset: str, stream: bool
) -> None:
    mock, url = gateway
    with DRIVERS[protocol](url) as driver:
        first, second = driver.tool_round_trip(f"{preset}/{PRESETS[preset][1]}", stream=stream)
    assert [c.name for c in first.calls] == ["get_weather"]
    assert second.text == f"Tool said: {TOOL_OUTPUT}"
    assert second.input_tokens > 0 and second.output_tokens > 0
    assert len(_passed(mock, preset)) == 2


# preset -> where its backend finds the session key in the request the mock recorded
SESSION_KEYS = {
    "codex": lambda body: body.get("prompt_cache_key"),
    "gemini_cli": lambda body: body["request"].get("session_id"),
}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("preset", list(SESSION_KEYS))
def test_a_session_key_is_repeated_per_conversation(
    gateway: tuple[MockBackends, str], preset: str, stream: bool
) -> None:
    mock, url = gateway
    protocol, model = PRESETS[preset]
    name = f"{preset}/{model}"
    with DRIVERS[protocol](url) as driver:
        driver.tool_round_trip(name, stream=stream)
        driver.ask(name, "Another conversation", stream=stream)
    with DRIVERS[protocol](url, api_key="another-client-key") as other:
        other.tool_round_trip(name, stream=stream)
    keys = [SESSION_KEYS[preset](r.body) for r in _passed(mock, preset)]
    assert len(keys) == 5
    turn1, turn2, elsewhere, other1, other2 = keys
    assert isinstance(turn1, str) and turn1
    # Turn 1 and turn 2 of one conversation: one key, though the client sent none.
    assert turn2 == turn1
    # Another conversation, and the same conversation from another inbound key: their own.
    assert elsewhere != turn1
    assert other1 == other2
    assert other1 not in (turn1, elsewhere)


def test_the_clients_own_cache_key_is_sent_and_repeated(
    gateway: tuple[MockBackends, str],
) -> None:
    mock, url = gateway
    with openai.OpenAI(base_url=f"{url}/v1", api_key="client-key", max_retries=0) as client:
        client.responses.create(
            model="codex/gpt-5-codex", input="Remember me", prompt_cache_key="my-key-1"
        )
        # The next turn without it (a client that sets it on the first turn only).
        client.responses.create(
            model="codex/gpt-5-codex",
            input=[
                {"role": "user", "content": "Remember me"},
                {"role": "assistant", "content": "You said: Remember me"},
                {"role": "user", "content": "Again"},
            ],
        )
    assert [r.body["prompt_cache_key"] for r in _passed(mock, "codex")] == ["my-key-1"] * 2


def test_the_session_key_rule_can_be_switched_off() -> None:
    mock = MockBackends(MockUpstream())
    with serve(mock) as mock_url:
        config = parse_config(
            {
                "providers": {
                    "codex": {
                        "preset": "codex",
                        "base_url": f"{mock_url}/codex",
                        "credential": _credential("codex"),
                    }
                },
                "field_cache": {"builtin": {"provider_session_keys": False}},
            },
            {},
        )
        with serve(build_app(config, environ={})) as url:
            with DRIVERS["openai_responses"](url) as driver:
                driver.ask("codex/gpt-5-codex")
    (seen,) = _passed(mock, "codex")
    assert "prompt_cache_key" not in seen.body
