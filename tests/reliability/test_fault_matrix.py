"""The fault matrix: every upstream fault x plain/stream x the four client protocols, each
client against its own protocol's upstream and against another one (translation), through
the whole stack behind uvicorn.

What must hold for every cell, whatever the fault:

* an answer within a bound (no hang), and nothing left streaming at the mock;
* before anything reached the client, a failure is an HTTP error in the client's own
  protocol's error shape, with the status the fault maps to;
* after it, the stream ends with the protocol's in-band error and never with its success
  terminal event (a client must not take a cut answer for a whole one);
* a fault the mock applies only to streams leaves a plain request answered in full;
* one close record per attempt, with the reason the fault means;
* and where the failure came before anything reached the client, a group whose first
  target has the fault answers in full from its second.

The gateway keeps its routing layers, tuned so cells cannot affect each other: no retries
(``max_attempts = 1``), no failure cooldowns (a huge ``failure_threshold``), and 429s cool
only the (key, model) pair, each cell asking for a model of its own.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from asgi_rotator.mock import Fault, MockUpstream
from tests.e2e.conftest import UPSTREAMS, provider_config, wait_for
from tests.jsonl_log import records
from tests.reliability._wire import PROTOCOLS, gateway, request_of
from tests.server import free_port, serve

LIMIT = 1.0  # ttfb and stall timeouts
MAX_EVENT = 1024 * 1024
AFTER = 6  # events before a mid-stream fault: past every protocol's opening events
OTHER = {
    "openai_chat": "anthropic_messages",
    "openai_responses": "gemini",
    "anthropic_messages": "openai_responses",
    "gemini": "openai_chat",
}
PAIRS = [(c, u) for c in PROTOCOLS for u in (c, OTHER[c])]

OK = "ok"
IN_BAND = "in_band"


def overloaded(client: str) -> int:
    return 529 if client == "anthropic_messages" else 503


# name -> (fault for a plain request, fault for a stream, plain outcome, stream outcome,
# close reason of a stream).  An outcome is OK, IN_BAND, or an HTTP status (an int, or a
# function of the client protocol).  ``None`` as a fault: the dead provider.
FAULTS: dict[str, tuple[Fault | None, Fault | None, Any, Any, str]] = {
    "429": (
        Fault(status=429, retry_after=1, times=None),
        Fault(status=429, retry_after=1, times=None),
        429,
        429,
        "upstream_error",
    ),
    # An error body nested too deeply to decode is read as one that is not JSON: the
    # upstream's status still decides (it was a 500 from the gateway itself).
    "429_deep_body": (
        Fault(status=429, retry_after=1, deep_json=True, times=None),
        Fault(status=429, retry_after=1, deep_json=True, times=None),
        429,
        429,
        "upstream_error",
    ),
    "500": (
        Fault(status=500, times=None),
        Fault(status=500, times=None),
        500,
        500,
        "upstream_error",
    ),
    "529": (
        Fault(status=529, times=None),
        Fault(status=529, times=None),
        overloaded,
        overloaded,
        "upstream_error",
    ),
    "connect_refused": (None, None, 502, 502, "upstream_error"),
    "reset": (
        Fault(reset=True, times=None),
        Fault(reset=True, eof_after=AFTER, times=None),
        502,
        IN_BAND,
        "upstream_error",
    ),
    "slow_headers": (
        Fault(header_delay=30, times=None),
        Fault(header_delay=30, times=None),
        504,
        504,
        "ttfb_timeout",
    ),
    "stall": (
        Fault(stall_after=AFTER, times=None),
        Fault(stall_after=AFTER, times=None),
        OK,
        IN_BAND,
        "stall_timeout",
    ),
    "premature_eof": (
        Fault(eof_after=AFTER, times=None),
        Fault(eof_after=AFTER, times=None),
        OK,
        IN_BAND,
        "upstream_premature_close",
    ),
    "malformed_json": (
        Fault(malformed_json=True, times=None),
        Fault(malformed_json=True, eof_after=AFTER, times=None),
        502,  # was 500, as if the gateway itself had failed
        IN_BAND,
        "upstream_error",
    ),
    # Valid JSON nested deeper than the decoder goes is the upstream's fault like malformed
    # JSON (it was a 500, or an unhandled exception that cut the stream).
    "deep_json": (
        Fault(deep_json=True, times=None),
        Fault(deep_json=True, eof_after=AFTER, times=None),
        502,
        IN_BAND,
        "upstream_error",
    ),
    # Valid JSON that is not an object: the upstream's fault too (a plain one was a 400
    # blaming the client, or a 500), passed on or translated alike.  A stream's event of it
    # says nothing, and the stream then ends short.
    "not_an_object": (
        Fault(not_an_object=True, times=None),
        Fault(not_an_object=True, eof_after=AFTER, times=None),
        502,
        IN_BAND,
        "upstream_premature_close",
    ),
    "malformed_sse": (
        Fault(malformed_sse=True, times=None),
        Fault(malformed_sse=True, eof_after=AFTER, times=None),
        OK,
        IN_BAND,
        "upstream_premature_close",
    ),
    "first_event_error": (
        Fault(status=500, error_event_after=0, times=None),
        Fault(status=500, error_event_after=0, times=None),
        500,
        500,
        "upstream_error",
    ),
    "oversized_first_event": (
        Fault(oversized_event=2 * MAX_EVENT, eof_after=0, times=None),
        Fault(oversized_event=2 * MAX_EVENT, eof_after=0, times=None),
        OK,
        502,
        "upstream_error",
    ),
    "oversized_event": (
        Fault(oversized_event=2 * MAX_EVENT, eof_after=AFTER, times=None),
        Fault(oversized_event=2 * MAX_EVENT, eof_after=AFTER, times=None),
        OK,
        IN_BAND,
        "upstream_error",
    ),
    # JSON must be UTF-8 (RFC 8259): a plain body that is not is malformed; SSE text is
    # decoded with replacement characters (WHATWG), so a stream still completes.
    "invalid_utf8": (
        Fault(invalid_utf8=True, times=None),
        Fault(invalid_utf8=True, times=None),
        502,
        OK,
        "completed",
    ),
}

_cell = itertools.count()


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[MockUpstream, str]]:
    mock = MockUpstream()
    with serve(mock) as url:
        yield mock, url


@pytest.fixture(scope="module")
def matrix_gateway(
    upstream: tuple[MockUpstream, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    providers = provider_config(upstream[1])
    for provider in providers.values():
        provider["rate_limit_scope"] = "credential_model"
    providers["up-dead"] = {
        "protocol": "openai_chat",
        "base_url": f"http://127.0.0.1:{free_port()}/v1",
        "keys": ["k"],
    }
    groups = {
        f"g-{client}-{up}": {"targets": [f"{UPSTREAMS[up]}/bad", f"{UPSTREAMS[up]}/good"]}
        for client, up in PAIRS
    }
    groups["g-dead"] = {"targets": ["up-dead/bad", f"{UPSTREAMS['openai_chat']}/good"]}
    log = tmp_path_factory.mktemp("matrix") / "close.jsonl"
    with gateway(
        upstream[1],
        groups=groups,
        stream={
            "ttfb_timeout": LIMIT,
            "stall_timeout": LIMIT,
            "heartbeat_interval": None,
            "max_event_bytes": MAX_EVENT,
            "close_log": str(log),
        },
        cooldown={"max_attempts": 1, "failure_threshold": 1_000_000},
        providers_override=providers,
    ) as url:
        yield url, log


def error_shape(client: str, body: Any) -> str:
    """The error message, read the way the client's SDK reads it (fails on another shape)."""
    if client == "anthropic_messages":
        assert body["type"] == "error"
        return str(body["error"]["message"])
    if client == "gemini":
        error = body["error"]
        assert isinstance(error["code"], int) and error["status"]
        return str(error["message"])
    return str(body["error"]["message"])


