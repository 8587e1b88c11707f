"""The field cache's rules: what to extract from an answer, and what to inject into the next
request, for one provider.  ``FieldCache`` (``middleware/field_cache.py``) runs them.

A rule is an object with ``name``, ``protocols`` (the upstream protocols it is for; empty:
any), ``matches(provider, model, client)`` and four hooks, each a no-op by default:

* ``inject(attempt, request) -> request``: the unified request about to go upstream (return a
  changed copy, never change it in place: the next attempt starts from the original);
* ``shapes(attempt, request) -> bool`` and ``shape(attempt, body) -> body``: the
  provider-native JSON body dispatch built, when a field has no unified home;
* ``extract(attempt, content)``: the unified content of the answer (a plain response, or a
  stream put back together block by block, never buffered as bytes).

``FieldCache`` asks ``matches`` once per (upstream protocol, provider, model, client) and
keeps the answer, so a rule's matching must depend on nothing else; a hook a ``Rule``
subclass leaves as the base's no-op is never called.

The built-in rules (``BUILTIN_RULES``) are ``ReasoningRule`` instances, one per provider whose
reasoning payloads must come back, and ``SessionKeyRule``, for the session keys the presets
declare; ``docs/field-cache.md`` says why each exists.  Configured
rules (``[[field_cache.rules]]``, the path language) are ``PathRule`` in
``asgi_rotator.field_paths``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import uuid
from collections.abc import Sequence
from fnmatch import fnmatchcase
from typing import Any

import msgspec

from ._types import Scope
from .config import FieldCacheConfig
from .exchange import PRINCIPAL, Exchange
from .presets import BACKENDS
from .state import StateStore
from .unified import (
    Finish,
    Message,
    Part,
    Reasoning,
    ReasoningDelta,
    Request,
    Signature,
    Text,
    TextDelta,
    ToolArgsDelta,
    ToolCall,
    ToolCallStart,
)

__all__ = [
    "ANTHROPIC_THINKING",
    "BUILTIN_RULES",
    "GEMINI_PLACEHOLDER",
    "GEMINI_THOUGHT_SIGNATURES",
    "OPENAI_ENCRYPTED_REASONING",
    "PROVIDER_SESSION_KEYS",
    "Attempt",
    "ReasoningRule",
    "Rule",
    "SessionKeyRule",
    "StreamExtract",
    "config_problems",
    "rules_from_config",
]

ANTHROPIC = "anthropic_messages"
GEMINI = "gemini"
RESPONSES = "openai_responses"
# Gemini API, "Thought signatures": for history that did not come from this model, this
# value in place of a signature skips the check.
GEMINI_PLACEHOLDER = "skip_thought_signature_validator"
ENCRYPTED_INCLUDE = "reasoning.encrypted_content"

DEFAULT_TTL = FieldCacheConfig().ttl
DEFAULT_MAX_BYTES = FieldCacheConfig().max_bytes
SCOPES = ("inbound", "provider", "model", "credential", "session")

_encode = msgspec.json.Encoder().encode
_decode_parts = msgspec.json.Decoder(list[Reasoning]).decode
_decode_turn = msgspec.json.Decoder(list[tuple[int, list[Reasoning]]]).decode
_MAX_IDENT = 200
# Headers (and the query parameter) a client presents its key in; hashed, never kept.
_KEY_HEADERS = (b"authorization", b"x-api-key", b"x-goog-api-key")


class Attempt:
    """What a rule knows about the attempt it runs for."""

    __slots__ = (
        "_inbound",
        "client",
        "credential",
        "exchange",
        "model",
        "notes",
        "position",
        "protocol",
        "provider",
        "store",
    )

    def __init__(
        self,
        *,
        exchange: Exchange,
        store: StateStore,
        protocol: str,
        provider: str,
        model: str,
        client: str,
        credential: str,
    ) -> None:
        self.exchange = exchange
        self.store = store
        self.protocol = protocol  # the upstream protocol
        self.provider = provider
        self.model = model
        self.client = client  # the client's protocol
        self._inbound: str | None = None
        self.credential = credential  # the credential id, never the key
        # Where the answer will sit in the conversation the client sends back: its index
        # among the unified messages (the client's own history, so stable between turns).
        request = exchange.request
        self.position = len(request.messages) if request is not None else 0
        # What a rule keeps between its hooks within this attempt (its own keys).
        self.notes: dict[Any, Any] = {}

    @property
    def inbound(self) -> str:
        """Who the client is, as a fingerprint, never the key: InboundKeys' principal, else a
        hash of the key the client presented (so two clients with different keys never share
        values even when the gateway checks no keys), else ``anonymous``.  Worked out when a
        key is first made: most requests make none."""
        if self._inbound is None:
            self._inbound = _fingerprint(self.exchange.scope)
        return self._inbound

    def key(self, rule: str, scope: Sequence[str], kind: str, ident: str) -> str:
        """A store key: always the inbound key first, then the rule's scope, then what the
        value is addressed by (a tool-call id, a hash of a turn)."""
        parts = [rule, self.inbound]
        for name in scope:
            if name == "provider":
                parts.append(self.provider)
            elif name == "model":
                parts.append(self.model)
            elif name == "credential":
                parts.append(self.credential)
            elif name == "session":
                parts.append(self.session())
        if len(ident) > _MAX_IDENT or not ident.isprintable():
            ident = hashlib.sha256(ident.encode()).hexdigest()
        parts += (kind, ident)
        return ":".join(parts)

    def session(self) -> str:
        """The session the client names: ``x-session-id``, else OpenAI ``prompt_cache_key``
        or ``user``, else Anthropic ``metadata.user_id``; ``-`` when it names none."""
        for name, value in self.exchange.scope.get("headers", ()):
            if name == b"x-session-id":
                return _short(value.decode("latin-1"))
        request = self.exchange.request
        if request is not None:
            cache_key = request.extra.get("prompt_cache_key")
            if isinstance(cache_key, str):
                return _short(cache_key)
            if request.user:
                return _short(request.user)
            user_id = (request.metadata or {}).get("user_id")
            if isinstance(user_id, str):
                return _short(user_id)
        return "-"

    def record(self, name: str, **data: Any) -> None:
        exchange = self.exchange
        if exchange.recording:
            exchange.record(name, **data)


def _fingerprint(scope: Scope) -> str:
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


def _short(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:24]


class Rule:
    """The base: matching by globs, every hook a no-op."""

    protocols: tuple[str, ...] = ()

    def __init__(
        self,
        name: str,
        *,
        provider: str = "*",
        model: str = "*",
        client: str = "*",
        ttl: float | None = DEFAULT_TTL,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_values: int = 64,
    ) -> None:
        self.name = name
        self.provider = provider
        self.model = model
        self.client = client
        self.ttl = ttl
        self.max_bytes = max_bytes
        self.max_values = max_values

    def matches(self, provider: str, model: str, client: str) -> bool:
        return (
            (self.provider == "*" or fnmatchcase(provider, self.provider))
            and (self.model == "*" or fnmatchcase(model, self.model))
            and (self.client == "*" or fnmatchcase(client, self.client))
        )

    async def inject(self, attempt: Attempt, request: Request) -> Request:
        return request

    def shapes(self, attempt: Attempt, request: Request) -> bool:
        return False

    def shape(self, attempt: Attempt, body: dict[str, Any]) -> dict[str, Any]:
        return body

    async def extract(self, attempt: Attempt, content: list[Part]) -> None:
        return None

    # Set true by a rule that needs the answer's text from a stream (kept only then).
    wants_text = False

    # Set true by a rule that reads the provider-native answer: ``observe(attempt, data)`` is
    # then called with the decoded response body, or each stream event's decoded data.
    observes = False

    def observe(self, attempt: Attempt, data: Any) -> None:
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class ReasoningRule(Rule):
    """One provider's reasoning payloads, cached per tool call and per assistant turn.

    ``source``: the protocol whose ``Reasoning`` parts are kept (the codecs mark every part
    with the protocol that issued it).  ``at_start``: injected parts open the assistant turn
    (Anthropic) rather than preceding its first tool call (Gemini, Responses).
    ``placeholder``: a value the provider accepts in place of a payload for history that came
    from elsewhere.  ``thinking_off``: a request whose last tool-use turn has no payload goes
    with reasoning off (Anthropic).  ``include``: the body ``include`` entry that makes the
    provider hand the payload out (Responses).  ``scope``: what the key holds besides the
    inbound key.
    """

    def __init__(
        self,
        name: str,
        *,
        source: str,
        scope: Sequence[str] = ("provider",),
        at_start: bool = False,
        placeholder: str | None = None,
        thinking_off: bool = False,
        include: str | None = None,
        text_signatures: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(name, **options)
        unknown = set(scope) - set(SCOPES)
        if unknown:
            raise ValueError(f"{name}: unknown scope {sorted(unknown)}; known: {SCOPES}")
        self.source = source
        self.protocols = (source,)
        self.scope = tuple(s for s in scope if s != "inbound")  # always there, first
        self.at_start = at_start
        self.placeholder = placeholder
        self.thinking_off = thinking_off
        self.include = include
        # Also a turn without tool calls: its payload, filed under a hash of its text.
        self.text_signatures = self.wants_text = text_signatures

    # --- inject -----------------------------------------------------------------------------

    def _own(self, part: Part) -> bool:
        # An empty signature is a display-only block (another provider's thinking shown to
        # an Anthropic client): no payload.
        return (
            isinstance(part, Reasoning)
            and part.source == self.source
            and bool(part.signature or part.redacted)
        )

    async def inject(self, attempt: Attempt, request: Request) -> Request:
        messages = request.messages
        if not any(message.role == "assistant" for message in messages):
            # A first turn: no payload to drop, look up or replace, no tool loop to check.
            return request
        # The current turn: what follows the last user message.  Older turns' payloads are
        # not checked by any provider (Anthropic strips them, Gemini validates the current
        # turn only), so they are not looked up.
        start = 0
        for i in range(len(messages) - 1, -1, -1):
            if messages[i].role == "user":
                start = i + 1
                break
        changed: dict[int, list[Part]] = {}
        dropped = 0
        wanted: list[tuple[int, list[ToolCall]]] = []
        for i, message in enumerate(messages):
            if message.role != "assistant":
                continue
            content = message.content
            foreign = [
                p
                for p in content
                if isinstance(p, Reasoning)
                and p.source != self.source
                and (p.signature or p.redacted)
            ]
            if foreign:
                # Another provider's payload: never sent here (it would be rejected).
                dropped += len(foreign)
                content = changed[i] = [p for p in content if not any(p is f for f in foreign)]
            if i >= start:
                calls = [p for p in content if isinstance(p, ToolCall)]
                if calls and not any(self._own(p) for p in content):
                    wanted.append((i, calls))
        if dropped:
            attempt.record("field_cache.drop", rule=self.name, values=dropped)
        if wanted:
            await self._lookup(attempt, messages, wanted, changed)
        if self.text_signatures:
            await self._inject_text(attempt, messages, changed)
        if self.placeholder is not None:
            self._placeholders(attempt, messages, start, changed)
        if not changed and not (self.thinking_off and request.reasoning is not None):
            return request
        new_messages = list(messages)
        for i, content in changed.items():
            new_messages[i] = msgspec.structs.replace(messages[i], content=content)
        out = msgspec.structs.replace(request, messages=new_messages) if changed else request
        if self.thinking_off:
            out = self._thinking_off(attempt, out, start)
        return out

    async def _lookup(
        self,
        attempt: Attempt,
        messages: list[Message],
        wanted: list[tuple[int, list[ToolCall]]],  # (message index, its calls)
        changed: dict[int, list[Part]],
    ) -> None:
        keys: list[str] = []
        for i, calls in wanted:
            keys += [attempt.key(self.name, self.scope, "call", c.id) for c in calls]
            keys.append(attempt.key(self.name, self.scope, "turn", turn_hash(i, calls)))
        try:
            values = await attempt.store.get_many(keys)
        except Exception:
            # The cache is an optimisation of correctness, not a dependency: a store that is
            # down makes this a miss (the provider's own rule then decides), never a 5xx.
            attempt.record("field_cache.store_failed", rule=self.name, op="get")
            return
        at = 0
        for i, calls in wanted:
            by_call = values[at : at + len(calls)]
            turn = values[at + len(calls)]
            at += len(calls) + 1
            groups: list[tuple[int, list[Reasoning]]] = [
                (n, _decode_parts(raw)) for n, raw in enumerate(by_call) if raw is not None
            ]
            if not groups and turn is not None:
                groups = _decode_turn(turn)
            size = sum(len(raw) for raw in by_call if raw is not None) if groups else 0
            attempt.record(
                "field_cache.inject",
                rule=self.name,
                hit=bool(groups),
                values=sum(len(parts) for _, parts in groups),
                bytes=size or (len(turn) if turn is not None and groups else 0),
            )
            if not groups:
                continue
            content = list(changed.get(i, messages[i].content))
            if self.at_start:
                blocks = [p for _, parts in groups for p in parts]
                content[:0] = blocks
            else:
                targets = {id(calls[n]): parts for n, parts in groups if n < len(calls)}
                rebuilt: list[Part] = []
                for part in content:
                    parts = targets.get(id(part))
                    if parts is not None:
                        rebuilt += parts
                    rebuilt.append(part)
                content = rebuilt
            changed[i] = content

    def _placeholders(
        self, attempt: Attempt, messages: list[Message], start: int, changed: dict[int, list[Part]]
    ) -> None:
        assert self.placeholder is not None
        applied = 0
        for i in range(start, len(messages)):
            if messages[i].role != "assistant":
                continue
            content = changed.get(i, messages[i].content)
            first = next((n for n, p in enumerate(content) if isinstance(p, ToolCall)), None)
            if first is None or (first > 0 and self._own(content[first - 1])):
                continue
            content = list(content)
            content.insert(first, Reasoning(signature=self.placeholder, source=self.source))
            changed[i] = content
            applied += 1
        if applied:
            attempt.record("field_cache.placeholder", rule=self.name, values=applied)

    def _thinking_off(self, attempt: Attempt, request: Request, start: int) -> Request:
        if not _reasoning_on(request):
            return request
        last = next(
            (
                m
                for m in reversed(request.messages[start:])
                if m.role == "assistant" and any(isinstance(p, ToolCall) for p in m.content)
            ),
            None,
        )
        if last is None or (last.content and self._own(last.content[0])):
            return request
        # Anthropic, "Extended thinking" > "Extended thinking with tool use": a tool-use turn
        # must start with its thinking block when thinking is on, and thinking cannot be
        # switched on in the middle of a tool loop.  History from elsewhere has no such
        # block: the request goes with thinking off instead of earning a 400.
        # No reasoning config at all: "off" is no thinking field (the Anthropic codec's rule),
        # and a same-protocol rebuild would otherwise keep the client's own setting.
        attempt.record("field_cache.thinking_off", rule=self.name)
        return msgspec.structs.replace(request, reasoning=None)

    # --- provider-native body ---------------------------------------------------------------

    def shapes(self, attempt: Attempt, request: Request) -> bool:
        if self.include is None or not _reasoning_on(request):
            return False
        # OpenAI, "Reasoning" > "Encrypted reasoning items": without stored state (store
        # false, or a client that cannot carry reasoning items back) the payload is only
        # handed out when the request includes it.
        return request.store is False or attempt.client != self.source

    def shape(self, attempt: Attempt, body: dict[str, Any]) -> dict[str, Any]:
        assert self.include is not None
        include = body.get("include")
        if not isinstance(include, list):
            include = []
        if self.include not in include:
            body["include"] = [*include, self.include]
            attempt.record("field_cache.include", rule=self.name, field="include")
        return body

    async def _inject_text(
        self, attempt: Attempt, messages: list[Message], changed: dict[int, list[Part]]
    ) -> None:
        """The last assistant turn, when it is text only: its payload found by its text."""
        i = next(
            (n for n in range(len(messages) - 1, -1, -1) if messages[n].role == "assistant"), None
        )
        if i is None:
            return
        content = changed.get(i, messages[i].content)
        if any(isinstance(p, ToolCall) or self._own(p) for p in content):
            return
        text = _text_of(content)
        if not text:
            return
        key = attempt.key(self.name, self.scope, "text", text_hash(i, text))
        try:
            raw = await attempt.store.get(key)
        except Exception:
            attempt.record("field_cache.store_failed", rule=self.name, op="get")
            return
        attempt.record(
            "field_cache.inject",
            rule=self.name,
            hit=raw is not None,
            turn="text",
            bytes=len(raw) if raw is not None else 0,
        )
        if raw is None:
            return
        first = next(n for n, p in enumerate(content) if isinstance(p, Text))
        content = list(content)
        content[first:first] = _decode_parts(raw)
        changed[i] = content

    async def _extract_text(self, attempt: Attempt, content: list[Part]) -> None:
        # The payloads before the answer's first text part (Gemini puts the signature on a
        # text part of a turn without calls; sending it back is recommended, not enforced).
        parts: list[Reasoning] = []
        for part in content:
            if isinstance(part, Text):
                break
            if self._own(part):
                parts.append(part)  # type: ignore[arg-type]
        text = _text_of(content)
        if not parts or not text:
            return
        raw = _encode(parts[: self.max_values])
        if len(raw) > self.max_bytes:
            return
        key = attempt.key(self.name, self.scope, "text", text_hash(attempt.position, text))
        try:
            await attempt.store.set(key, raw, ttl=self.ttl)
        except Exception:
            attempt.record("field_cache.store_failed", rule=self.name, op="set")
            return
        attempt.record("field_cache.extract", rule=self.name, hit=True, turn="text", bytes=len(raw))

    # --- extract ----------------------------------------------------------------------------

    async def extract(self, attempt: Attempt, content: list[Part]) -> None:
        pending: list[Reasoning] = []
        calls: list[ToolCall] = []
        groups: list[tuple[int, list[Reasoning]]] = []
        for part in content:
            if isinstance(part, Reasoning):
                if self._own(part):
                    pending.append(part)
            elif isinstance(part, ToolCall):
                if pending:
                    # Gemini: only the first of parallel calls carries a signature; the
                    # blocks before a call belong to it.
                    groups.append((len(calls), pending[: self.max_values]))
                    pending = []
                calls.append(part)
        if not calls:
            if self.text_signatures:
                await self._extract_text(attempt, content)
            return
        if not groups:
            attempt.record("field_cache.extract", rule=self.name, hit=False)
            return
        items: list[tuple[str, bytes]] = [
            (attempt.key(self.name, self.scope, "call", calls[n].id), _encode(parts))
            for n, parts in groups
        ]
        turn = turn_hash(attempt.position, calls)
        items.append((attempt.key(self.name, self.scope, "turn", turn), _encode(groups)))
        size = sum(len(raw) for _, raw in items[:-1])
        if size > self.max_bytes:
            attempt.record("field_cache.extract", rule=self.name, hit=True, bytes=size, kept=False)
            return
        try:
            for key, raw in items:
                await attempt.store.set(key, raw, ttl=self.ttl)
        except Exception:
            attempt.record("field_cache.store_failed", rule=self.name, op="set")
            return
        attempt.record(
            "field_cache.extract",
            rule=self.name,
            hit=True,
            values=sum(len(parts) for _, parts in groups),
            bytes=size,
        )


def _text_of(content: Sequence[Part]) -> str:
    return "".join(p.text for p in content if isinstance(p, Text))


def _reasoning_on(request: Request) -> bool:
    config = request.reasoning
    if config is None or config.enabled is False or config.effort == "none":
        return False
    return bool(config.enabled or config.budget_tokens or config.effort)


def text_hash(position: int, text: str) -> str:
    """A text-only assistant turn's address: its place in the conversation and its text."""
    return hashlib.sha256(f"{position}\0{text}".encode()).hexdigest()[:32]


