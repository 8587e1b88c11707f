"""Usage counted once: every codec applies the one rule of ``unified.Usage``, plain and streamed.

Each case is a provider's documented usage object (the fixture names the documentation) in
an otherwise ordinary response and stream (tests/fixtures/usage/), and the unified counts it
must give: input includes cache reads and writes, output includes reasoning, and the cache
and reasoning counts are subsets beside them, never added on top.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asgi_rotator.errors import GatewayError
from asgi_rotator.protocols import get_codec
from asgi_rotator.sse import SSEDecoder
from asgi_rotator.unified import Finish, Request, Response, Text, Usage
from tests.conftest import FIXTURES, load_fixture

CHAT, RESPONSES, ANTHROPIC, GEMINI = (
    "openai_chat",
    "openai_responses",
    "anthropic_messages",
    "gemini",
)
PROTOCOLS = (CHAT, RESPONSES, ANTHROPIC, GEMINI)

# case -> (protocol, expected unified usage).  The sources, per provider:
# Anthropic Messages API "usage" / prompt caching "1-hour cache duration"; OpenAI Chat
# Completions "usage" (prompt_tokens_details, completion_tokens_details); OpenAI Responses
# "usage" (input_tokens_details, output_tokens_details); Gemini "UsageMetadata"; OpenRouter
# "Usage Accounting"; xAI "Cost Tracking".
TABLE: dict[str, tuple[str, Usage]] = {
    # Anthropic input_tokens excludes the cache: 50 + 556 written + 1800 read.  The TTL
    # breakdown (456 + 100) is a part of the 556 written, not added.
    "anthropic_cache_ttl": (
        ANTHROPIC,
        Usage(
            input_tokens=2406,
            output_tokens=503,
            cache_read_tokens=1800,
            cache_write_tokens=556,
            cache_write_1h_tokens=100,
        ),
    ),
    # OpenAI: prompt_tokens includes cached_tokens, completion_tokens includes reasoning.
    "openai_chat_cached_reasoning": (
        CHAT,
        Usage(input_tokens=2006, output_tokens=300, cache_read_tokens=1920, reasoning_tokens=192),
    ),
    "openai_responses_cached_reasoning": (
        RESPONSES,
        Usage(input_tokens=2006, output_tokens=300, cache_read_tokens=1920, reasoning_tokens=192),
    ),
    # Gemini: prompt includes the cache; tool-use prompt tokens are input beside the prompt;
    # thoughts are output beside the candidates (1200 + 80 + 25 + 1008 = totalTokenCount).
    "gemini_thoughts_tools_cache": (
        GEMINI,
        Usage(input_tokens=1280, output_tokens=1033, reasoning_tokens=1008, cache_read_tokens=1000),
    ),
    # A total that balances without the thoughts: this backend counted them inside candidates.
    "gemini_thoughts_in_candidates": (
        GEMINI,
        Usage(input_tokens=10, output_tokens=1033, reasoning_tokens=1008),
    ),
    # OpenRouter: cache_write_tokens is a part of prompt_tokens; on BYOK the upstream's
    # charge is added to OpenRouter's fee.
    "openrouter_byok": (
        CHAT,
        Usage(input_tokens=194, output_tokens=2, cache_write_tokens=120, cost=0.000095 + 0.0019),
    ),
    # Not BYOK: usage.cost is the whole charge; upstream_inference_cost is not added.
    "openrouter_credits": (CHAT, Usage(input_tokens=194, output_tokens=2, cost=0.95)),
    # xAI: 1 USD = 1e10 ticks (the documented example: 37756000 ticks is $0.0037756).
    "xai_chat": (
        CHAT,
        Usage(
            input_tokens=37,
            output_tokens=530,
            cache_read_tokens=6,
            reasoning_tokens=233,
            cost=0.0037756,
        ),
    ),
    "xai_responses": (
        RESPONSES,
        Usage(
            input_tokens=2006,
            output_tokens=300,
            cache_read_tokens=1920,
            reasoning_tokens=192,
            cost=0.015,
        ),
    ),
}
STREAMED = [case for case in TABLE if case not in ("openrouter_credits", "xai_responses")]
STREAMED.remove("gemini_thoughts_in_candidates")


def same_usage(got: Usage | None, expected: Usage) -> None:
    assert got is not None
    if expected.cost is None:
        assert got.cost is None
    else:
        assert got.cost == pytest.approx(expected.cost, rel=1e-12)
    assert {**_counts(got)} == {**_counts(expected)}


def _counts(usage: Usage) -> dict[str, int]:
    return {
        "input": usage.input_tokens,
        "output": usage.output_tokens,
        "reasoning": usage.reasoning_tokens,
        "cache_read": usage.cache_read_tokens,
        "cache_write": usage.cache_write_tokens,
        "cache_write_1h": usage.cache_write_1h_tokens,
    }


@pytest.mark.parametrize("case", list(TABLE))
def test_plain_response_usage_follows_the_rule(case: str) -> None:
    protocol, expected = TABLE[case]
    response = get_codec(protocol).parse_response(load_fixture("usage", f"{case}.json"))
    same_usage(response.usage, expected)


# Where each protocol's response carries its id.
ID_FIELDS = {
    CHAT: ("id",),
    RESPONSES: ("id",),
    ANTHROPIC: ("id",),
    GEMINI: ("responseId", "response_id"),
}
RESPONSE_BODIES = [
    (protocol, folder, path.name)
    for protocol, folder in [*((p, p) for p in PROTOCOLS), *((p, "usage") for p in PROTOCOLS)]
    for path in sorted((FIXTURES / folder).glob("*.json"))
    if path.name.startswith("response_") or TABLE.get(path.stem, ("",))[0] == protocol
]


@pytest.mark.parametrize(("protocol", "folder", "name"), RESPONSE_BODIES)
def test_id_and_usage_read_alone_are_what_the_whole_parse_reads(
    protocol: str, folder: str, name: str
) -> None:
    # What dispatch reads of an answer it passes on untouched, with no twin.
    body = load_fixture(folder, name)
    codec = get_codec(protocol)
    whole = codec.parse_response(body)
    response_id, usage = codec.response_id_and_usage(body)
    assert usage == whole.usage
    if any(body.get(key) for key in ID_FIELDS[protocol]):
        assert response_id == whole.id
    else:
        assert response_id is None  # not the id the whole parse makes up


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("body", [[], "text", 3, None])
def test_a_response_that_is_not_an_object_is_the_upstreams_fault(protocol: str, body: Any) -> None:
    codec = get_codec(protocol)
    for read in (codec.parse_response, codec.response_id_and_usage):
        with pytest.raises(GatewayError) as caught:
            read(body)
        assert (caught.value.kind, caught.value.status) == ("server_error", 502)


@pytest.mark.parametrize("case", STREAMED)
def test_streamed_usage_follows_the_rule(case: str) -> None:
    protocol, expected = TABLE[case]
    decoder = get_codec(protocol).stream_decoder()
    sse = SSEDecoder()
    events = []
    for item in [*sse.feed(load_fixture("usage", f"{case}.sse")), *sse.close()]:
        events.extend(decoder.feed(item))
    events.extend(decoder.close())
    finish = [e for e in events if isinstance(e, Finish)]
    assert len(finish) == 1
    same_usage(finish[0].usage, expected)


@pytest.mark.parametrize("case", ["anthropic_cache_ttl", "openrouter_byok"])
def test_same_protocol_round_trip_keeps_the_providers_usage_object(case: str) -> None:
    protocol, _ = TABLE[case]
    body = load_fixture("usage", f"{case}.json")
    codec = get_codec(protocol)
    rebuilt = codec.build_response(codec.parse_response(body), None)
    assert rebuilt["usage"] == body["usage"]


def test_anthropic_build_splits_cache_writes_by_ttl_again() -> None:
    usage = TABLE["anthropic_cache_ttl"][1]
    built = get_codec(ANTHROPIC).build_response(_response(usage, GEMINI), None)["usage"]
    assert built["input_tokens"] == 50
    assert built["cache_creation_input_tokens"] == 556
    assert built["cache_creation"] == {
        "ephemeral_5m_input_tokens": 456,
        "ephemeral_1h_input_tokens": 100,
    }


# --- there and back: totals never change ------------------------------------------------------


def _response(usage: Usage, origin: str | None) -> Response:
    return Response(
        id="resp_usage",
        model="m",
        content=[Text(text="ok")],
        usage=usage,
        origin=origin,
        created=1,
    )


@st.composite
def usages(draw: Any) -> Usage:
    cache_read = draw(st.integers(0, 10**6))
    cache_write = draw(st.integers(0, 10**6))
    one_hour = draw(st.integers(0, cache_write))
    uncached = draw(st.integers(0, 10**6))
    reasoning = draw(st.integers(0, 10**6))
    visible = draw(st.integers(0, 10**6))
    return Usage(
        input_tokens=uncached + cache_read + cache_write,
        output_tokens=visible + reasoning,
        reasoning_tokens=reasoning,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        cache_write_1h_tokens=one_hour,
    )


# Gemini has no count for cache writes (cachedContentTokenCount is reads only).
WRITES = {CHAT, RESPONSES, ANTHROPIC}


def _through(usage: Usage, first: str, second: str) -> Usage:
    """Usage as ``first``'s provider sends it, rendered for a ``second`` client and parsed,
    then rendered for a ``first`` client and parsed again."""
    a, b = get_codec(first), get_codec(second)
    request = Request(model="m")
    start = a.parse_response(a.build_response(_response(usage, None), request))
    there = b.parse_response(b.build_response(start, request))
    return a.parse_response(a.build_response(there, request)).usage


@settings(max_examples=60, deadline=None)
@given(usage=usages(), pair=st.sampled_from([(a, b) for a in PROTOCOLS for b in PROTOCOLS]))
def test_usage_there_and_back_keeps_totals(usage: Usage, pair: tuple[str, str]) -> None:
    first, second = pair
    back = _through(usage, first, second)
    assert back.input_tokens == usage.input_tokens
    assert back.output_tokens == usage.output_tokens
    assert back.total_tokens == usage.total_tokens
    assert back.reasoning_tokens == usage.reasoning_tokens
    assert back.cache_read_tokens == usage.cache_read_tokens
    if first in WRITES and second in WRITES:
        assert back.cache_write_tokens == usage.cache_write_tokens
    if first == second == ANTHROPIC:
        assert back.cache_write_1h_tokens == usage.cache_write_1h_tokens


@settings(max_examples=30, deadline=None)
@given(usage=usages(), pair=st.sampled_from([(a, b) for a in PROTOCOLS for b in PROTOCOLS]))
def test_streamed_usage_there_and_back_keeps_totals(usage: Usage, pair: tuple[str, str]) -> None:
    """The same through each protocol's stream encoder and decoder."""
    first, second = pair
    there = _stream_through(usage, second)
    back = _stream_through(there, first)
    assert back.input_tokens == usage.input_tokens
    assert back.output_tokens == usage.output_tokens
    assert back.reasoning_tokens == usage.reasoning_tokens
    assert back.cache_read_tokens == usage.cache_read_tokens


