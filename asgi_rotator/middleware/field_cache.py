"""``FieldCache``: provider fields that must come back on the next turn, kept by the gateway.

Reasoning models hand out opaque payloads (Anthropic thinking blocks, Gemini thought
signatures, OpenAI encrypted reasoning items) that the provider checks when the conversation
comes back.  A client of another protocol cannot carry them: an OpenAI Chat client has no
place for a thinking signature.  This layer extracts them from each answer and injects them
into the request of the next turn, per upstream attempt, so tool use with reasoning survives
every translation and every change of provider.

Where it sits (docs/architecture.md): under the routing layers, above StreamGuard.  It runs once
per attempt, when the target (and usually the credential) is chosen, so what it injects is
for that provider only.  Alone around a foreign app it does what the exchange lets it: the
unified request is changed in place for the attempt and restored after; provider-native
changes (``include`` for OpenAI Responses) go through the attempt's ``shape``
(``exchange.current``), which dispatch applies to the body it builds.

Deliberate choices:

* **Never buffers a stream.**  Each body message goes on at once; the unified events beside
  it (``message[EVENT]``) feed a small per-block accumulator, and the values are written to
  the store *before* the message carrying the terminal event is passed on, so a client that
  starts its next turn the moment its stream ends finds them.
* **Keys never mix users.**  Every key starts with the inbound key's fingerprint (the
  principal InboundKeys set, else a hash of the key the client presented), then the rule's
  scope (provider, model, credential), then a content address: the tool-call id, or a hash of
  the assistant turn's calls as the client sends them back (for clients that drop ids).
* **Fields of provider A never reach provider B.**  Payloads of another source are dropped
  from the attempt's request (codecs would drop them too; here the drop is recorded), and B's
  documented placeholder is applied where B demands one.
* **Every inject, extract, drop and placeholder is a transform pass** (``field_cache.*``):
  the rule name, hit or miss and sizes, never a value.

The rules themselves are in ``asgi_rotator.field_rules``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from typing import Any

import msgspec

from .._types import Message, Receive, Scope, Send
from ..answer import ensure_request, send_error
from ..errors import GatewayError
from ..exchange import EVENT, PRINCIPAL, RESPONSE, SCOPE_KEY, Exchange
from ..field_rules import BUILTIN_RULES, Attempt, Rule, StreamExtract
from ..state import MemoryStore, StateStore, namespaced

__all__ = ["FieldCache"]

logger = logging.getLogger("asgi_rotator.field_cache")
_json_decode = msgspec.json.decode

_NAMESPACE = "field_cache:"
# Headers (and the query parameter) a client presents its key in; hashed, never kept.
_KEY_HEADERS = (b"authorization", b"x-api-key", b"x-goog-api-key")


class FieldCache:
    """``rules``: the rules to apply (default: the built-in ones, ``field_rules.BUILTIN_RULES``);
    ``store``: where values live (default: an in-memory store of this process);
    ``providers``: a ``Providers`` to resolve the target when no routing layer chose one
    (alone around dispatch); without it, and without a target, the upstream is assumed to
    speak the client's protocol."""

    def __init__(
        self,
        app: Any,
        *,
        rules: Iterable[Rule] | None = None,
        store: StateStore | None = None,
        providers: Any = None,
    ) -> None:
        self.app = app
        self.rules: tuple[Rule, ...] = tuple(BUILTIN_RULES if rules is None else rules)
        names = [rule.name for rule in self.rules]
        duplicate = {n for n in names if names.count(n) > 1}
        if duplicate:
            raise ValueError(f"field cache rules: duplicate names {sorted(duplicate)}")
        self.store = namespaced(store if store is not None else MemoryStore(), _NAMESPACE)
        self.providers = providers
        # The rules by upstream protocol: the only work a request pays when none applies is
        # one dict lookup.
        self._by_protocol: dict[str, tuple[Rule, ...]] = {}
        for rule in self.rules:
            for protocol in rule.protocols:
                self._by_protocol[protocol] = (*self._by_protocol.get(protocol, ()), rule)
        self._any_protocol = tuple(r for r in self.rules if not r.protocols)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.rules:
            await self.app(scope, receive, send)
            return
        exchange: Exchange | None = scope.get(SCOPE_KEY)
        if exchange is None or exchange.request is None:
            exchange = await _parsed(self.app, scope, receive, send)
            if exchange is None:
                return
            receive = exchange.replay()
        request = exchange.request
        assert request is not None
        # This call's attempt: the routing helper opens a fresh one for each call, so what
        # this layer sets on it (target, credential, hooks) ends with it.
        current = exchange.current
        target = current.target
        if target is None and self.providers is not None:
            try:
                target = current.target = (await self.providers.targets(request.model))[0]
            except Exception:
                target = None  # dispatch answers the unknown model in the client's protocol
        protocol = current.upstream_protocol
        if protocol is None:
            if target is not None:
                protocol = target.provider.protocol_for(exchange.protocol)
            else:
                protocol = exchange.protocol or "openai_chat"
        candidates = self._by_protocol.get(protocol, ()) + self._any_protocol
        if not candidates:
            await self.app(scope, receive, send)
            return
        provider = target.provider.name if target is not None else protocol
        model = target.model if target is not None else request.model
        client = exchange.protocol or ""
        rules = _matching(candidates, provider, model, client)
        if not rules:
            await self.app(scope, receive, send)
            return
        if current.credential is None and target is not None and target.provider.credentials:
            # Chosen here rather than in dispatch (which would pick the same way), so values
            # scoped by credential know it before the request goes out.
            current.credential = target.provider.next_credential()
        attempt = Attempt(
            exchange=exchange,
            store=self.store,
            protocol=protocol,
            provider=provider,
            model=model,
            client=client,
            inbound=_inbound(scope),
            credential=current.credential.id if current.credential is not None else "-",
        )
        original = request
        for rule in rules:
            try:
                request = await rule.inject(attempt, request)
            except Exception:
                # A rule never breaks a request: without it the provider's own rule decides.
                _rule_failed(attempt, rule, "inject")
        shapers = _shapers(attempt, rules, request)
        if shapers:
            current.shape = _Shape(attempt, shapers, current.shape)
        observers = [r for r in rules if r.observes]
        if observers:
            current.observe = _Observe(attempt, observers, current.observe)
        exchange.request = request
        out = _ExtractingSend(send, attempt, rules)
        try:
            await self.app(scope, receive, out)
        finally:
            # The next attempt (another target) starts again from the routing layer's copy.
            exchange.request = original


