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

import functools
import logging
from collections.abc import Awaitable, Iterable
from typing import Any

import msgspec

from .._types import Message, Receive, Scope, Send
from ..answer import ensure_request, send_error
from ..errors import GatewayError
from ..exchange import EVENT, RESPONSE, SCOPE_KEY, WANT_RESPONSE, Exchange
from ..field_rules import BUILTIN_RULES, Attempt, Rule, StreamExtract
from ..state import MemoryStore, StateStore, namespaced

__all__ = ["FieldCache"]

logger = logging.getLogger("asgi_rotator.field_cache")
_json_decode = msgspec.json.decode

_NAMESPACE = "field_cache:"


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
        # Which rules apply, and which of their hooks run, depends only on where the attempt
        # goes and who asks: resolved once per (protocol, provider, model, client).  Bounded,
        # as a model name may be the client's own.
        self._plan = functools.lru_cache(maxsize=1024)(self._resolve)
        # The upstream protocols the rules are for (None: some rule is for any): an attempt
        # in another goes straight on.
        self._protocols: frozenset[str] | None = None
        if all(rule.protocols for rule in self.rules):
            self._protocols = frozenset(p for rule in self.rules for p in rule.protocols)

    def _resolve(self, protocol: str, provider: str, model: str, client: str) -> _Plan | None:
        """The rules for one (upstream protocol, provider, model, client), in the order they
        were given (``rules_from_config``: adapters first, so that the rules after them see
        the request as it will go); ``None`` when none matches."""
        rules = [
            r
            for r in self.rules
            if (not r.protocols or protocol in r.protocols) and r.matches(provider, model, client)
        ]
        return _Plan(rules) if rules else None

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
        if self._protocols is not None and protocol not in self._protocols:
            await self.app(scope, receive, send)
            return
        if target is not None:
            provider, model = target.provider.name, target.model
        else:
            provider, model = protocol, request.model
        client = exchange.protocol or ""
        plan = self._plan(protocol, provider, model, client)
        if plan is None:
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
            credential=current.credential.id if current.credential is not None else "-",
        )
        original = request
        for rule in plan.injectors:
            try:
                request = await rule.inject(attempt, request)
            except Exception:
                # A rule never breaks a request: without it the provider's own rule decides.
                _rule_failed(attempt, rule, "inject")
        if plan.shapers:
            shapers = _shapers(attempt, plan.shapers, request)
            if shapers:
                current.shape = _Shape(attempt, shapers, current.shape)
        if plan.observers:
            current.observe = _Observe(attempt, plan.observers, current.observe)
        exchange.request = request
        if plan.extractors:
            send = _ExtractingSend(send, attempt, plan.extractors, plan.wants_text)
            scope[WANT_RESPONSE] = True  # a plain answer's twin is what they read
        try:
            await self.app(scope, receive, send)
        finally:
            # The next attempt (another target) starts again from the routing layer's copy.
            exchange.request = original


class _Plan:
    """The rules that apply to one (protocol, provider, model, client), by the hooks they
    have: a hook a rule leaves as the base's no-op is never called."""

    __slots__ = ("extractors", "injectors", "observers", "shapers", "wants_text")

    def __init__(self, rules: list[Rule]) -> None:
        self.injectors = [r for r in rules if _overrides(r, "inject")]
        self.shapers = [r for r in rules if _overrides(r, "shapes")]
        self.observers = [r for r in rules if r.observes]
        self.extractors = [r for r in rules if _overrides(r, "extract")]
        self.wants_text = any(r.wants_text for r in self.extractors)


def _overrides(rule: Rule, hook: str) -> bool:
    return getattr(type(rule), hook) is not getattr(Rule, hook)


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
    """Passes every message on at once; feeds the unified twins to the rules' extractors.

    Not a coroutine: a message with nothing to extract goes straight to the downstream
    send, whose awaitable it hands back (as LogLines' send does)."""

    __slots__ = ("attempt", "blocks", "rules", "send", "wants_text")

    def __init__(self, send: Send, attempt: Attempt, rules: list[Rule], wants_text: bool) -> None:
        self.send = send
        self.attempt = attempt
        self.rules = rules
        self.wants_text = wants_text
        self.blocks: StreamExtract | None = None

    def __call__(self, message: Message) -> Awaitable[None]:
        if message["type"] == "http.response.body":
            events = message.get(EVENT)
            if events:
                blocks = self.blocks
                if blocks is None:
                    blocks = self.blocks = StreamExtract(self.wants_text)
                if blocks.feed(events):
                    self.blocks = None
                    return self._extract_then_send(blocks.content(), message)
            else:
                response = message.get(RESPONSE)
                if response is not None:
                    return self._extract_then_send(response.content, message)
        return self.send(message)

    async def _extract_then_send(self, content: list[Any], message: Message) -> None:
        # Stored before the terminal event or the answer goes on: the client's next turn
        # may start the moment it has it.
        for rule in self.rules:
            try:
                await rule.extract(self.attempt, content)
            except Exception:
                _rule_failed(self.attempt, rule, "extract")
        await self.send(message)


def _shapers(attempt: Attempt, rules: list[Rule], request: Any) -> list[Rule]:
    """The rules that change this attempt's provider-native body."""
    shapers = []
    for rule in rules:
        try:
            if rule.shapes(attempt, request):
                shapers.append(rule)
        except Exception:
            _rule_failed(attempt, rule, "shapes")
    return shapers


def _rule_failed(attempt: Attempt, rule: Rule, hook: str) -> None:
    logger.exception(
        "field cache rule %s failed in %s (request %s)",
        rule.name,
        hook,
        attempt.exchange.request_id,
    )
    attempt.record("field_cache.rule_failed", rule=rule.name, hook=hook)


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