def turn_hash(position: int, calls: Sequence[ToolCall]) -> str:
    """An assistant turn's content address, for clients that do not send the call ids back
    (a Gemini client, whose calls carry none): its place in the conversation and its calls'
    names and arguments (normalised, so a client that re-serialises the JSON still matches).
    The place keeps two steps that made the same call apart."""
    digest = hashlib.sha256(str(position).encode())
    for call in calls:
        try:
            arguments = json.dumps(json.loads(call.arguments), sort_keys=True)
        except (ValueError, RecursionError):
            arguments = call.arguments
        digest.update(f"{call.name}\0{arguments}\0".encode())
    return digest.hexdigest()[:32]


class StreamExtract:
    """The answer's blocks put back together from a stream's unified events: reasoning text,
    payloads and tool calls by block index, and the answer's text only when a rule needs it
    (``keep_text``).  Bounded by what the rules keep anyway; the stream's bytes go on
    untouched."""

    __slots__ = ("blocks", "keep_text")

    def __init__(self, keep_text: bool = False) -> None:
        self.blocks: dict[int, list[Any]] = {}
        self.keep_text = keep_text

    def feed(self, events: Sequence[Any]) -> bool:
        """True when the terminal event was among them."""
        blocks = self.blocks
        for event in events:
            kind = type(event)
            if kind is TextDelta:
                # The bulk of a stream: kept only for a rule that addresses text turns.
                if self.keep_text:
                    block = blocks.get(event.index)
                    if block is None:
                        block = blocks[event.index] = ["t", [], None]
                    block[1].append(event.text)
                continue
            if kind is ReasoningDelta:
                block = blocks.get(event.index)
                if block is None:
                    block = blocks[event.index] = ["r", [], None]
                block[1].append(event.text)
            elif kind is Signature:
                block = blocks.get(event.index)
                if block is None:
                    block = blocks[event.index] = ["r", [], None]
                block[2] = event
            elif kind is ToolCallStart:
                blocks[event.index] = ["c", [], event]
            elif kind is ToolArgsDelta:
                block = blocks.get(event.index)
                if block is not None:
                    block[1].append(event.delta)
            elif kind is Finish:
                return True
        return False

    def content(self) -> list[Part]:
        out: list[Part] = []
        for index in sorted(self.blocks):
            kind, pieces, head = self.blocks[index]
            if kind == "c":
                out.append(ToolCall(id=head.id, name=head.name, arguments="".join(pieces) or "{}"))
            elif kind == "t":
                out.append(Text(text="".join(pieces)))
            else:
                out.append(
                    Reasoning(
                        text="".join(pieces),
                        signature=head.signature if head is not None else None,
                        redacted=head.redacted if head is not None else None,
                        id=head.id if head is not None else None,
                        source=head.source if head is not None else None,
                    )
                )
        return out


