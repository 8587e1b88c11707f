"""Secret canaries (issue 21, item 3): every secret the gateway holds, in every output.

The gateway holds provider keys, inbound keys and a Redis URL's password.  Here each is a
unique canary, and the mock provider quotes all of them back in its error messages (HTTP
errors and in-band stream errors, as a provider answering "Incorrect API key provided:
<key>" does), through every client protocol against every upstream protocol, same
protocol and translated, plain and streamed.  No canary may appear in:

- what a client receives (status line, headers, body, stream events);
- the stream close log;
- the gateway's log records (messages and tracebacks);
- the exchange's record, which is what trace spans are made from (the passes, attempts,
  the error and the close record);
- the repr of the configuration, the providers and the state store.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import msgspec
import pytest

from asgi_rotator.config import parse_config
from asgi_rotator.errors import GatewayError
from asgi_rotator.exchange import RECORD, SCOPE_KEY, Exchange
from asgi_rotator.mock import Fault, MockUpstream
from asgi_rotator.redaction import REDACTED, redact, redacting_logger
from asgi_rotator.stack import build_app
from asgi_rotator.state import RedisStore
from tests.e2e.conftest import UPSTREAMS, provider_config
from tests.reliability.hostile import CLIENT_PROTOCOLS, request_for
from tests.server import free_port, serve

pytestmark = pytest.mark.slow

PROVIDER_KEYS = {name: f"sk-canary-{name}-3f9a1c7e5b2d" for name in UPSTREAMS.values()}
INBOUND_KEY = "inbound-canary-8c6e4a2f0d1b"
REDIS_PASSWORD = "redis-canary-7d5b3f1e9a0c"
CANARY_DB = 9
CANARIES = [*PROVIDER_KEYS.values(), INBOUND_KEY, REDIS_PASSWORD]
# What the provider says: every secret at once, as text an upstream might echo.
ECHO = "Incorrect API key provided: " + ", ".join(CANARIES)


class Recorder:
    """Outermost: asks the layers to record their passes and keeps each exchange."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.exchanges: list[Exchange] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope[RECORD] = True
        try:
            await self.app(scope, receive, send)
        finally:
            if scope["type"] == "http" and SCOPE_KEY in scope:
                self.exchanges.append(scope[SCOPE_KEY])

    def dump(self) -> str:
        """Everything a tracing layer could make attributes of, as text."""
        out = []
        for exchange in self.exchanges:
            out.append(msgspec.json.encode(exchange.passes).decode())
            out.append(msgspec.json.encode(exchange.attempts).decode())
            current = exchange.current
            out.append(msgspec.json.encode(current.close_record).decode())
            if current.error is not None:
                out.append(f"{current.error!r} {current.error} {current.error.code}")
        return "\n".join(out)


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def _leaks(text: str | bytes) -> list[str]:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return [canary for canary in CANARIES if canary in text]


@pytest.fixture(scope="module")
def redis_url(redis_server: str) -> str:
    """The session's redis-server, entered as a user whose password is a canary, on a
    database of this module's own: what other modules left there (a key they cooled down
    for a minute) must not keep these requests from the provider."""
    import redis

    url = redis_server.rsplit("/", 1)[0] + f"/{CANARY_DB}"
    admin = redis.Redis.from_url(url)
    try:
        admin.flushdb()
        admin.execute_command(
            "ACL", "SETUSER", "canary", "on", f">{REDIS_PASSWORD}", "~*", "&*", "+@all"
        )
    finally:
        admin.close()
    return url.replace("redis://", f"redis://canary:{REDIS_PASSWORD}@", 1)


@pytest.fixture(scope="module")
def upstream() -> Iterator[MockUpstream]:
    # Events apart in time, so a late error event reaches the gateway after the content
    # before it was committed to the client, not in the same read.
    mock = MockUpstream(chunk_delay=0.02)
    with serve(mock) as url:
        mock.url = url  # type: ignore[attr-defined]
        yield mock


@pytest.fixture(scope="module")
def captured() -> Iterator[Captured]:
    handler = Captured()
    root = logging.getLogger()
    gateway_logger = logging.getLogger("asgi_rotator")
    level = gateway_logger.level
    root.addHandler(handler)
    gateway_logger.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    gateway_logger.setLevel(level)


# How long a key the provider refused (401) stays out of rotation: each 401 case waits it
# out, so the next case reaches the provider however soon the client sends it.
AUTH_COOLDOWN = 0.01