def sse_data(text: str) -> list[tuple[str | None, str]]:
    """(event name, data) of each event of an SSE body."""
    out: list[tuple[str | None, str]] = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
        if data:
            out.append((name, "\n".join(data)))
    return out


def _payload(data: str) -> dict[str, Any]:
    # A same-protocol stream passes the upstream's events on as they came, and an event that
    # is not an object (the not_an_object fault) is neither an error nor an end.
    payload = json.loads(data)
    return payload if isinstance(payload, dict) else {}


def is_error_event(client: str, name: str | None, data: str) -> bool:
    if client == "anthropic_messages":
        return name == "error"
    if data == "[DONE]":
        return False
    payload = _payload(data)
    if client == "openai_responses":
        return payload.get("type") in ("error", "response.failed")
    return "error" in payload


def is_success_end(client: str, name: str | None, data: str) -> bool:
    if client == "openai_chat":
        if data == "[DONE]":
            return False
        return any(c.get("finish_reason") for c in _payload(data).get("choices", ()))
    if client == "openai_responses":
        return _payload(data).get("type") == "response.completed"
    if client == "anthropic_messages":
        return name == "message_stop"
    return any(c.get("finishReason") for c in _payload(data).get("candidates", ()))


@pytest.mark.parametrize("fault_name", list(FAULTS))
@pytest.mark.parametrize("mode", ["plain", "stream"])
@pytest.mark.parametrize(
    ("client", "upstream_protocol"), PAIRS, ids=[f"{c}->{u}" for c, u in PAIRS]
)
def test_fault(
    upstream: tuple[MockUpstream, str],
    matrix_gateway: tuple[str, Path],
    client: str,
    upstream_protocol: str,
    mode: str,
    fault_name: str,
) -> None:
    mock = upstream[0]
    url, log = matrix_gateway
    wait_for(lambda: mock.open_streams == 0, timeout=5)
    mock.clear()
    plain_fault, stream_fault, plain_outcome, stream_outcome, reason = FAULTS[fault_name]
    stream = mode == "stream"
    fault = stream_fault if stream else plain_fault
    outcome = stream_outcome if stream else plain_outcome
    if callable(outcome):
        outcome = outcome(client)
    model = f"m{next(_cell)}"  # a cooldown of this cell's key and model touches no other cell
    if fault is None:
        target = f"up-dead/{model}"
    else:
        target = f"{UPSTREAMS[upstream_protocol]}/{model}"
        mock.add_fault(fault)
    before = len(records(log))
    path, body, headers = request_of(client, target, stream=stream)
    with httpx.Client(base_url=url, timeout=20) as http:
        response = http.post(path, json=body, headers=headers)

    if isinstance(outcome, int):
        assert response.status_code == outcome, response.text
        assert response.headers["content-type"].startswith("application/json")
        assert error_shape(client, response.json())
    else:
        assert response.status_code == 200, response.text
        if not stream:
            answer = response.json()
            assert not answer.get("error")
            assert "You said: Hello there" in json.dumps(answer, ensure_ascii=False)
        else:
            events = sse_data(response.text)
            assert events
            errors = [e for e in events if is_error_event(client, *e)]
            ends = [e for e in events if is_success_end(client, *e)]
            if outcome == IN_BAND:
                assert errors and not ends, events[-3:]
                assert events.index(errors[0]) >= len(events) - 2  # nothing after it but [DONE]
            else:
                assert ends and not errors, events[-3:]
    if stream:
        # One close record per attempt (no retries here): the reason the fault means.
        new = wait_for(lambda: len(records(log)) > before and records(log)[before:], timeout=5)
        assert [r["reason"] for r in new] == [reason]
    assert wait_for(lambda: mock.open_streams == 0, timeout=5)