class _Shape:
    """``CurrentAttempt.shape`` for one attempt: the rules' changes to the provider-native
    body."""

    __slots__ = ("attempt", "before", "rules")

    def __init__(self, attempt: Attempt, rules: list[Rule], before: Any) -> None:
        self.attempt = attempt
        self.rules = rules
        self.before = before

    def __call__(self, body: dict[str, Any], protocol: str) -> dict[str, Any]:
        if self.before is not None:
            body = self.before(body, protocol)
        if protocol != self.attempt.protocol:
            return body  # dispatch negotiated another protocol: not what the rules were for
        for rule in self.rules:
            try:
                body = rule.shape(self.attempt, body)
            except Exception:
                _rule_failed(self.attempt, rule, "shape")
        return body


class _Observe:
    """``CurrentAttempt.observe`` for one attempt: the provider-native answer, to the rules
    that read it (decoded once for all of them)."""

    __slots__ = ("attempt", "before", "rules")

    def __init__(self, attempt: Attempt, rules: list[Rule], before: Any) -> None:
        self.attempt = attempt
        self.rules = rules
        self.before = before

    def __call__(self, data: Any) -> None:
        if self.before is not None:
            self.before(data)
        if isinstance(data, (str, bytes)):
            try:
                data = _json_decode(data)
            except (ValueError, msgspec.DecodeError, RecursionError):
                return  # not JSON ([DONE], a comment): nothing for a path to reach
        for rule in self.rules:
            try:
                rule.observe(self.attempt, data)
            except Exception:
                _rule_failed(self.attempt, rule, "observe")


