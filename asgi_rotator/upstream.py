"""The upstream-client seam: the four things the gateway does with a provider's HTTP server.

``UpstreamClient.send`` opens a request and returns an ``UpstreamResponse`` once the status
and headers are in; the body is then read (``aread``) or iterated (``aiter_bytes``), and the
response is always closed (``aclose``), which releases or discards its connection.  Transport
failures come out as ``GatewayError`` of kind ``timeout`` or ``connection``, never as a
client library's exception, so nothing above this module knows which client is in use.

Three implementations, chosen by name with ``make_client`` (fastest first, as measured by
``python -m benchmarks``; the HTTP client, not the middlewares, sets the gateway's ceiling):

* ``aiohttp`` (extra ``asgi-rotator[aiohttp]``): its C-accelerated HTTP parser makes it
  several times cheaper per request than the httpx family.
* ``httpx2`` (extra ``asgi-rotator[httpx2]``), the maintained httpx fork the official SDKs
  now use; about twice as cheap as httpx.
* ``httpx``, always installed; the only one that takes an ``httpx`` transport, which keeps
  ``httpx.MockTransport``/``ASGITransport`` (the in-process ``mock://`` provider) usable.

``"auto"`` is the first of these whose library is installed.

Deliberate choices, the same for all three:

* One pooled client per provider, created on the first ``send`` (inside the running loop,
  which aiohttp requires; a mounted sub-app's lifespan may never run) and closed by
  ``aclose``.  It is bound to that loop: a client is not shared between event loops.
* ``accept-encoding: identity``: SSE passes through untouched and is never buffered by a
  decompressor.
* No cookie jar.  A provider's cookies (load-balancer affinity, bot-management tokens) set
  for one credential must not ride along on another credential's requests, and a jar that
  only grows has no place in a long-running gateway.
* No overall deadline, only per-phase timeouts: ``connect_timeout`` for the TCP/TLS
  connect, ``timeout`` for waiting on a pooled connection and between two reads.  A stream
  may run for as long as it keeps producing (aiohttp's own default would cut every stream
  at five minutes); the stream guard enforces TTFB and stall limits above this layer.
* Closing a response that was not read to its end discards its connection instead of
  returning it to the pool (the unread rest would otherwise be taken for the next
  response); a fully read one goes back to the pool.  Closing never awaits, so it still
  happens when the request is being cancelled (client disconnect).
"""

from __future__ import annotations

import importlib.util
import os
import socket
import ssl
import urllib.request
from collections.abc import AsyncGenerator, Mapping
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import httpx

from .errors import GatewayError

if TYPE_CHECKING:
    import aiohttp

__all__ = [
    "CLIENTS",
    "DEFAULT_CLIENT",
    "AiohttpUpstream",
    "Httpx2Upstream",
    "HttpxUpstream",
    "UpstreamClient",
    "UpstreamResponse",
    "available_clients",
    "make_client",
]

# Implementation name -> the module it needs; fastest first, which is what "auto" walks.
CLIENTS: dict[str, str] = {"aiohttp": "aiohttp", "httpx2": "httpx2", "httpx": "httpx"}
_EXTRAS = {"aiohttp": "aiohttp", "httpx2": "httpx2"}
DEFAULT_CLIENT = "auto"  # the fastest installed: measured in benchmarks/README.md
# A provider's limits unless configured (config's ProviderConfig names these).
DEFAULT_TIMEOUT = 600.0  # the whole upstream request, a long generation included
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_MAX_CONNECTIONS = 100
_IDENTITY = {"accept-encoding": "identity"}
_URL_CACHE_SIZE = 1024


class UpstreamResponse(Protocol):
    status: int
    headers: Mapping[str, str]  # case-insensitive

    def aiter_bytes(self) -> AsyncGenerator[bytes, None]: ...
    async def aread(self) -> bytes: ...
    async def aclose(self) -> None: ...


class UpstreamClient(Protocol):
    async def send(
        self, method: str, url: str, headers: list[tuple[str, str]], body: bytes
    ) -> UpstreamResponse: ...
    async def aclose(self) -> None: ...


def available_clients() -> tuple[str, ...]:
    """The implementations whose library is installed, fastest first."""
    return tuple(name for name, module in CLIENTS.items() if _installed(module))