# The faults that fail an attempt before anything reached the client, in either mode.
BEFORE_COMMIT = [
    name
    for name, (_, _, plain, stream, _) in FAULTS.items()
    if not isinstance(plain, str) and not isinstance(stream, str)
]


@pytest.mark.parametrize("fault_name", BEFORE_COMMIT)
@pytest.mark.parametrize("mode", ["plain", "stream"])
@pytest.mark.parametrize(
    ("client", "upstream_protocol"), [(c, OTHER[c]) for c in PROTOCOLS], ids=list(PROTOCOLS)
)
def test_a_group_moves_on_from_a_fault_before_commit(
    upstream: tuple[MockUpstream, str],
    matrix_gateway: tuple[str, Path],
    client: str,
    upstream_protocol: str,
    mode: str,
    fault_name: str,
) -> None:
    mock = upstream[0]
    url, _ = matrix_gateway
    wait_for(lambda: mock.open_streams == 0, timeout=5)
    mock.clear()
    stream = mode == "stream"
    fault = FAULTS[fault_name][1 if stream else 0]
    if fault is None:
        group = "g-dead"
    else:
        group = f"g-{client}-{upstream_protocol}"
        mock.add_fault(msgspec.structs.replace(fault, model="bad"))
    path, body, headers = request_of(client, group, stream=stream)
    with httpx.Client(base_url=url, timeout=20) as http:
        response = http.post(path, json=body, headers=headers)
    assert response.status_code == 200, response.text
    if stream:
        events = sse_data(response.text)
        assert [e for e in events if is_success_end(client, *e)]
        assert not [e for e in events if is_error_event(client, *e)]
    else:
        assert "You said: Hello there" in json.dumps(response.json(), ensure_ascii=False)
    assert [r.model for r in mock.requests][-1] == "good"
    assert wait_for(lambda: mock.open_streams == 0, timeout=5)