class SessionKeyRule(Rule):
    """A session or prompt-cache key the backend wants repeated on every turn of one
    conversation, in the body fields the target provider declares (``Provider.session_keys``,
    filled by its preset).  The client's own value, when it sends one, goes as it is and is
    kept; otherwise the conversation's kept value is sent, or a new one made and kept on its
    first turn.

    A conversation is addressed by its opening (the system text and the first user message,
    as the client sends them back on every turn), under the inbound key and the provider:
    two users never share a value, and two conversations of one user share one only when
    they open with the same words (a shared prompt-cache prefix, then, is what they have).
    The fields are top-level names of the provider-native body, before any envelope."""

    def __init__(self, name: str, **options: Any) -> None:
        super().__init__(name, **options)
        # Only the protocols of the backends that declare keys: any other request pays nothing.
        self.protocols = tuple(
            sorted(
                {p for preset in BACKENDS.values() if preset.session_keys for p in preset.protocols}
            )
        )

    @staticmethod
    def _fields(attempt: Attempt) -> tuple[str, ...]:
        target = attempt.exchange.current.target
        return target.provider.session_keys if target is not None else ()

    async def inject(self, attempt: Attempt, request: Request) -> Request:
        fields = self._fields(attempt)
        if not fields:
            return request
        opening = conversation_hash(request)
        if opening is None:
            return request
        # Not scoped by the session the client names: that may be this very key, sent on
        # the first turn only.
        key = attempt.key(self.name, ("provider",), "conversation", opening)
        sent = next((v for f in fields if isinstance(v := request.extra.get(f), str) and v), None)
        op = "set" if sent is not None else "get"
        try:
            if sent is not None:
                # The client's own key: sent as it is, and repeated should it stop sending it.
                await attempt.store.set(key, sent.encode(), ttl=self.ttl)
                attempt.record("field_cache.extract", rule=self.name, hit=True, source="client")
                # Also written by shape when the client's protocol has no place for it here.
                attempt.notes[self] = sent
                return request
            raw = await attempt.store.get(key)
            value = raw.decode() if raw is not None else None
            if value is None:
                op = "set"
                value = str(uuid.uuid4())
                await attempt.store.set(key, value.encode(), ttl=self.ttl)
        except Exception:
            # As for the other rules: a store that is down is a miss, never a failed request.
            attempt.record("field_cache.store_failed", rule=self.name, op=op)
            return request
        attempt.record("field_cache.inject", rule=self.name, hit=raw is not None)
        attempt.notes[self] = value
        return request

    def shapes(self, attempt: Attempt, request: Request) -> bool:
        return self in attempt.notes

    def shape(self, attempt: Attempt, body: dict[str, Any]) -> dict[str, Any]:
        value = attempt.notes[self]
        for path in self._fields(attempt):
            if path not in body:  # a value the client sent (or a codec carried) wins
                body[path] = value
        return body


