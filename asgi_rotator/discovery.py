"""Model discovery: a provider's own model list, fetched on first use and kept for a TTL.

A provider that lists no models in the configuration is still asked for by bare model name
(``gpt-4.1``) and shown on ``/v1/models``: the gateway asks the provider's models endpoint
what it serves.

Deliberate choices:

* Fetched by the request that needs it (a bare name the configuration does not resolve, or a
  models listing) and awaited inside that request: no background task outlives a request.
  Concurrent requests wait for one fetch (a lock per provider), and a refresh that fails
  keeps the last good list.
* A failure never fails the request: the request goes on with what is known (the last good
  list, or none, and then the configuration alone).  It is logged once, as a warning, until
  a fetch succeeds again; the provider is asked again after ``RETRY_AFTER_FAILURE`` seconds
  (or its TTL, if shorter), so a dead endpoint costs one fetch a minute, not one a request.
* A fetch is bounded by ``FETCH_TIMEOUT`` (or the provider's read ``timeout``, if shorter):
  a request never waits on an unresponsive models endpoint for longer than that.
* The endpoint and its shape are the protocol's own: OpenAI ``GET {base}/models``
  (``data[].id``, one page), Anthropic ``GET /v1/models`` (``data[].id``, paged by
  ``after_id``), Gemini ``GET /v1beta/models`` (``models[].name`` less ``models/``, those that
  support ``generateContent``, paged by ``pageToken``).  The credential is the provider's
  first one, its grant (``asgi_rotator.auth``) in headers built as for a generation request,
  so what authenticates one authenticates the other.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import anyio
import msgspec

from .redaction import redacting_logger

if TYPE_CHECKING:
    from .providers import Provider

__all__ = [
    "DEFAULT_TTL",
    "FETCH_TIMEOUT",
    "RETRY_AFTER_FAILURE",
    "DiscoveryError",
    "ModelList",
    "fetch_models",
    "listing_protocol",
]

DEFAULT_TTL = 3600.0
RETRY_AFTER_FAILURE = 60.0
FETCH_TIMEOUT = 10.0
# A listing longer than this many pages is cut there (the largest catalogues fit in one or
# two pages of 1000).
_MAX_PAGES = 10
_PAGE_SIZE = 1000

logger = redacting_logger("asgi_rotator.discovery")

_decode = msgspec.json.decode


class DiscoveryError(Exception):
    """Why a provider's model list could not be had, in words fit for a log line."""


def _openai(page: str | None) -> str:
    return "/models"


def _anthropic(page: str | None) -> str:
    query = {"limit": _PAGE_SIZE, **({"after_id": page} if page else {})}
    return f"/v1/models?{urlencode(query)}"


def _gemini(page: str | None) -> str:
    query = {"pageSize": _PAGE_SIZE, **({"pageToken": page} if page else {})}
    return f"/v1beta/models?{urlencode(query)}"


def _read_openai(data: Any) -> tuple[list[str], str | None]:
    return [_string(m, "id") for m in _items(data, "data")], None


def _read_anthropic(data: Any) -> tuple[list[str], str | None]:
    ids = [_string(m, "id") for m in _items(data, "data")]
    # The next page starts after the last id of this one (Anthropic's ``after_id``).
    return ids, ids[-1] if data.get("has_more") is True and ids else None


def _read_gemini(data: Any) -> tuple[list[str], str | None]:
    names = [
        _string(m, "name").removeprefix("models/")
        for m in _items(data, "models")
        # Embedding and other models that cannot answer a generateContent call.
        if "generateContent" in (m.get("supportedGenerationMethods") or ("generateContent",))
    ]
    token = data.get("nextPageToken")
    return names, token if isinstance(token, str) and token else None


# protocol -> (the listing's path for a page, reading one page: its names and the next page)
_SHAPES: dict[str, tuple[Callable[[str | None], str], Callable[[Any], Any]]] = {
    "openai_chat": (_openai, _read_openai),
    "openai_responses": (_openai, _read_openai),
    "anthropic_messages": (_anthropic, _read_anthropic),
    "gemini": (_gemini, _read_gemini),
}
# OpenAI's listing first: an OpenAI-compatible server has it whatever else it speaks.
_PREFERENCE = ("openai_chat", "openai_responses", "anthropic_messages", "gemini")