def _stream_through(usage: Usage, protocol: str) -> Usage:
    from asgi_rotator.unified import BlockStop, MessageStart, TextDelta

    codec = get_codec(protocol)
    encoder = codec.stream_encoder(Request(model="m", stream=True, include_usage=True))
    events = [
        MessageStart(id="resp_usage", model="m"),
        TextDelta(index=0, text="ok"),
        BlockStop(index=0),
        Finish(reason="stop", usage=usage),
    ]
    raw = b"".join(encoder.encode(event) for event in events)
    sse = SSEDecoder()
    decoder = codec.stream_decoder()
    out = []
    for item in [*sse.feed(raw), *sse.close()]:
        out.extend(decoder.feed(item))
    out.extend(decoder.close())
    finish = [e for e in out if isinstance(e, Finish)]
    assert finish and finish[0].usage is not None
    return finish[0].usage


def test_chat_usage_include_is_the_in_band_cost_option() -> None:
    codec = get_codec(CHAT)
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    request = codec.parse_request({**body, "usage": {"include": True}})
    assert request.include_cost is True
    assert "usage" not in codec.build_request(request)  # answered here, never sent upstream
    with pytest.raises(GatewayError) as caught:
        codec.parse_request({**body, "usage": {"include": "yes"}})
    assert caught.value.kind == "bad_request"
    assert "usage.include" in caught.value.message


def test_request_log_schema_in_the_docs_is_the_written_one() -> None:
    """docs/request-log.schema.json is what RequestLog writes (regenerate it with
    ``msgspec.json.schema(RequestRecord)`` when the record changes)."""
    import json
    from pathlib import Path

    import msgspec

    from asgi_rotator.middleware.request_log import RequestRecord

    documented = json.loads(
        (Path(__file__).parents[1] / "docs" / "request-log.schema.json").read_text()
    )
    assert documented == msgspec.json.schema(RequestRecord)