def make_client(
    name: str = DEFAULT_CLIENT,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
) -> UpstreamClient:
    """A pooled upstream client by implementation name (``auto``, ``aiohttp``, ``httpx2``,
    ``httpx``).  Raises ``ValueError`` for an unknown name or a library not installed."""
    if name == "auto":
        name = available_clients()[0]
    if name not in CLIENTS:
        raise ValueError(
            f"unknown upstream client {name!r}; expected auto or one of {', '.join(CLIENTS)}"
        )
    if not _installed(CLIENTS[name]):
        raise ValueError(
            f"upstream client {name!r} needs {CLIENTS[name]}: "
            f"pip install 'asgi-rotator[{_EXTRAS[name]}]'"
        )
    kinds: dict[str, Any] = {
        "aiohttp": AiohttpUpstream,
        "httpx2": Httpx2Upstream,
        "httpx": HttpxUpstream,
    }
    client: UpstreamClient = kinds[name](
        timeout=timeout, connect_timeout=connect_timeout, max_connections=max_connections
    )
    return client


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _failure(kind: str, exc: BaseException, url: str, *, reading: bool = False) -> GatewayError:
    """A client library's timeout or transport error as the gateway's error, naming the
    host and the failure's own reason (``Name or service not known``, ``Connection
    refused``).  A library's message is never passed on: it may carry the URL, query
    string included; the host comes from the URL and the reason from the operating
    system's or the TLS library's own words."""
    name = type(exc).__name__
    host = _host(url)
    if kind == "timeout":
        what = "reading from" if reading else "connecting to"
        return GatewayError("timeout", f"upstream timed out {what} {host} ({name})")
    where = " while reading" if reading else ""
    reason = _reason(exc)
    detail = f"{reason} ({name})" if reason else name
    return GatewayError("connection", f"upstream connection to {host} failed{where}: {detail}")


