"""What a client sends never changes the upstream URL (issue 21, item 1).

Every client protocol against every upstream protocol, with model names built to change a
URL: each request is either refused with a 400 naming ``model`` and nothing reaches the
provider, or the provider's request line is exactly its protocol's template, the name
inside one percent-encoded segment where the template has one (Gemini).
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest

from asgi_rotator.config import parse_config
from asgi_rotator.mock import MockUpstream
from asgi_rotator.stack import build_app
from tests.e2e.conftest import UPSTREAMS, provider_config
from tests.reliability.hostile import (
    CLIENT_PROTOCOLS,
    error_message,
    error_param,
    raw_segments,
    request_for,
    upstream_path,
)
from tests.server import serve

pytestmark = pytest.mark.slow

ALL = frozenset(CLIENT_PROTOCOLS)
PATH_TEMPLATED = frozenset({"gemini"})  # the upstream protocols whose URL holds the model

# name -> the upstream protocols for which it must be refused
NAMES: dict[str, frozenset[str]] = {
    # the three from the issue
    "m?injected=1&key=attacker": ALL,
    "gemini-2.5-flash:countTokens#": ALL,
    "m/../../../../escaped": ALL,
    # another Gemini method, another segment, dot segments, escapes
    "gemini-2.5-flash:countTokens": PATH_TEMPLATED,
    "org/model": PATH_TEMPLATED,
    "llama3:8b": PATH_TEMPLATED,
    "m/./x": ALL,
    "m//x": ALL,
    "..": ALL,
    "m%2F..%2Fx": ALL,
    "m%3Fkey=x": ALL,
    "m#fragment": ALL,
    "m\\..\\x": ALL,
    # control and invisible characters (issue 21 item 6 is the 500 these used to make)
    "m\nx": ALL,
    "m\r\nHost: evil": ALL,
    "m\tx": ALL,
    "m\x00": ALL,
    "m\x7f": ALL,
    "m\x85x": ALL,
    "m\u2028x": ALL,
    "m\u200bx": ALL,
    "x" * 300: ALL,
    # accepted everywhere: what is not URL syntax once encoded
    "mock-gemini": frozenset(),
    "mock gemini": frozenset(),
    "modèle-ü": frozenset(),
    "m&key=attacker": frozenset(),
    "m;v=1": frozenset(),
    "m=@+$,": frozenset(),
}


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[MockUpstream, str]]:
    mock = MockUpstream()
    with serve(mock) as url:
        yield mock, url


@pytest.fixture(scope="module")
def gateway(upstream: tuple[MockUpstream, str]) -> Iterator[httpx.Client]:
    config = parse_config({"providers": provider_config(upstream[1])}, {})
    with serve(build_app(config, environ={})) as url, httpx.Client(base_url=url) as client:
        yield client


@pytest.mark.parametrize("upstream_protocol", CLIENT_PROTOCOLS)
def test_the_upstream_request_line_is_the_template(
    upstream: tuple[MockUpstream, str], gateway: httpx.Client, upstream_protocol: str
) -> None:
    mock = upstream[0]
    provider = UPSTREAMS[upstream_protocol]
    for client_protocol in CLIENT_PROTOCOLS:
        for name, refused_for in NAMES.items():
            streams = (False,) if upstream_protocol in refused_for else (False, True)
            for stream in streams:
                mock.clear()
                path, body = request_for(client_protocol, f"{provider}/{name}", stream=stream)
                response = gateway.post(path, json=body)
                case = f"{client_protocol} -> {upstream_protocol}, model {name!r}, stream={stream}"
                if upstream_protocol in refused_for:
                    assert response.status_code == 400, case
                    assert error_message(client_protocol, response).startswith("model: "), case
                    assert error_param(client_protocol, response) in (None, "model"), case
                    assert mock.requests == [], case
                    continue
                assert response.status_code == 200, (case, response.text)
                (sent,) = mock.requests
                path, query = upstream_path(upstream_protocol, name, stream=stream)
                assert (sent.method, sent.path, sent.query) == ("POST", path, query), case
                assert sent.model == name, case
                # As sent: exactly the template's segments, the name inside one of them.
                segments = raw_segments(sent.raw_path)
                template = upstream_path(upstream_protocol, "NAME", stream=stream)[0]
                assert len(segments) == template.count("/") + 1, case
                assert b"?" not in sent.raw_path and b"#" not in sent.raw_path, case
                if upstream_protocol == "gemini":
                    assert segments[-1].count(b":") == 1, case


def test_a_path_template_keeps_the_name_in_one_segment() -> None:
    # The unit beneath: what the Gemini codec makes of names a client could send.
    from asgi_rotator.errors import GatewayError
    from asgi_rotator.protocols import get_codec
    from asgi_rotator.unified import Request

    codec = get_codec("gemini")
    for name in ("a/../b", "m:countTokens", "m?x", "m#x", "m%2e", "m\n"):
        with pytest.raises(GatewayError) as caught:
            codec.request_path(Request(model=name))
        assert caught.value.param == "model"
        assert caught.value.status == 400
    assert (
        codec.request_path(Request(model="a b&c"))
        == f"/v1beta/models/{quote('a b&c', safe='')}:generateContent"
    )
