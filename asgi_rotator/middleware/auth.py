"""``InboundKeys``: only clients holding one of the configured keys get through.

It must sit outside every layer that spends money or reads stored state.  The key is taken
where each official SDK puts it (``Authorization: Bearer``, ``x-api-key``,
``x-goog-api-key``, ``?key=``); a refusal is a 401 in the shape the client's route implies.
Downstream layers see only a fingerprint of the key (``scope["asgi_rotator.principal"]``),
which scopes stored state per client without keeping the key itself, and the key's name
(``scope["asgi_rotator.key_name"]``) when keys are given as a name -> key mapping, for the
request log and the usage totals.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from hmac import compare_digest
from urllib.parse import parse_qsl

from .._types import App, Receive, Scope, Send
from ..answer import send_error
from ..errors import GatewayError
from ..exchange import KEY_NAME, PRINCIPAL
from ..redaction import register_secret
from ..routes import detect_protocol, match_route, route_path

__all__ = ["KEY_NAME", "PRINCIPAL", "InboundKeys", "fingerprint", "presented_key"]

_sha256 = hashlib.sha256


def fingerprint(key: str) -> str:
    return _sha256(key.encode()).hexdigest()[:32]


def presented_key(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            token = token.strip()
            if scheme.lower() == "bearer" and token:
                return token
        elif name in (b"x-api-key", b"x-goog-api-key"):
            # An empty header is no key at all, never a match for a misconfigured empty one.
            key = value.decode("latin-1").strip()
            if key:
                return key
    query = scope.get("query_string", b"")
    if b"key=" in query:
        for name, value in parse_qsl(query.decode("latin-1")):
            if name == "key":
                return value.strip() or None
    return None


class InboundKeys:
    def __init__(
        self,
        app: App,
        *,
        keys: Iterable[str] | Mapping[str, str],
        open_paths: Iterable[str] = ("/healthz",),
    ) -> None:
        self.app = app
        named = (
            keys if isinstance(keys, Mapping) else {f"key{i + 1}": k for i, k in enumerate(keys)}
        )
        self._names = list(named)
        keys = list(named.values())
        for key in keys:
            register_secret(key)  # a client may quote it back in a prompt, a log may show it
        if not keys:
            raise ValueError("InboundKeys needs at least one key")
        if any(not isinstance(k, str) or not k.strip() for k in keys):
            # A template with an unset variable gives "": it would match an empty header.
            raise ValueError("InboundKeys: a key must not be empty or blank")
        # Compared as digests so every comparison takes the same time whatever the key.
        self._digests = [hashlib.sha256(k.encode()).digest() for k in keys]
        # What the scope names a client by: ``fingerprint`` of its key, made once per key.
        self._principals = [digest.hex()[:32] for digest in self._digests]
        self._open = frozenset(open_paths)

    async def __call__(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        if scope["type"] != "http" or route_path(scope) in self._open:
            await self.app(scope, receive, send)
            return
        refusal = self._check(scope)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        # The shared detection: the route where it names a protocol, else the headers
        # (an Anthropic client on /v1/models gets Anthropic's error shape).
        protocol = detect_protocol(scope, match_route(route_path(scope)))
        await send_error(send, protocol, GatewayError("auth", refusal))

    def _check(self, scope: Scope) -> str | None:
        """Why the client may not call (``None``: it may, and the scope names its key).
        Apart from ``__call__``, so the presented key is not kept for as long as the
        request (a stream) lasts."""
        key = presented_key(scope)
        if key is None:
            return "missing API key"
        digest = _sha256(key.encode()).digest()
        matched = -1
        # Every key is compared, each in constant time: the time does not tell which key
        # matched, nor how much of it.
        for i, known in enumerate(self._digests):
            if compare_digest(digest, known):
                matched = i
        if matched < 0:
            return "invalid API key"
        scope[PRINCIPAL] = self._principals[matched]
        scope[KEY_NAME] = self._names[matched]
        return None
