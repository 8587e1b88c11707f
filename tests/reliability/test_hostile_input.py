"""The hostile-input sweep (issue 21, the reliability suite): for every client protocol,
hundreds of requests built to break a parser, a validator or a URL, sent as raw HTTP to the
whole stack behind uvicorn.

What must hold, for every one of them:
- never a 5xx, never a hang;
- what is invalid in the client's own protocol is refused with a 400 (or 405, 413, 415)
  in that protocol's shape, naming the field, and nothing is sent upstream;
- a model name that is accepted leaves the upstream URL its template (test_upstream_url.py
  holds every request line to it).

The inputs are generated tables (every modeled field x every wrong JSON type, bodies that
are not JSON objects, hostile model names, nested fields) and a hypothesis search over
random field values, derandomised so CI sees the same examples every run.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asgi_rotator.config import parse_config
from asgi_rotator.mock import MockUpstream
from asgi_rotator.stack import build_app
from tests.e2e.conftest import UPSTREAMS, provider_config
from tests.reliability.hostile import CLIENT_PROTOCOLS, base_body, error_message, request_for
from tests.reliability.test_upstream_url import NAMES
from tests.server import serve

pytestmark = pytest.mark.slow

MAX_BODY = 256 * 1024

# The JSON kinds a value can have, and one or two values of each.
VALUES: dict[str, list[Any]] = {
    "array": [[], [1], [{"a": 1}]],
    "object": [{}, {"a": 1}],
    "string": ["", "x", "\x00\u2028"],
    "integer": [-1, 0, 7],
    "number": [1.5, -0.25],
    "boolean": [True, False],
}
NUMBER = frozenset({"integer", "number"})

# Every field the gateway models, per protocol, with the JSON kinds its protocol allows.
# A value of another kind must be refused locally, naming the field.
FIELDS: dict[str, dict[tuple[str, ...], frozenset[str]]] = {
    "openai_chat": {
        ("model",): frozenset({"string"}),
        ("messages",): frozenset({"array"}),
        ("max_tokens",): frozenset({"integer"}),
        ("max_completion_tokens",): frozenset({"integer"}),
        ("temperature",): NUMBER,
        ("top_p",): NUMBER,
        ("presence_penalty",): NUMBER,
        ("frequency_penalty",): NUMBER,
        ("seed",): frozenset({"integer"}),
        ("stream",): frozenset({"boolean"}),
        ("stream_options",): frozenset({"object"}),
        ("tool_choice",): frozenset({"string", "object"}),
        ("function_call",): frozenset({"string", "object"}),
        ("parallel_tool_calls",): frozenset({"boolean"}),
        ("reasoning_effort",): frozenset({"string"}),
        ("response_format",): frozenset({"object"}),
        ("metadata",): frozenset({"object"}),
        ("user",): frozenset({"string"}),
        ("tools",): frozenset({"array"}),
        ("functions",): frozenset({"array"}),
        ("stop",): frozenset({"string", "array"}),
        ("messages", 0): frozenset({"object"}),
        ("messages", 0, "role"): frozenset({"string"}),
        ("messages", 0, "content"): frozenset({"string", "array"}),
        ("messages", 0, "name"): frozenset({"string"}),
    },
    "openai_responses": {
        ("model",): frozenset({"string"}),
        ("input",): frozenset({"string", "array"}),
        ("instructions",): frozenset({"string"}),
        ("max_output_tokens",): frozenset({"integer"}),
        ("temperature",): NUMBER,
        ("top_p",): NUMBER,
        ("stream",): frozenset({"boolean"}),
        ("tool_choice",): frozenset({"string", "object"}),
        ("parallel_tool_calls",): frozenset({"boolean"}),
        ("reasoning",): frozenset({"object"}),
        ("text",): frozenset({"object"}),
        ("store",): frozenset({"boolean"}),
        ("previous_response_id",): frozenset({"string"}),
        ("metadata",): frozenset({"object"}),
        ("user",): frozenset({"string"}),
        ("tools",): frozenset({"array"}),
    },
    "anthropic_messages": {
        ("model",): frozenset({"string"}),
        ("max_tokens",): frozenset({"integer"}),
        ("messages",): frozenset({"array"}),
        ("system",): frozenset({"string", "array"}),
        ("temperature",): NUMBER,
        ("top_p",): NUMBER,
        ("top_k",): frozenset({"integer"}),
        ("stream",): frozenset({"boolean"}),
        ("tool_choice",): frozenset({"object"}),
        ("tools",): frozenset({"array"}),
        ("stop_sequences",): frozenset({"array"}),
        ("metadata",): frozenset({"object"}),
        ("thinking",): frozenset({"object"}),
        ("messages", 0): frozenset({"object"}),
        ("messages", 0, "role"): frozenset({"string"}),
        ("messages", 0, "content"): frozenset({"string", "array"}),
    },
    "gemini": {
        ("contents",): frozenset({"array"}),
        ("systemInstruction",): frozenset({"object"}),
        ("tools",): frozenset({"array"}),
        ("toolConfig",): frozenset({"object"}),
        ("generationConfig",): frozenset({"object"}),
        ("generationConfig", "maxOutputTokens"): frozenset({"integer"}),
        ("generationConfig", "temperature"): NUMBER,
        ("generationConfig", "topP"): NUMBER,
        ("generationConfig", "topK"): frozenset({"integer"}),
        ("generationConfig", "seed"): frozenset({"integer"}),
        ("generationConfig", "presencePenalty"): NUMBER,
        ("generationConfig", "frequencyPenalty"): NUMBER,
        ("generationConfig", "stopSequences"): frozenset({"array"}),
        ("generationConfig", "thinkingConfig"): frozenset({"object"}),
        ("contents", 0): frozenset({"object"}),
        ("contents", 0, "role"): frozenset({"string"}),
        ("contents", 0, "parts"): frozenset({"array"}),
    },
}

# Bodies that are not a request in any protocol: refused before a field is read.
NOT_REQUESTS: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("null", b"null"),
    ("array", b"[]"),
    ("string", b'"hi"'),
    ("number", b"1"),
    ("truncated", b'{"model": "m", "messages": ['),
    ("trailing garbage", b"{} {}"),
    ("invalid UTF-8", b'{"model": "\xff\xfe"}'),
    ("lone surrogate", b'{"model": "\\ud800"}'),
    ("NaN", b'{"temperature": NaN}'),
    ("deep arrays", b"[" * 100_000 + b"]" * 100_000),
    ("deep objects", b'{"a":' * 50_000 + b"1" + b"}" * 50_000),
    ("single quotes", b"{'model': 'm'}"),
    ("comment", b'{"model": "m" /* hi */}'),
]


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _with(body: Any, path: tuple[str | int, ...], value: Any) -> Any:
    """A copy of ``body`` with ``value`` at ``path`` (missing objects made on the way)."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(head, int):
        items = list(body)
        items[head] = _with(items[head], rest, value)
        return items
    out = dict(body)
    out[head] = _with(out.get(head, {}), rest, value)
    return out