def _host(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{host}:{parts.port}" if parts.port else host


def _reason(exc: BaseException) -> str | None:
    """The operating system's or TLS library's words for what went wrong, found along the
    exception's chain (a library wraps the ``OSError`` in one or two of its own)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        inner = getattr(current, "os_error", None)  # aiohttp's connector errors
        for candidate in (inner, current):
            if isinstance(candidate, ssl.SSLError):
                verify = getattr(candidate, "verify_message", None)
                return f"TLS: {verify or candidate.reason or 'handshake failed'}"
            if isinstance(candidate, socket.gaierror) and candidate.strerror:
                return candidate.strerror  # DNS: "Name or service not known"
            if isinstance(candidate, OSError) and candidate.errno and candidate.errno > 0:
                return os.strerror(candidate.errno)  # "Connection refused"
        current = current.__cause__ or current.__context__
    return None


# --- httpx and httpx2 ---------------------------------------------------------------------


class _HttpxResponse:
    __slots__ = ("_lib", "_response", "headers", "status")

    def __init__(self, response: Any, lib: Any) -> None:
        self._response = response
        self._lib = lib
        self.status: int = response.status_code
        self.headers: Mapping[str, str] = response.headers  # case-insensitive

    async def aiter_bytes(self) -> AsyncGenerator[bytes, None]:
        lib = self._lib
        try:
            async for chunk in self._response.aiter_bytes():
                yield chunk
                del chunk  # not kept through the wait for the next read
        except lib.TimeoutException as exc:
            raise _failure("timeout", exc, str(self._response.url), reading=True) from None
        except lib.TransportError as exc:
            raise _failure("connection", exc, str(self._response.url), reading=True) from None

    async def aread(self) -> bytes:
        chunks = [chunk async for chunk in self.aiter_bytes()]
        return b"".join(chunks)

    async def aclose(self) -> None:
        # httpcore shields its own pool bookkeeping from cancellation, so an unread
        # connection is discarded even when this runs in a cancelled scope.
        await self._response.aclose()


class _HttpxFamily:
    """httpx and httpx2 share one API; ``_lib`` says which one."""

    _lib: Any = httpx

    def __init__(
        self,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        transport: Any = None,
    ) -> None:
        lib = self._lib
        self._timeout = lib.Timeout(timeout, connect=connect_timeout)
        self._limits = lib.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._transport = transport
        self._client: Any = None

    def _make_client(self) -> Any:
        kwargs: dict[str, Any] = {"timeout": self._timeout, "limits": self._limits}
        if self._transport is not None:
            kwargs["transport"] = self._transport
        return self._lib.AsyncClient(headers=_IDENTITY, cookies=_no_cookies(), **kwargs)

    async def send(
        self, method: str, url: str, headers: list[tuple[str, str]], body: bytes
    ) -> _HttpxResponse:
        lib = self._lib
        client = self._client
        if client is None:
            client = self._client = self._make_client()
        request = client.build_request(method, url, headers=headers, content=body)
        try:
            response = await client.send(request, stream=True)
        except lib.TimeoutException as exc:
            raise _failure("timeout", exc, url) from None
        except lib.TransportError as exc:
            raise _failure("connection", exc, url) from None
        return _HttpxResponse(response, lib)

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


class HttpxUpstream(_HttpxFamily):
    """One pooled ``httpx.AsyncClient``.  ``transport`` (an ``httpx.AsyncBaseTransport``)
    replaces the network, e.g. ``httpx.MockTransport`` in tests."""

    _lib = httpx


class Httpx2Upstream(_HttpxFamily):
    """One pooled ``httpx2.AsyncClient``; ``transport`` is an httpx2 transport."""

    def __init__(self, **kwargs: Any) -> None:
        import httpx2

        self._lib = httpx2
        super().__init__(**kwargs)


def _no_cookies() -> CookieJar:
    return CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))


# --- aiohttp ------------------------------------------------------------------------------


class _AiohttpResponse:
    __slots__ = ("_errors", "_response", "headers", "status")

    def __init__(
        self, response: aiohttp.ClientResponse, errors: tuple[type[BaseException], ...]
    ) -> None:
        self._response = response
        self._errors = errors
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers  # case-insensitive

    async def aiter_bytes(self) -> AsyncGenerator[bytes, None]:
        # readany() hands over whatever has arrived: one SSE event is never held back
        # waiting for a buffer to fill.
        readany = self._response.content.readany
        try:
            while chunk := await readany():
                yield chunk
                del chunk  # not kept through the wait for the next read
        except TimeoutError as exc:
            raise _failure("timeout", exc, str(self._response.url), reading=True) from None
        except self._errors as exc:
            raise _failure("connection", exc, str(self._response.url), reading=True) from None

    async def aread(self) -> bytes:
        try:
            return await self._response.read()
        except TimeoutError as exc:
            raise _failure("timeout", exc, str(self._response.url), reading=True) from None
        except self._errors as exc:
            raise _failure("connection", exc, str(self._response.url), reading=True) from None

    async def aclose(self) -> None:
        response = self._response
        if response.content.is_eof():
            response.release()  # back to the pool
        else:
            response.close()  # the rest was never read: the connection cannot be reused


class AiohttpUpstream:
    """One pooled ``aiohttp.ClientSession``, created on the first ``send`` inside the
    running loop (aiohttp binds a session to the loop it was made in)."""

    def __init__(
        self,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        import aiohttp
        import yarl

        self._aiohttp = aiohttp
        self._url_type = yarl.URL
        self._errors = (aiohttp.ClientError, OSError)
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=timeout, sock_connect=connect_timeout, sock_read=timeout
        )
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._urls: dict[str, Any] = {}

    def _make_session(self) -> aiohttp.ClientSession:
        aiohttp = self._aiohttp
        # httpx's trust store (certifi, or SSL_CERT_FILE / SSL_CERT_DIR), so switching clients
        # never changes which servers are trusted; aiohttp alone would use the system store,
        # absent from slim container images.
        ssl_context = httpx.create_ssl_context()
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=self._max_connections, limit_per_host=0, ssl=ssl_context
            ),
            timeout=self._timeout,
            headers=_IDENTITY,
            cookie_jar=aiohttp.DummyCookieJar(),
            # Proxy variables are honoured like httpx does; without any set, aiohttp is
            # spared a per-request environment lookup.
            trust_env=bool(urllib.request.getproxies()),
            raise_for_status=False,
        )

    def _url(self, url: str) -> Any:
        # yarl parses and normalises a URL in microseconds, on every request otherwise;
        # a gateway sends to a handful of URLs.
        parsed = self._urls.get(url)
        if parsed is None:
            if len(self._urls) >= _URL_CACHE_SIZE:
                self._urls.clear()
            parsed = self._urls[url] = self._url_type(url)
        return parsed

    async def send(
        self, method: str, url: str, headers: list[tuple[str, str]], body: bytes
    ) -> _AiohttpResponse:
        session = self._session
        if session is None:
            session = self._session = self._make_session()
        try:
            # On any failure or cancellation before the headers are in, aiohttp closes the
            # connection it was using; nothing is left checked out of the pool.
            response = await session.request(
                method, self._url(url), headers=headers, data=body, allow_redirects=False
            )
        except TimeoutError as exc:
            raise _failure("timeout", exc, url) from None
        except self._errors as exc:
            raise _failure("connection", exc, url) from None
        return _AiohttpResponse(response, self._errors)

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