def listing_protocol(protocols: tuple[str, ...]) -> str | None:
    """The protocol whose models endpoint a provider speaking ``protocols`` is asked."""
    return next((p for p in _PREFERENCE if p in protocols), None)


def _items(data: Any, key: str) -> list[dict[str, Any]]:
    items = data.get(key) if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise DiscoveryError(f"the listing has no {key!r} array")
    return [m for m in items if isinstance(m, dict)]


def _string(item: dict[str, Any], key: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value:
        raise DiscoveryError(f"a model in the listing has no {key!r}")
    return value


async def fetch_models(provider: Provider, protocol: str) -> tuple[str, ...]:
    """The model names ``provider`` lists on its ``protocol``'s models endpoint, in its
    order.  Raises ``DiscoveryError`` (or the upstream client's ``GatewayError``)."""
    path_for, read = _SHAPES[protocol]
    credential = provider.credentials[0] if provider.credentials else None
    grant = await provider.strategy.grant(credential) if credential is not None else None
    headers = provider.request_headers(protocol, grant)
    names: list[str] = []
    page: str | None = None
    for _ in range(_MAX_PAGES):
        response = await provider.client.send(
            "GET", provider.url(protocol, path_for(page)), headers, b""
        )
        try:
            raw = await response.aread()
        finally:
            await response.aclose()
        if response.status >= 400:
            raise DiscoveryError(f"the models endpoint answered HTTP {response.status}")
        try:
            data = _decode(raw)
        except msgspec.DecodeError:
            raise DiscoveryError("the models endpoint answered with invalid JSON") from None
        except RecursionError:
            raise DiscoveryError(
                "the models endpoint answered with JSON nested too deeply"
            ) from None
        found, page = read(data)
        names += found
        if page is None:
            break
    return tuple(dict.fromkeys(names))


class ModelList:
    """One provider's discovered models: fetched when due, kept for ``ttl`` seconds.

    ``models`` is the last good list (empty until a fetch succeeds); ``failure`` says why the
    last fetch failed, while it is the latest word."""

    __slots__ = (
        "_clock",
        "_lock",
        "failed_at",
        "failure",
        "fetched_at",
        "models",
        "protocol",
        "provider",
        "timeout",
        "ttl",
    )

    def __init__(
        self,
        provider: Provider,
        protocol: str,
        *,
        ttl: float = DEFAULT_TTL,
        timeout: float = FETCH_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.provider = provider
        self.protocol = protocol
        self.ttl = ttl
        self.timeout = min(timeout, FETCH_TIMEOUT)
        self.models: tuple[str, ...] = ()
        self.fetched_at: float | None = None
        self.failed_at: float | None = None
        self.failure: str | None = None
        self._clock = clock
        self._lock = anyio.Lock()

    def due(self) -> bool:
        now = self._clock()
        if self.failed_at is not None:
            return now - self.failed_at >= min(RETRY_AFTER_FAILURE, self.ttl)
        return self.fetched_at is None or now - self.fetched_at >= self.ttl

    async def refresh(self) -> bool:
        """Fetch the list if it is due (one fetch for all who ask at once); whether the list
        changed.  Never raises for the fetch's failure: that is logged, once."""
        async with self._lock:
            if not self.due():
                return False  # another request fetched it while this one waited
            try:
                with anyio.fail_after(self.timeout):
                    models = await fetch_models(self.provider, self.protocol)
            except TimeoutError:
                self._failed(f"no answer within {self.timeout:g} s")
                return False
            except Exception as exc:  # whatever went wrong, a discovery failure fails no request
                self._failed(str(exc) or type(exc).__name__)
                return False
            if self.failure is not None:
                logger.info("provider %s: model discovery works again", self.provider.name)
            self.failed_at = self.failure = None
            self.fetched_at = self._clock()
            changed = models != self.models
            self.models = models
            return changed

    def _failed(self, reason: str) -> None:
        if self.failure is None:
            # Once per run of failures: a dead endpoint is retried every minute, and a
            # warning each time would bury everything else in the log.
            logger.warning(
                "provider %s: model discovery failed (%s); bare model names and /v1/models "
                "go on without its list",
                self.provider.name,
                reason,
            )
        self.failure = reason
        self.failed_at = self._clock()

    def __repr__(self) -> str:
        return f"ModelList({self.provider.name!r}, {len(self.models)} models)"
