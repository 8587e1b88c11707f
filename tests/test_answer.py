"""``answer.ClientStream``: the client's stream and its one in-band error renderer."""

from __future__ import annotations

import pytest

from asgi_rotator.answer import ClientStream
from asgi_rotator.errors import GatewayError
from asgi_rotator.exchange import ERROR, EVENT, Exchange
from asgi_rotator.protocols import get_codec
from asgi_rotator.unified import BlockStop, Error, Finish, MessageStart, Request, TextDelta
from tests.continuation import sse_events

PROTOCOLS = ("openai_chat", "openai_responses", "anthropic_messages", "gemini")
BUSY = GatewayError("overloaded", "busy")


def exchange_for(protocol: str) -> Exchange:
    exchange = Exchange({"type": "http", "headers": []}, b"{}")
    exchange.protocol = protocol
    exchange.request = Request(model="m", stream=True)
    exchange.model = "m"
    return exchange


def upstream_bytes(protocol: str, *events: object) -> list[tuple[bytes, list[object]]]:
    """What a same-protocol upstream would have sent, one message per event."""
    encoder = get_codec(protocol).stream_encoder(Request(model="m", stream=True))
    return [(encoder.encode(e), [e]) for e in events]  # type: ignore[arg-type]


def shapes(raw: bytes) -> list[tuple[str | None, object]]:
    return [(name, sorted(d) if isinstance(d, dict) else d) for name, d in sse_events(raw)]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_nothing_follows_the_terminal_event(protocol: str) -> None:
    stream = ClientStream.open(exchange_for(protocol))
    for body, events in upstream_bytes(
        protocol, MessageStart(id="r1", model="m"), TextDelta(index=0, text="hi"), Finish()
    ):
        stream.sent(body, events)  # type: ignore[arg-type]
    assert stream.terminal_sent and not stream.error_sent
    message = stream.error_message(BUSY)
    assert message["body"] == b""
    assert message[ERROR] is BUSY and isinstance(message[EVENT][0], Error)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_error_with_nothing_sent_opens_the_stream_itself(protocol: str) -> None:
    exchange = exchange_for(protocol)
    stream = ClientStream.open(exchange)
    assert exchange.stream is stream
    body = stream.error_message(BUSY)["body"]
    fresh = get_codec(protocol).stream_encoder(exchange.request).encode(Error(error=BUSY))
    # The same events as a fresh encoder's (ids are random: the shapes are compared).
    assert shapes(body) == shapes(fresh) != []
    assert stream.error_sent and stream.terminal_sent and stream.events == 1
    assert stream.error_message(BUSY)["body"] == b""  # one error, then nothing


def test_a_passthrough_responses_stream_is_continued_under_the_renamed_id() -> None:
    stream = ClientStream.open(exchange_for("openai_responses"))
    for body, events in upstream_bytes(
        "openai_responses", MessageStart(id="resp_up", model="m"), TextDelta(index=0, text="a")
    ):
        stream.sent(body, events)  # type: ignore[arg-type]
    assert (stream.response_id, stream.last_sequence) == ("resp_up", 4)
    stream.rename("resp_ours")
    data = [d for _, d in sse_events(stream.error_message(BUSY)["body"])]
    assert [(d["type"], d["sequence_number"]) for d in data] == [
        ("response.failed", 5),
        ("error", 6),
    ]
    assert data[0]["response"]["id"] == "resp_ours"


def test_a_translated_stream_is_continued_by_its_own_encoder() -> None:
    """The producer's live encoder renders the failure, so ``response.failed`` still lists
    the output items already finished; a rename reaches it too."""
    exchange = exchange_for("openai_responses")
    encoder = get_codec("openai_responses").stream_encoder(exchange.request)
    stream = ClientStream.open(exchange, encoder)
    for event in (
        MessageStart(id="up", model="m"),
        TextDelta(index=0, text="a"),
        BlockStop(index=0),
    ):
        stream.sent(encoder.encode(event), [event])
    stream.rename("resp_ours")
    failed, error = (d for _, d in sse_events(stream.error_message(BUSY)["body"]))
    assert failed["type"] == "response.failed" and error["type"] == "error"
    assert failed["response"]["id"] == "resp_ours"
    assert failed["sequence_number"] == stream.last_sequence - 1
    assert [item["type"] for item in failed["response"]["output"]] == ["message"]


def test_responses_resume_point_is_read_from_the_sent_bytes() -> None:
    codec = get_codec("openai_responses")
    assert codec.numbers_stream_events and not get_codec("openai_chat").numbers_stream_events
    body = (
        b'event: response.created\ndata: {"type": "response.created", "sequence_number": 0, '
        b'"response": {"id": "resp_x"}}\n\n'
        b'data: {"type":"response.in_progress","sequence_number" : 1,"response":{"id":"resp_x"}}'
        b"\n\n"
    )
    assert codec.stream_resume_point(body) == ("resp_x", 1)
    assert codec.stream_resume_point(b'data: {"delta":"\\"sequence_number\\": 9"}\n\n') == (
        None,
        None,
    )
