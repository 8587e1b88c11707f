from __future__ import annotations

import time

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asgi_rotator.sse import (
    DEFAULT_MAX_EVENT,
    EventTooLarge,
    ServerSentEvent,
    SSEDecoder,
    encode_comment,
    encode_event,
    encode_json_event,
)


def decode(*chunks: bytes) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events = [event for chunk in chunks for event in decoder.feed(chunk)]
    return events + decoder.close()


def test_fields_and_comments() -> None:
    stream = b': hello\nevent: delta\nid: 7\nretry: 1500\ndata: {"a":1}\n\nevent: stop\ndata: x\n\n'
    assert decode(stream) == [
        ServerSentEvent(event="delta", id="7", retry=1500, data='{"a":1}'),
        ServerSentEvent(event="stop", id="7", data="x"),  # the last id persists
    ]


def test_line_endings_are_equivalent() -> None:
    lf = b"event: a\ndata: 1\ndata: 2\n\ndata: 3\n\n"
    expected = decode(lf)
    assert expected == [ServerSentEvent(event="a", data="1\n2"), ServerSentEvent(data="3")]
    assert decode(lf.replace(b"\n", b"\r\n")) == expected
    assert decode(lf.replace(b"\n", b"\r")) == expected


def test_crlf_split_between_chunks_is_one_line_end() -> None:
    assert decode(b"data: 1\r", b"\n\r", b"\ndata: 2\r\n\r\n") == [
        ServerSentEvent(data="1"),
        ServerSentEvent(data="2"),
    ]


def test_utf8_character_split_across_chunks() -> None:
    raw = "data: h€llo 🙂\n\n".encode()
    for cut in range(len(raw) + 1):
        assert decode(raw[:cut], raw[cut:]) == [ServerSentEvent(data="h€llo 🙂")]


def test_bom_is_stripped_only_at_start() -> None:
    assert decode(b"\xef\xbb", b"\xbfdata: x\n\n") == [ServerSentEvent(data="x")]
    # A BOM later in the stream is part of the field name, which makes it unknown.
    assert decode(b"data: x\n\n\xef\xbb\xbfdata: y\n\n") == [ServerSentEvent(data="x")]


def test_final_event_without_blank_line_is_flushed() -> None:
    assert decode(b"data: a\n\ndata: b") == [ServerSentEvent(data="a"), ServerSentEvent(data="b")]
    assert decode(b"data: [DONE]\n") == [ServerSentEvent(data="[DONE]")]


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        (b"data: a", [ServerSentEvent(data="a")]),
        (b"data: a\r", [ServerSentEvent(data="a")]),
        (b"data: a\r\n", [ServerSentEvent(data="a")]),
        (b"data: a\n\n", [ServerSentEvent(data="a")]),
        (b"event: ping", [ServerSentEvent(event="ping")]),
        (b"\xef\xbb", []),  # only the start of a BOM
        (b": comment", []),
        (b"", []),
    ],
)
def test_the_end_of_input_ends_the_last_line_and_event(
    stream: bytes, expected: list[ServerSentEvent]
) -> None:
    assert decode(stream) == expected
    assert decode(*(stream[i : i + 1] for i in range(len(stream)))) == expected


def test_value_space_and_colonless_lines() -> None:
    assert decode(b"data:no-space\ndata:  two\ndata\n\n") == [
        ServerSentEvent(data="no-space\n two\n")
    ]


def test_invalid_retry_and_unknown_fields_are_ignored() -> None:
    assert decode(b"retry: soon\nfoo: bar\ndata: x\n\n") == [ServerSentEvent(data="x")]
    assert decode(b"foo: bar\n\n") == []


def test_encoder_round_trips() -> None:
    raw = encode_event('{"x": "a\\nb"}', event="e") + encode_comment("ping")
    raw += encode_event("line1\nline2", id="3")
    assert decode(raw) == [
        ServerSentEvent(event="e", data='{"x": "a\\nb"}'),
        ServerSentEvent(id="3", data="line1\nline2"),
    ]
    assert raw.endswith(b"\n\n")


_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"))
_events = st.lists(
    st.tuples(
        st.one_of(st.none(), _text.filter(lambda s: s.strip() == s and s != "")),
        st.lists(_text, min_size=1, max_size=3),
    ),
    max_size=6,
)