def conversation_hash(request: Request) -> str | None:
    """A conversation's address: its system text and first user message, which the client
    sends back unchanged on every later turn; ``None`` without a user message."""
    first = next((m for m in request.messages if m.role == "user"), None)
    if first is None:
        return None
    # By text where there is text: a client may send the same words in another shape on
    # later turns (a bare string, then a message item).
    opening = _text_of(request.system) + "\0" + _text_of(first.content)
    data = opening.encode() if opening != "\0" else _encode(first.content)
    return hashlib.sha256(data).hexdigest()[:32]


# --- the built-in rules ----------------------------------------------------------------------

# Anthropic, "Building with extended thinking" > "Extended thinking with tool use" and
# "Preserving thinking blocks"
# (https://docs.anthropic.com/en/docs/build-with-claude/extended-thinking): the thinking and redacted_thinking blocks of the last assistant turn go back
# complete, unmodified and in order, before its tool_use blocks (else 400 "Expected
# `thinking` or `redacted_thinking`, but found `tool_use`").  Whole blocks are kept: the
# signature alone does not make a valid block.
ANTHROPIC_THINKING = ReasoningRule(
    "anthropic_thinking",
    source=ANTHROPIC,
    scope=("provider",),
    at_start=True,
    thinking_off=True,
)

