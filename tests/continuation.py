"""What a client must find in a stream that failed after commit, for each protocol: one
opening, one in-band error that ends it and nothing after, and for Responses sequence
numbers that keep increasing under one response id."""

from __future__ import annotations

import json
from itertools import pairwise
from typing import Any

from asgi_rotator.sse import SSEDecoder

RESPONSES_TERMINAL = {"response.completed", "response.failed", "response.incomplete"}


def sse_events(raw: bytes) -> list[tuple[str | None, Any]]:
    """(event name, decoded data) for every event in ``raw``; ``[DONE]`` stays a string."""
    decoder = SSEDecoder()
    out: list[tuple[str | None, Any]] = []
    for event in [*decoder.feed(raw), *decoder.close()]:
        data = event.data if event.data == "[DONE]" else json.loads(event.data)
        out.append((event.event, data))
    return out


def assert_stream_continued_by_one_error(protocol: str, raw: bytes) -> list[Any]:
    """The checks, returning the events' data for more specific ones."""
    events = sse_events(raw)
    data = [d for _, d in events]
    assert data, raw
    if protocol == "openai_responses":
        kinds = [d["type"] for d in data]
        numbers = [d["sequence_number"] for d in data]
        assert all(a < b for a, b in pairwise(numbers)), numbers
        assert kinds.count("response.created") == 1 and kinds[0] == "response.created"
        ids = {d["response"]["id"] for d in data if "response" in d}
        assert len(ids) == 1, ids
        terminal = [i for i, k in enumerate(kinds) if k in RESPONSES_TERMINAL]
        assert len(terminal) == 1 and kinds[terminal[0]] == "response.failed", kinds
        # After response.failed only the flat ``error`` event the SDK raises on (see the
        # codec's docstring), when the gateway wrote the failure.
        assert kinds[terminal[0] + 1 :] in ([], ["error"]), kinds
    elif protocol == "openai_chat":
        errors = [i for i, d in enumerate(data) if isinstance(d, dict) and "error" in d]
        assert errors == [len(data) - 1], data
        assert "[DONE]" not in data
        roles = [d for d in data[:-1] if d["choices"] and "role" in d["choices"][0]["delta"]]
        assert len(roles) == 1, data
        assert len({d["id"] for d in data[:-1]}) == 1
    elif protocol == "anthropic_messages":
        kinds = [d["type"] for d in data]
        assert kinds.count("message_start") == 1 and kinds[0] == "message_start", kinds
        assert kinds[-1] == "error" and kinds.count("error") == 1, kinds
        assert "message_stop" not in kinds
    else:
        errors = [i for i, d in enumerate(data) if "error" in d]
        assert errors == [len(data) - 1], data
        assert not any(c.get("finishReason") for d in data[:-1] for c in d.get("candidates", ())), (
            data
        )
    return data
