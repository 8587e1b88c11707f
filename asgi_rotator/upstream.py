"""The upstream-client seam: the four things the gateway does with a provider's HTTP server.

``UpstreamClient.send`` opens a request and returns an ``UpstreamResponse`` once the status
and headers are in; the body is then read (``aread``) or iterated (``aiter_bytes``), and the
response is always closed (``aclose``), which releases or discards its connection.  Transport
failures come out as ``GatewayError`` of kind ``timeout`` or ``connection``, never as a
client library's exception, so nothing above this module knows which client is in use.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

import httpx

from .errors import GatewayError

__all__ = ["HttpxUpstream", "UpstreamClient", "UpstreamResponse"]


class UpstreamResponse(Protocol):
    status: int
    headers: Mapping[str, str]  # lower-case names

    def aiter_bytes(self) -> AsyncIterator[bytes]: ...
    async def aread(self) -> bytes: ...
    async def aclose(self) -> None: ...


class UpstreamClient(Protocol):
    async def send(
        self, method: str, url: str, headers: list[tuple[str, str]], body: bytes
    ) -> UpstreamResponse: ...
    async def aclose(self) -> None: ...


class _HttpxResponse:
    __slots__ = ("_response", "headers", "status")

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code
        self.headers = response.headers  # case-insensitive

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.aiter_bytes():
                yield chunk
        except httpx.TimeoutException as exc:
            raise GatewayError(
                "timeout", f"upstream read timed out ({type(exc).__name__})"
            ) from None
        except httpx.TransportError as exc:
            raise GatewayError(
                "connection", f"upstream connection failed while reading: {type(exc).__name__}"
            ) from None

    async def aread(self) -> bytes:
        chunks = [chunk async for chunk in self.aiter_bytes()]
        return b"".join(chunks)

    async def aclose(self) -> None:
        await self._response.aclose()


class HttpxUpstream:
    """One pooled ``httpx.AsyncClient``, created on first use so a sub-app whose lifespan
    never ran still works, and closed by ``aclose`` (lifespan shutdown) when it did."""

    def __init__(
        self,
        *,
        timeout: float = 600.0,
        connect_timeout: float = 10.0,
        max_connections: int = 100,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self._limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    def _make_client(self) -> httpx.AsyncClient:
        kwargs: dict[str, Any] = {"timeout": self._timeout, "limits": self._limits}
        if self._transport is not None:
            kwargs["transport"] = self._transport
        # Plain "identity" bodies let SSE pass through untouched and uncompressed per event.
        return httpx.AsyncClient(headers={"accept-encoding": "identity"}, **kwargs)

    async def send(
        self, method: str, url: str, headers: list[tuple[str, str]], body: bytes
    ) -> _HttpxResponse:
        client = self._client
        if client is None:
            client = self._client = self._make_client()
        request = client.build_request(method, url, headers=headers, content=body)
        try:
            response = await client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            raise GatewayError("timeout", f"upstream timed out ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise GatewayError(
                "connection", f"upstream connection failed: {type(exc).__name__}"
            ) from None
        return _HttpxResponse(response)

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
