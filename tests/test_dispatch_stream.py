"""How dispatch frames an answer for the layers above.  A stream: one body message per
upstream read, each carrying the whole events that read completed, never part of one and
never fewer events than came in.  A plain answer: its bytes, with its twin when a layer asked
for it or the answer was translated."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from asgi_rotator.config import parse_config
from asgi_rotator.dispatch import USAGE_HEADER
from asgi_rotator.exchange import DISCONNECT_WATCHED, ERROR, EVENT, RESPONSE, WANT_RESPONSE
from asgi_rotator.sse import SSEDecoder
from asgi_rotator.stack import LAYERS, build_app
from asgi_rotator.unified import Error, Finish, Response, Text, TextDelta
from tests.conftest import load_fixture

pytestmark = pytest.mark.anyio


class _Response:
    status = 200
    headers: Mapping[str, str] = {"content-type": "text/event-stream"}

    def __init__(self, reads: list[bytes]) -> None:
        self.reads = reads
        self.closed = False

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        for read in self.reads:
            yield read

    async def aread(self) -> bytes:
        return b"".join(self.reads)

    async def aclose(self) -> None:
        self.closed = True


class _Client:
    """An upstream client whose stream arrives in the reads it is given."""

    def __init__(self, reads: list[bytes]) -> None:
        self.reads = reads

    async def send(self, method: str, url: str, headers: Any, body: bytes) -> _Response:
        return _Response(self.reads)

    async def aclose(self) -> None:
        pass


def _events(raw: bytes) -> list[bytes]:
    return [e for e in raw.replace(b"\r\n", b"\n").split(b"\n\n") if e.strip()]


async def _stream(upstream: str, reads: list[bytes]) -> list[dict[str, Any]]:
    """The body messages dispatch sends a Chat client for an upstream stream in ``reads``."""
    sent = await _dispatch(upstream, reads, stream=True)
    return [m for m in sent if m["type"] == "http.response.body"]


async def _dispatch(
    upstream: str, reads: list[bytes], *, stream: bool, scope_extra: Mapping[str, Any] = {}
) -> list[dict[str, Any]]:
    """Every message dispatch sends a Chat client for an upstream answer in ``reads``."""
    base = "http://upstream.invalid" + ("/v1" if upstream == "openai_chat" else "")
    config = parse_config(
        {"providers": {"up": {"protocol": upstream, "base_url": base, "keys": ["k"]}}}, {}
    )
    gateway = build_app(config, environ={}, without=LAYERS)  # dispatch alone
    for provider in gateway.providers:
        provider.client = _Client(reads)
    body = b'{"model":"up/m","messages":[{"role":"user","content":"hi"}],"stream":%s}' % (
        b"true" if stream else b"false"
    )
    delivered = False
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        raise AssertionError("dispatch asked for more than the body")  # pragma: no cover

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json")],
        DISCONNECT_WATCHED: True,  # a layer above would watch
        **scope_extra,
    }
    await gateway(scope, receive, send)
    await gateway.aclose()
    return sent


def _chat_upstream_events() -> list[bytes]:
    events = _events(load_fixture("openai_chat", "stream_text.sse"))
    assert len(events) >= 4
    return [e + b"\n\n" for e in events]


async def test_events_of_one_read_go_out_together_and_whole() -> None:
    events = _chat_upstream_events()
    reads = [b"".join(events[:3]), *events[3:]]
    messages = await _stream("openai_chat", reads)
    *bodies, end = messages
    assert end["body"] == b"" and end["more_body"] is False
    # One message per read: the first carries three events, the rest one each.
    assert len(bodies) == len(reads)
    assert len(_events(bodies[0]["body"])) == 3
    assert all(len(_events(m["body"])) == 1 for m in bodies[1:])
    # Same protocol: the events go out as they came, none lost, none merged.
    assert b"".join(m["body"] for m in bodies) == b"".join(events)
    # Each message ends on an event boundary, and its twins are the events it carries.
    assert all(m["body"].endswith(b"\n\n") for m in bodies)
    assert any(isinstance(e, TextDelta) for e in bodies[0][EVENT])
    assert [type(e) for m in bodies for e in m[EVENT]].count(Finish) == 1


async def test_an_event_split_across_reads_goes_out_whole_once_complete() -> None:
    events = _chat_upstream_events()
    whole = b"".join(events)
    cut = len(events[0]) + len(events[1]) // 2  # inside the second event
    messages = await _stream("openai_chat", [whole[:cut], whole[cut:]])
    bodies = [m for m in messages if m["more_body"]]
    assert [len(_events(m["body"])) for m in bodies] == [1, len(events) - 1]
    assert b"".join(m["body"] for m in bodies) == whole


async def test_a_translated_read_keeps_every_event() -> None:
    raw = load_fixture("anthropic_messages", "stream_text.sse")
    one_read = await _stream("anthropic_messages", [raw])
    per_event = await _stream("anthropic_messages", [e + b"\n\n" for e in _events(raw)])

    def chat_events(messages: list[dict[str, Any]]) -> list[bytes]:
        return _events(b"".join(m["body"] for m in messages))

    def text(messages: list[dict[str, Any]]) -> str:
        decoder = SSEDecoder()
        pieces = decoder.feed(b"".join(m["body"] for m in messages))
        return "".join(p.data for p in pieces if '"content"' in p.data)

    # Fewer messages, the same Chat events (ids and timestamps aside: the text is the same).
    assert len(one_read) < len(per_event)
    assert len(chat_events(one_read)) == len(chat_events(per_event))
    assert text(one_read) == text(per_event)
    twins = [e for m in one_read for e in m.get(EVENT, ())]
    assert [type(e) for e in twins] == [type(e) for m in per_event for e in m.get(EVENT, ())]


async def test_events_before_a_malformed_one_in_the_same_read_still_go_out() -> None:
    events = _chat_upstream_events()
    reads = [events[0] + events[1] + b"data: {not json\n\n"]
    messages = await _stream("openai_chat", reads)
    first, error, end = messages
    assert first["body"] == events[0] + events[1]
    assert isinstance(error[EVENT][0], Error) and error[ERROR].kind == "server_error"
    assert end["more_body"] is False


# --- plain answers and their twin ----------------------------------------------------------


async def test_a_plain_answer_in_the_clients_protocol_goes_on_as_it_came() -> None:
    raw = json.dumps(load_fixture("openai_chat", "response_text.json")).encode()
    start, body = await _dispatch("openai_chat", [raw], stream=False)
    assert body["body"] == raw
    # Nobody asked for the twin: none is made, and the gateway's own figures still come
    # from the answer.
    assert RESPONSE not in body
    headers = dict(start["headers"])
    assert headers[USAGE_HEADER] == b"input=1117, output=46, cache_read=1024"
    assert headers[b"content-length"] == str(len(raw)).encode()


async def test_a_plain_answer_has_its_twin_when_a_layer_asks_or_it_was_translated() -> None:
    raw = json.dumps(load_fixture("openai_chat", "response_text.json")).encode()
    start, body = await _dispatch(
        "openai_chat", [raw], stream=False, scope_extra={WANT_RESPONSE: True}
    )
    assert body["body"] == raw
    twin = body[RESPONSE]
    assert twin.id == "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG"
    assert twin.content == [
        Text(text="The image shows a wooden boardwalk extending through a lush green marshland.")
    ]
    assert dict(start["headers"])[USAGE_HEADER] == b"input=1117, output=46, cache_read=1024"

    translated = json.dumps(load_fixture("anthropic_messages", "response_text.json")).encode()
    _, body = await _dispatch("anthropic_messages", [translated], stream=False)
    assert isinstance(body[RESPONSE], Response)
    assert json.loads(body["body"])["object"] == "chat.completion"