def _field_name(path: tuple[str | int, ...]) -> str:
    """How the gateway names a nested field: ``messages[0].role``."""
    name = ""
    for part in path:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else part)
    return name


def _model(protocol: str) -> str:
    return f"{UPSTREAMS[protocol]}/mock-model"  # the same-protocol provider: passthrough


def _type_cases(protocol: str) -> list[tuple[tuple[str | int, ...], Any, bool]]:
    """(field path, value, must be refused) for every modeled field and every kind."""
    cases = []
    for path, allowed in FIELDS[protocol].items():
        for kind, values in VALUES.items():
            for value in values:
                cases.append((path, value, kind not in allowed))
    return cases


@pytest.fixture(scope="module")
def upstream() -> Iterator[MockUpstream]:
    mock = MockUpstream()
    with serve(mock) as url:
        mock.url = url  # type: ignore[attr-defined]
        yield mock


@pytest.fixture(scope="module")
def gateway(upstream: MockUpstream) -> Iterator[httpx.Client]:
    config = parse_config(
        {
            "server": {"max_body_bytes": MAX_BODY},
            "providers": provider_config(upstream.url),  # type: ignore[attr-defined]
        },
        {},
    )
    with (
        serve(build_app(config, environ={})) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        yield client


def _send(
    gateway: httpx.Client, mock: MockUpstream, protocol: str, body: Any, *, raw: bytes | None = None
) -> httpx.Response:
    mock.clear()
    path, body = request_for(protocol, _model(protocol), body)
    if raw is not None:
        return gateway.post(path, content=raw, headers={"content-type": "application/json"})
    return gateway.post(path, json=body)


def _assert_refused(
    protocol: str, response: httpx.Response, mock: MockUpstream, field: str | None, case: str
) -> None:
    assert response.status_code in (400, 413, 415), (case, response.status_code, response.text)
    message = error_message(protocol, response)  # the client protocol's own error shape
    if field is not None:
        assert field in message, (case, message)
    assert mock.requests == [], case


@pytest.mark.parametrize("protocol", CLIENT_PROTOCOLS)
def test_a_modeled_field_of_the_wrong_type_is_refused_locally(
    gateway: httpx.Client, upstream: MockUpstream, protocol: str
) -> None:
    cases = _type_cases(protocol)
    refused = 0
    for path, value, must_refuse in cases:
        body = _with(base_body(protocol, _model(protocol)), path, value)
        response = _send(gateway, upstream, protocol, body)
        case = f"{protocol}: {_field_name(path)} = {value!r}"
        assert response.status_code < 500, (case, response.text)
        if must_refuse:
            refused += 1
            _assert_refused(protocol, response, upstream, _field_name(path), case)
    assert refused >= 100  # the table is what it claims to be


@pytest.mark.parametrize("protocol", CLIENT_PROTOCOLS)
def test_a_body_that_is_not_a_request_is_refused_locally(
    gateway: httpx.Client, upstream: MockUpstream, protocol: str
) -> None:
    for name, raw in NOT_REQUESTS:
        response = _send(gateway, upstream, protocol, None, raw=raw)
        _assert_refused(protocol, response, upstream, None, f"{protocol}: {name}")
    # Too large, and not JSON at all.
    response = _send(gateway, upstream, protocol, None, raw=b" " * (MAX_BODY + 1))
    assert response.status_code == 413
    assert upstream.requests == []
    path, _ = request_for(protocol, _model(protocol))
    response = gateway.post(path, content=b"hi", headers={"content-type": "text/plain"})
    assert response.status_code == 415


@pytest.mark.parametrize("protocol", CLIENT_PROTOCOLS)
def test_required_content_that_is_empty_is_refused_locally(
    gateway: httpx.Client, upstream: MockUpstream, protocol: str
) -> None:
    # Issue 21 item 9: `input: []` and `messages: []` reached the provider.
    field = {"openai_chat": "messages", "openai_responses": "input"}.get(
        protocol, "contents" if protocol == "gemini" else "messages"
    )
    body = {**base_body(protocol, _model(protocol)), field: []}
    _assert_refused(
        protocol, _send(gateway, upstream, protocol, body), upstream, field, f"{protocol}: {field}"
    )


@pytest.mark.parametrize("protocol", CLIENT_PROTOCOLS)
def test_hostile_model_names_are_refused_or_harmless(
    gateway: httpx.Client, upstream: MockUpstream, protocol: str
) -> None:
    for name, refused_for in NAMES.items():
        for model in (name, f"{UPSTREAMS[protocol]}/{name}", f"nowhere/{name}"):
            upstream.clear()
            path, body = request_for(protocol, model)
            response = gateway.post(path, json=body)
            case = f"{protocol}: model {model!r}"
            assert response.status_code < 500, (case, response.text)
            if refused_for == frozenset(CLIENT_PROTOCOLS):
                _assert_refused(protocol, response, upstream, "model", case)


# Random values for the protocol's own fields (and a few unknown ones), anywhere in the body.
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def _random_bodies(protocol: str) -> st.SearchStrategy[dict[str, Any]]:
    top = sorted({path[0] for path in FIELDS[protocol]} | {"extra", "x-unknown"})
    return st.dictionaries(st.sampled_from(top), _JSON, max_size=4).map(
        lambda changes: {**base_body(protocol, _model(protocol)), **changes}
    )


@pytest.mark.parametrize("protocol", CLIENT_PROTOCOLS)
def test_random_bodies_never_break_the_gateway(
    gateway: httpx.Client, upstream: MockUpstream, protocol: str
) -> None:
    @settings(
        max_examples=200,
        deadline=None,
        derandomize=True,  # the same examples on every run: CI is reproducible
        database=None,  # nothing written to the working tree
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(body=_random_bodies(protocol))
    def check(body: dict[str, Any]) -> None:
        response = _send(gateway, upstream, protocol, body)
        assert response.status_code < 500, (body, response.text)
        if response.status_code == 200:
            assert len(upstream.requests) == 1
        else:
            error_message(protocol, response)  # an error in the client's protocol
            # The mock provider refuses only what is malformed in its protocol, and the
            # gateway must have refused that first: a refusal here never cost a provider call.
            assert upstream.requests == [], (body, response.text)

    check()


def test_hostile_stored_response_ids_are_answered_locally(
    gateway: httpx.Client, upstream: MockUpstream
) -> None:
    # /v1/responses/{id} is served from the gateway's store: an id becomes a state key, so
    # one that no store could hold is still an ordinary 4xx, never a 5xx.
    ids = ["%0A", "a%00b", "x" * 700, "%E2%80%A8", "..%2F..", "resp_%7F", "%25", "resp_?x=1"]
    for raw_id in ids:
        for method, suffix in (("GET", ""), ("DELETE", ""), ("GET", "/input_items")):
            upstream.clear()
            response = gateway.request(method, f"/v1/responses/{raw_id}{suffix}")
            case = f"{method} /v1/responses/{raw_id}{suffix}"
            assert 400 <= response.status_code < 500, (case, response.text)
            error_message("openai_responses", response)
            assert upstream.requests == [], case
    for previous in ("a\nb", "x" * 700, "resp_\u2028", ""):
        body = {**base_body("openai_responses", _model("openai_responses"))}
        body["previous_response_id"] = previous
        response = _send(gateway, upstream, "openai_responses", body)
        _assert_refused("openai_responses", response, upstream, "previous_response_id", previous)