# Gemini API, "Thought signatures" (https://ai.google.dev/gemini-api/docs/thought-signatures):
# the signature sits on the part (beside functionCall);
# every function call of the current turn must come back with its signature, and of
# parallel calls only the first carries one.  A signature from another model is
# "corrupted", so values are scoped by model; history from elsewhere gets the documented
# placeholder.
GEMINI_THOUGHT_SIGNATURES = ReasoningRule(
    "gemini_thought_signatures",
    source=GEMINI,
    scope=("provider", "model"),
    placeholder=GEMINI_PLACEHOLDER,
    text_signatures=True,
)

# OpenAI, "Reasoning models" > "Encrypted reasoning items"
# (https://platform.openai.com/docs/guides/reasoning), and the API reference of the reasoning
# item ("encrypted_content: populated when a response is generated with
# reasoning.encrypted_content in the include parameter"): without stored state, ask for include: ["reasoning.encrypted_content"] and send
# the reasoning items back with the function calls they came with.  An item from another
# key or organisation is invalid_encrypted_content: scoped by credential.
OPENAI_ENCRYPTED_REASONING = ReasoningRule(
    "openai_encrypted_reasoning",
    source=RESPONSES,
    scope=("provider", "credential"),
    include=ENCRYPTED_INCLUDE,
)