class _ExtractingSend:
    """Passes every message on at once; feeds the unified twins to the rules' extractors."""

    __slots__ = ("attempt", "blocks", "rules", "send")

    def __init__(self, send: Send, attempt: Attempt, rules: list[Rule]) -> None:
        self.send = send
        self.attempt = attempt
        self.rules = rules
        self.blocks: StreamExtract | None = None

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.body":
            events = message.get(EVENT)
            if events:
                blocks = self.blocks
                if blocks is None:
                    blocks = self.blocks = StreamExtract(any(r.wants_text for r in self.rules))
                if blocks.feed(events):
                    # Stored before the terminal event goes on: the client's next turn may
                    # start the moment it has it.
                    content = blocks.content()
                    self.blocks = None
                    await _extract(self.attempt, self.rules, content)
            else:
                response = message.get(RESPONSE)
                if response is not None:
                    await _extract(self.attempt, self.rules, response.content)
        await self.send(message)


async def _extract(attempt: Attempt, rules: list[Rule], content: list[Any]) -> None:
    for rule in rules:
        try:
            await rule.extract(attempt, content)
        except Exception:
            _rule_failed(attempt, rule, "extract")


# The two filters below are functions rather than comprehensions in ``__call__``: before
# Python 3.12 a comprehension is a function of its own, and the locals it reads become cells
# of ``__call__``, made on every call and kept for as long as it lasts (a whole stream).
def _matching(rules: tuple[Rule, ...], provider: str, model: str, client: str) -> list[Rule]:
    return [rule for rule in rules if rule.matches(provider, model, client)]


def _shapers(attempt: Attempt, rules: list[Rule], request: Any) -> list[Rule]:
    """The rules that change this attempt's provider-native body."""
    return [rule for rule in rules if _shapes(attempt, rule, request)]


def _shapes(attempt: Attempt, rule: Rule, request: Any) -> bool:
    try:
        return rule.shapes(attempt, request)
    except Exception:
        _rule_failed(attempt, rule, "shapes")
        return False


def _rule_failed(attempt: Attempt, rule: Rule, hook: str) -> None:
    logger.exception(
        "field cache rule %s failed in %s (request %s)",
        rule.name,
        hook,
        attempt.exchange.request_id,
    )
    attempt.record("field_cache.rule_failed", rule=rule.name, hook=hook)


def _inbound(scope: Scope) -> str:
    """Who the client is, as a fingerprint: InboundKeys' principal, else a hash of the key
    the client presented (so two clients with different keys never share values even when
    the gateway checks no keys), else ``anonymous``."""
    principal = scope.get(PRINCIPAL)
    if principal:
        return str(principal)
    digest = hashlib.sha256()
    found = False
    for name, value in scope.get("headers", ()):
        if name in _KEY_HEADERS:
            digest.update(name + b"=" + value + b"\n")
            found = True
    query = scope.get("query_string", b"")
    if b"key=" in query:
        digest.update(b"?" + query)
        found = True
    return digest.hexdigest()[:32] if found else "anonymous"


async def _parsed(app: Any, scope: Scope, receive: Receive, send: Send) -> Exchange | None:
    """The exchange with its request, made here when this layer runs alone; ``None`` when the
    request is not a generation or is bad (then ``app`` answers it, in the client's
    protocol, from the replayed body)."""
    try:
        exchange = await ensure_request(scope, receive)
    except GatewayError as error:
        made: Exchange | None = scope.get(SCOPE_KEY)
        if made is None:  # the body itself could not be read (too large)
            await send_error(send, None, error)
        else:
            await app(scope, made.replay(), send)
        return None
    if exchange.request is None:
        await app(scope, exchange.replay(), send)
        return None
    return exchange
