"""``Health``: ``/healthz`` (liveness) and ``/readyz`` (readiness) in front of any ASGI app.

It sits outside everything, inbound keys included: a load balancer's or an orchestrator's
probe carries no key, and must not reach the layers that spend money.

* ``/healthz`` answers 200 while the process serves HTTP at all: restart it when this fails.
* ``/readyz`` answers 200 when the gateway can do its work: providers are configured, and
  every state store that lives outside the process (Redis, a directory) answers a ping
  within ``timeout``.  Otherwise 503 with the reason, so a load balancer takes the instance
  out of rotation until its store is back.  It never calls a provider: a probe every few
  seconds must not spend quota, and a provider's outage is what fallback is for.

The reasons name the store by kind and where it is (a Redis URL without its password, a
directory) and the failure by its exception class: nothing a probe's caller should not see.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sized

import anyio
import msgspec

from ._types import App, Receive, Scope, Send
from .routes import route_path
from .state import StateStore

__all__ = ["Health"]

_encode = msgspec.json.Encoder().encode


class Health:
    """``providers``: anything with a length (a ``Providers``), zero meaning nothing to
    route to; ``stores``: the state stores to ping; ``timeout``: seconds per readiness check;
    ``liveness_path``/``readiness_path``: below the mount point."""

    def __init__(
        self,
        app: App,
        *,
        providers: Sized | None = None,
        stores: Iterable[StateStore] = (),
        timeout: float = 2.0,
        liveness_path: str = "/healthz",
        readiness_path: str = "/readyz",
    ) -> None:
        if not (timeout > 0 and math.isfinite(timeout)):
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        self.app = app
        self.providers = providers
        self.stores = list(stores)
        self.timeout = timeout
        self._paths = {liveness_path: self._live, readiness_path: self._ready}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD"):
            answer = self._paths.get(route_path(scope))
            if answer is not None:
                status, body = await answer()
                await _send_json(send, status, body, head=scope["method"] == "HEAD")
                return
        await self.app(scope, receive, send)

    async def _live(self) -> tuple[int, dict[str, str]]:
        return 200, {"status": "ok"}

    async def _ready(self) -> tuple[int, dict[str, str]]:
        if self.providers is not None and len(self.providers) == 0:
            return 503, {"status": "not ready", "reason": "no providers configured"}
        for store in self.stores:
            problem = await self._ping(store)
            if problem is not None:
                return 503, {"status": "not ready", "reason": problem}
        return 200, {"status": "ready"}

    async def _ping(self, store: StateStore) -> str | None:
        try:
            with anyio.fail_after(self.timeout):
                await store.ping()
        except TimeoutError:
            return f"state store {store!r} did not answer within {self.timeout:g} s"
        except Exception as exc:  # a probe reports, it never fails the request
            return f"state store {store!r} is unreachable ({type(exc).__name__})"
        return None


async def _send_json(send: Send, status: int, body: object, *, head: bool) -> None:
    raw = _encode(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(raw)).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"" if head else raw})