# The session and prompt-cache keys the coding tools' backends want repeated (rule 4 of the
# field-cache issue); each preset that needs one declares its fields and cites its client
# (asgi_rotator.presets, ``session_keys``).
PROVIDER_SESSION_KEYS = SessionKeyRule("provider_session_keys")

BUILTIN_RULES: tuple[Rule, ...] = (
    ANTHROPIC_THINKING,
    GEMINI_THOUGHT_SIGNATURES,
    OPENAI_ENCRYPTED_REASONING,
    PROVIDER_SESSION_KEYS,
)


def rules_from_config(config: Any) -> list[Rule]:
    """The rules a ``FieldCacheConfig`` asks for: its adapters, the built-in rules not
    switched off (with its ttl and size cap), then the configured rules."""
    rules: list[Rule] = []
    if config.adapters:
        from .adapters import make_adapter  # local: adapters import this module

        # First: the rules then see the request as it will go (its model, its knob).
        for i, entry in enumerate(config.adapters):
            rules.append(
                make_adapter(
                    entry.adapter,
                    entry.options,
                    name=f"adapter[{i}].{entry.adapter}",
                    provider=entry.match.provider,
                    model=entry.match.model,
                    client=entry.match.client,
                )
            )
    for builtin in BUILTIN_RULES:
        if config.builtin.get(builtin.name, True):
            rule = copy.copy(builtin)
            rule.ttl = config.ttl
            rule.max_bytes = config.max_bytes
            rules.append(rule)
    if config.rules:
        from .field_paths import path_rules  # local: only configs with their own rules

        rules += path_rules(config.rules)
    return rules


