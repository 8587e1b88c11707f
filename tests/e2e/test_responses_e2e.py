"""Responses API state through a real gateway, driven by the official openai SDK.

The gateway under test is ``ResponsesState`` over the dispatch app (with ``InboundKeys`` on
top where scoping is tested), behind uvicorn; the providers are the session's mock
upstream, one per protocol.  What each provider received is asserted at the mock.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import openai
import pytest

from asgi_rotator.config import parse_config
from asgi_rotator.dispatch import ProviderDispatch
from asgi_rotator.middleware.auth import InboundKeys
from asgi_rotator.middleware.responses import RESPONSE_ID, ResponsesState
from asgi_rotator.mock import MockUpstream
from asgi_rotator.providers import Providers
from asgi_rotator.state import FileStore, MemoryStore, StateStore
from tests.e2e.clients import QUESTION, TOOL_OUTPUT, WEATHER
from tests.e2e.conftest import UPSTREAMS, provider_config
from tests.server import serve

UPSTREAM = [pytest.param(name, id=protocol) for protocol, name in UPSTREAMS.items()]
STREAM = [pytest.param(False, id="plain"), pytest.param(True, id="stream")]
TOOLS = [{"type": "function", **WEATHER}]


@contextmanager
def gateway(
    mock_url: str, *, store: StateStore | None = None, keys: list[str] | None = None, **options: Any
) -> Iterator[str]:
    providers = Providers(parse_config({"providers": provider_config(mock_url)}, {}), {})
    app: Any = ResponsesState(
        ProviderDispatch(providers), store=store, providers=providers, **options
    )
    if keys:
        app = InboundKeys(app, keys=keys)
    with serve(app) as url:
        yield url


@contextmanager
def client(url: str, api_key: str = "client-key") -> Iterator[Any]:
    """The SDK client, typed loosely: tests read union-typed items by their known shape."""
    sdk = openai.OpenAI(base_url=f"{url}/v1", api_key=api_key, max_retries=0)
    try:
        yield sdk
    finally:
        sdk.close()


@pytest.fixture(scope="module")
def expanding_url(mock_server: tuple[MockUpstream, str]) -> Iterator[str]:
    """Every continuation is expanded, so every provider receives the whole history."""
    with gateway(mock_server[1], native_continuation=False) as url:
        yield url


@pytest.fixture(scope="module")
def native_url(mock_server: tuple[MockUpstream, str]) -> Iterator[str]:
    with gateway(mock_server[1]) as url:
        yield url


def ask(
    sdk: Any,
    model: str,
    input: Any,
    *,
    stream: bool = False,
    previous: str | None = None,
    **fields: Any,
) -> Any:
    if previous is not None:
        fields["previous_response_id"] = previous
    if not stream:
        return sdk.responses.create(model=model, input=input, **fields)
    with sdk.responses.stream(model=model, input=input, **fields) as events:
        envelope_ids = {e.response.id for e in events if hasattr(e, "response")}
        final = events.get_final_response()
    # response.created, .in_progress and .completed all carry the id the client keeps.
    assert envelope_ids == {final.id}
    return final


def in_order(body: Any, *needles: str) -> bool:
    text = json.dumps(body)
    positions = [text.find(n) for n in needles]
    return -1 not in positions and positions == sorted(positions)


@pytest.mark.parametrize("stream", STREAM)
@pytest.mark.parametrize("upstream", UPSTREAM)
def test_three_turns_by_previous_response_id(
    expanding_url: str, mock: MockUpstream, upstream: str, stream: bool
) -> None:
    said = ["Alpha first", "Bravo second", "Charlie third"]
    replies: list[str] = []
    previous = None
    with client(expanding_url) as sdk:
        for text in said:
            response = ask(sdk, f"{upstream}/m", text, stream=stream, previous=previous)
            assert RESPONSE_ID.fullmatch(response.id)
            assert response.previous_response_id == previous
            assert f"You said: {text}" in response.output_text
            replies.append(response.output_text)
            previous = response.id
    assert len(mock.requests) == 3
    last = mock.requests[-1]
    assert last.stream == stream
    # The provider received the whole conversation, in order, not an id it cannot know.
    assert in_order(last.body, said[0], replies[0], said[1], replies[1], said[2])
    assert "previous_response_id" not in json.dumps(last.body)


@pytest.mark.parametrize("stream", STREAM)
@pytest.mark.parametrize("upstream", UPSTREAM)
def test_tool_call_answered_by_id_in_the_next_turn(
    expanding_url: str, mock: MockUpstream, upstream: str, stream: bool
) -> None:
    model = f"{upstream}/m"
    with client(expanding_url) as sdk:
        first = ask(sdk, model, QUESTION, stream=stream, tools=TOOLS)
        calls = [item for item in first.output if item.type == "function_call"]
        assert [(c.name, json.loads(c.arguments)) for c in calls] == [
            ("get_weather", {"location": "Paris"})
        ]
        outputs = [
            {"type": "function_call_output", "call_id": c.call_id, "output": TOOL_OUTPUT}
            for c in calls
        ]
        second = ask(sdk, model, outputs, stream=stream, previous=first.id, tools=TOOLS)
    assert f"Tool said: {TOOL_OUTPUT}" in second.output_text
    body = mock.requests[-1].body
    assert in_order(body, QUESTION, "get_weather", TOOL_OUTPUT)
    if upstream != "up-gemini":  # Gemini pairs a result with its call by name
        assert in_order(body, calls[0].call_id, TOOL_OUTPUT)


@pytest.mark.parametrize("stream", STREAM)
def test_turns_served_by_different_providers(
    native_url: str, mock: MockUpstream, stream: bool
) -> None:
    models = ["up-anthropic/m", "up-gemini/m", "up-chat/m", "up-responses/m"]
    said: list[str] = []
    previous = None
    with client(native_url) as sdk:
        for i, model in enumerate(models):
            said.append(f"Turn number {i}")
            response = ask(sdk, model, said[-1], stream=stream, previous=previous)
            said.append(response.output_text)
            previous = response.id
    assert [r.protocol for r in mock.requests] == [
        "anthropic_messages",
        "gemini",
        "openai_chat",
        "openai_responses",
    ]
    for i, request in enumerate(mock.requests):
        # Each provider saw every earlier turn, whoever served it.
        assert in_order(request.body, *said[: 2 * i + 1])


def test_native_continuation_on_the_owning_provider(native_url: str, mock: MockUpstream) -> None:
    with client(native_url) as sdk:
        first = ask(sdk, "up-responses/m", "Alpha first")
        second = ask(sdk, "up-responses/m", "Bravo second", previous=first.id, stream=True)
        third = ask(sdk, "up-anthropic/m", "Charlie third", previous=second.id)
        items = list(sdk.responses.input_items.list(third.id, order="asc"))
    assert second.previous_response_id == first.id
    # The owner got its own id and only the new input...
    native = mock.requests[1].body
    assert re.fullmatch(r"resp_mock\d+", native["previous_response_id"])
    assert native["input"] == "Bravo second"
    # ...and the conversation is still ours: another provider gets all of it.
    said = ["Alpha first", first.output_text, "Bravo second", second.output_text]
    assert in_order(mock.requests[2].body, *said, "Charlie third")
    listed = [item.content[0].text for item in items]
    assert listed == [*said, "Charlie third"]


def test_store_false_leaves_nothing_behind(mock_server: tuple[MockUpstream, str]) -> None:
    store = MemoryStore()
    with gateway(mock_server[1], store=store) as url, client(url) as sdk:
        for upstream in UPSTREAMS.values():
            response = ask(sdk, f"{upstream}/m", "Forget me", store=False)
            with pytest.raises(openai.NotFoundError):
                sdk.responses.retrieve(response.id)
            with pytest.raises(openai.BadRequestError):
                ask(sdk, f"{upstream}/m", "And now?", previous=response.id)
    assert asyncio.run(store.size()) == 0


def test_retrieve_delete_and_input_items(native_url: str, mock: MockUpstream) -> None:
    with client(native_url) as sdk:
        first = ask(sdk, "up-gemini/m", [{"role": "user", "content": "Alpha first"}])
        second = ask(sdk, "up-chat/m", "Bravo second", previous=first.id, instructions="Be brief")
        got = sdk.responses.retrieve(second.id)
        assert got.id == second.id and got.output_text == second.output_text
        assert got.previous_response_id == first.id and got.status == "completed"
        assert got.instructions == "Be brief"

        page = sdk.responses.input_items.list(second.id)  # newest first, as OpenAI lists
        kinds = [(item.type, item.role) for item in page.data]
        assert kinds == [("message", "user"), ("message", "assistant"), ("message", "user")]
        assert [item.content[0].text for item in page.data] == [
            "Bravo second",
            first.output_text,
            "Alpha first",
        ]
        assert page.data[1].id == first.output[0].id
        assert page.first_id == page.data[0].id and page.last_id == page.data[-1].id
        assert not page.has_more
        # Page by page (limit=1, after=...) gives the same items.
        one_by_one = list(sdk.responses.input_items.list(second.id, limit=1))
        assert [item.id for item in one_by_one] == [item.id for item in page.data]

        sdk.responses.delete(first.id)
        with pytest.raises(openai.NotFoundError) as missing:
            sdk.responses.retrieve(first.id)
        assert missing.value.status_code == 404
        assert isinstance(missing.value.body, dict)
        assert missing.value.body["type"] == "invalid_request_error"
        assert first.id in missing.value.message
        with pytest.raises(openai.NotFoundError):
            sdk.responses.delete(first.id)
        with pytest.raises(openai.NotFoundError):
            sdk.responses.input_items.list(first.id)
        with pytest.raises(openai.BadRequestError) as refused:
            ask(sdk, "up-chat/m", "Again", previous=first.id)
        assert refused.value.code == "previous_response_not_found"
        # The later response holds its whole history: it continues without the deleted one.
        third = ask(sdk, "up-anthropic/m", "Charlie third", previous=second.id)
    assert "Charlie third" in third.output_text
    assert in_order(mock.requests[-1].body, "Alpha first", "Bravo second", "Charlie third")


def test_stored_state_is_scoped_to_the_inbound_key(mock_server: tuple[MockUpstream, str]) -> None:
    with gateway(mock_server[1], keys=["key-alice", "key-bob"]) as url:
        with client(url, "key-alice") as alice, client(url, "key-bob") as bob:
            mine = ask(alice, "up-chat/m", "A secret")
            with pytest.raises(openai.NotFoundError):
                bob.responses.retrieve(mine.id)
            with pytest.raises(openai.NotFoundError):
                bob.responses.input_items.list(mine.id)
            with pytest.raises(openai.NotFoundError):
                bob.responses.delete(mine.id)
            with pytest.raises(openai.BadRequestError):
                ask(bob, "up-chat/m", "Tell me", previous=mine.id)
            assert alice.responses.retrieve(mine.id).output_text == mine.output_text
            assert ask(alice, "up-chat/m", "Go on", previous=mine.id).output_text


def test_file_store_keeps_a_conversation_across_a_restart(
    mock_server: tuple[MockUpstream, str], mock: MockUpstream, tmp_path: Path
) -> None:
    with gateway(mock_server[1], store=FileStore(tmp_path)) as url, client(url) as sdk:
        first = ask(sdk, "up-anthropic/m", "Remember Alpha")
    # A new process: a new gateway, a new store object on the same directory.
    with gateway(mock_server[1], store=FileStore(tmp_path)) as url, client(url) as sdk:
        assert sdk.responses.retrieve(first.id).output_text == first.output_text
        second = ask(sdk, "up-gemini/m", "What did I say?", previous=first.id, stream=True)
    assert second.previous_response_id == first.id
    assert in_order(mock.requests[-1].body, "Remember Alpha", first.output_text, "What did I say?")