@pytest.fixture(scope="module")
def gateway(
    upstream: MockUpstream,
    redis_url: str,
    captured: Captured,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[httpx.Client, Recorder, Path, Any]]:
    providers = provider_config(upstream.url)  # type: ignore[attr-defined]
    for name, provider in providers.items():
        provider["keys"] = [f"env:KEY_{name.upper().replace('-', '_')}"]
    environ = {f"KEY_{n.upper().replace('-', '_')}": k for n, k in PROVIDER_KEYS.items()}
    close_log = tmp_path_factory.mktemp("canaries") / "close.jsonl"
    config = parse_config(
        {
            "server": {"inbound_keys": [INBOUND_KEY]},
            "providers": providers,
            "state": {"backend": "redis", "url": redis_url},
            "stream": {"close_log": str(close_log)},
            # A refused or failing key would be out of rotation: every case must reach the
            # provider, which is what quotes the secrets.
            "cooldown": {
                "auth_cooldown": AUTH_COOLDOWN,
                "max_attempts": 1,
                "failure_threshold": 10**6,
            },
        },
        environ,
    )
    app = build_app(config, environ=environ)
    recorder = Recorder(app)
    headers = {"authorization": f"Bearer {INBOUND_KEY}", "x-api-key": INBOUND_KEY}
    with (
        serve(recorder) as url,
        httpx.Client(base_url=url, headers=headers, timeout=30) as client,
    ):
        yield client, recorder, close_log, (config, app)


CASES = [
    # (upstream fault, stream)
    ("http_401", False),
    ("http_401", True),
    ("http_400", False),
    ("event_first", True),  # an in-band error before anything was committed
    ("event_late", True),  # an in-band error after content reached the client
]


def _fault(kind: str) -> Fault:
    if kind == "http_401":
        return Fault(status=401, message=ECHO, times=None)
    if kind == "http_400":
        return Fault(status=400, message=ECHO, times=None)
    after = 1 if kind == "event_first" else 3
    return Fault(status=500, message=ECHO, error_event_after=after, times=None)


@pytest.mark.parametrize("upstream_protocol", CLIENT_PROTOCOLS)
def test_no_secret_reaches_any_output(
    gateway: tuple[httpx.Client, Recorder, Path, Any],
    upstream: MockUpstream,
    captured: Captured,
    upstream_protocol: str,
) -> None:
    client, recorder, close_log, _ = gateway
    provider = UPSTREAMS[upstream_protocol]
    for kind, stream in CASES:
        for client_protocol in CLIENT_PROTOCOLS:
            upstream.clear()
            upstream.add_fault(_fault(kind))
            path, body = request_for(client_protocol, f"{provider}/mock-model", stream=stream)
            response = client.post(path, json=body)
            case = f"{client_protocol} -> {upstream_protocol}, {kind}, stream={stream}"
            # The provider did quote the secrets, and the client heard about the failure.
            assert upstream.requests, case
            assert response.status_code >= 400 or b"error" in response.content, case
            seen = "\n".join([str(response.status_code), str(response.headers), response.text])
            assert _leaks(seen) == [], (case, seen)
            assert REDACTED in response.text, (case, response.text)
            if kind == "http_401":
                time.sleep(2 * AUTH_COOLDOWN)
    assert _leaks(recorder.dump()) == []
    assert close_log.exists() and _leaks(close_log.read_text()) == []
    assert _leaks("\n".join(captured.lines)) == []


def test_no_secret_in_reprs(gateway: tuple[httpx.Client, Recorder, Path, Any]) -> None:
    config, app = gateway[3]
    texts = [repr(config), str(config), repr(app)]
    providers = getattr(app, "providers", None)
    if providers is not None:
        texts += [
            repr(providers),
            *(repr(p) for p in providers),
            *(repr(c) for p in providers for c in p.credentials),
        ]
    assert _leaks("\n".join(texts)) == []


def test_an_unreachable_redis_does_not_show_its_password(captured: Captured) -> None:
    url = f"redis://canary:{REDIS_PASSWORD}@127.0.0.1:{free_port()}/0"
    store = RedisStore(url, timeout=2)

    async def fail() -> str:
        try:
            await store.get("k")
        except Exception as exc:  # StateUnavailableError, with redis-py's words inside
            logger = redacting_logger("asgi_rotator.state")
            logger.exception("state store failed")
            return f"{exc!r} {exc} {exc.__cause__!r}"
        finally:
            await store.aclose()
        raise AssertionError("an unreachable Redis answered")

    text = anyio.run(fail)
    assert _leaks(redact(text) + repr(store)) == []
    assert _leaks("\n".join(captured.lines)) == []


def test_redaction_at_the_cause() -> None:
    # The unit beneath: an error made from a provider's words no longer holds the key.
    error = GatewayError("auth", f"Incorrect API key provided: {PROVIDER_KEYS['up-chat']}")
    assert PROVIDER_KEYS["up-chat"] not in error.message + str(error) + repr(error)
    # And JSON-escaped or percent-encoded, as a key appears in a body or a URL.
    assert _leaks(redact(json.dumps({"k": INBOUND_KEY}))) == []