def config_problems(config: Any) -> list[tuple[str, str]]:
    """(path, message) for each mistake in ``config.field_cache`` (``config_check`` reports
    them with the rest of the configuration's)."""
    found: list[tuple[str, str]] = []
    section = config.field_cache
    known = [rule.name for rule in BUILTIN_RULES]
    for name in section.builtin:
        if name not in known:
            found.append(
                (f"field_cache.builtin.{name}", f"unknown built-in rule; known: {', '.join(known)}")
            )
    if section.ttl is not None and not section.ttl > 0:
        found.append(("field_cache.ttl", f"must be > 0, got {section.ttl}"))
    if section.max_bytes <= 0:
        found.append(("field_cache.max_bytes", f"must be > 0, got {section.max_bytes}"))
    if section.rules:
        from .config_check import shape_problems
        from .field_paths import RuleConfig, path_rules

        shaped = []
        for i, entry in enumerate(section.rules):
            problems = shape_problems(entry, RuleConfig, f"field_cache.rules[{i}]")
            found += [(p.path, p.message) for p in problems]
            if not problems:
                shaped.append(msgspec.convert(entry, RuleConfig))
        if len(shaped) == len(section.rules):
            try:
                path_rules(shaped)
            except ValueError as exc:
                path, _, message = str(exc).partition(": ")
                found.append((path, message))
    for i, adapter in enumerate(section.adapters):
        from .adapters import make_adapter  # local: adapters import this module

        try:
            make_adapter(
                adapter.adapter,
                adapter.options,
                name=f"adapter[{i}]",
                provider=adapter.match.provider,
                model=adapter.match.model,
                client=adapter.match.client,
            )
        except ValueError as exc:
            field, _, message = str(exc).partition(": ")
            found.append((f"field_cache.adapters[{i}].{field}", message))
    return found