@settings(max_examples=300)
@given(
    events=_events,
    newline=st.sampled_from([b"\n", b"\r\n", b"\r"]),
    bom=st.booleans(),
    comments=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
)
def test_any_chunking_yields_the_same_events(
    events: list[tuple[str | None, list[str]]],
    newline: bytes,
    bom: bool,
    comments: bool,
    cuts: list[int],
) -> None:
    raw = b"\xef\xbb\xbf" if bom else b""
    expected = []
    for name, lines in events:
        if comments:
            raw += b": keep-alive" + newline
        if name is not None:
            raw += b"event: " + name.encode() + newline
        for line in lines:
            raw += b"data: " + line.encode() + newline
        raw += newline
        expected.append(ServerSentEvent(event=name, data="\n".join(lines)))
    assert decode(raw) == expected
    points = sorted({c % (len(raw) + 1) for c in cuts})
    chunks = [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True)]
    assert decode(*chunks) == expected
    # Byte at a time: the hardest split.
    assert decode(*(raw[i : i + 1] for i in range(len(raw)))) == expected


def test_invalid_utf8_is_replaced_in_the_value_and_never_hides_the_colon() -> None:
    # A broken byte right before the ":" or inside the value: the field is still split at
    # the colon, and only the broken bytes become U+FFFD.
    assert decode(b"data\xe2: x\xff\xfey\n\n") == []  # the name is not "data"
    assert decode(b"data: \xe2\x82x\n\n") == [ServerSentEvent(data="\ufffdx")]
    assert decode(b"event: \xffe\ndata: 1\n\n") == [ServerSentEvent(event="\ufffde", data="1")]
    assert decode(b"retry: \xd9\xa3\ndata: x\n\n") == [ServerSentEvent(data="x")]  # not ASCII


def test_id_with_nul_is_ignored() -> None:
    assert decode(b"id: 1\ndata: a\n\nid: 2\x00\ndata: b\n\n") == [
        ServerSentEvent(id="1", data="a"),
        ServerSentEvent(id="1", data="b"),
    ]


@given(
    st.one_of(st.none(), _text.filter(lambda s: s.strip() == s and s != "")),
    st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(), st.text()),
        lambda children: st.lists(children) | st.dictionaries(st.text(), children),
        max_leaves=8,
    ),
)
@settings(max_examples=200)
def test_json_event_is_the_same_bytes_as_a_text_event(event: str | None, value: object) -> None:
    data = msgspec.json.encode(value)
    assert encode_json_event(data, event) == encode_event(data.decode(), event)
    assert decode(encode_json_event(data, event)) == [
        ServerSentEvent(event=event, data=data.decode())
    ]


def test_a_long_unfinished_line_costs_work_linear_in_what_is_fed() -> None:
    # Before: the unfinished line was re-concatenated with every chunk, so a 15 MiB line in
    # 2 KiB chunks copied about 57 GB (tens of seconds); kept as a list of chunks it is
    # joined once.  A generous bound, which only quadratic work can exceed.
    decoder = SSEDecoder()
    chunk = b"x" * 2048
    started = time.monotonic()
    assert decoder.feed(b"data: ") == []
    for _ in range(15 * 512):
        assert decoder.feed(chunk) == []
    [event] = decoder.feed(b"\n\n")
    assert time.monotonic() - started < 3.0
    assert len(event.data) == 15 * 1024 * 1024


def test_an_event_over_the_limit_raises_as_soon_as_it_is_passed() -> None:
    decoder = SSEDecoder(max_event=1000)
    assert decoder.feed(b"data: " + b"x" * 900) == []
    with pytest.raises(EventTooLarge) as info:
        decoder.feed(b"x" * 200)  # no line end: the limit counts the unfinished line
    assert info.value.limit == 1000
    # Many small data lines count together: the event, not the line, is bounded.
    decoder = SSEDecoder(max_event=1000)
    with pytest.raises(EventTooLarge):
        decoder.feed(b"data: 0123456789\n" * 100)
    # Events under the limit, however many, are fine: the count starts again per event.
    decoder = SSEDecoder(max_event=1000)
    events = decoder.feed(b"data: " + b"y" * 900 + b"\n\n" + b"data: " + b"z" * 900 + b"\n\n")
    assert [len(e.data) for e in events] == [900, 900]


def test_the_default_event_limit_is_16_mib() -> None:
    assert DEFAULT_MAX_EVENT == 16 * 1024 * 1024
    decoder = SSEDecoder()
    decoder.feed(b"data: ")
    with pytest.raises(EventTooLarge):
        for _ in range(17):
            decoder.feed(b"x" * (1024 * 1024))
