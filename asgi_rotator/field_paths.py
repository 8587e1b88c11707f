"""Configured field-cache rules (``[[field_cache.rules]]``) and their path language.

A rule reads values at a *path* in provider-native JSON (the request the gateway is about to
send, the response, or each stream event), keeps them in the state store under a key scoped
to the inbound key and whatever ``scope`` adds, and writes them into a later request at the
``inject`` path.  docs/field-cache.md is the user's reference; in short:

Path language (over JSON; no functions, no recursion)::

    name            a key of an object          (metadata.user_id)
    [3]  [-1]       an element of an array      (content[0], content[-1])
    [*]             every element of an array   (candidates[*].content)
    [?key=value]    the elements whose key equals value (a string) (content[?type=thinking])

Reading collects every value the path reaches (missing keys reach nothing).  Writing
(``inject.path``) accepts keys, indices and ``[?key=value]``; a missing object on the way is
created; the last segment must be a key.

Modes: ``last`` keeps the last value seen; ``all`` keeps every value of the answer (up to
``max_values``); ``per_tool_call`` files the values under each tool call of the answer and
injects them when that call comes back; ``last_user_turn`` and ``last_assistant_turn`` file
them under a hash of the conversation's last user message (stable through a tool loop) or of
the answer (looked up as the last assistant message the client sends back).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any, Literal

import msgspec
from msgspec import Struct, field

from .field_rules import DEFAULT_MAX_BYTES, DEFAULT_TTL, SCOPES, Attempt, Rule, turn_hash
from .unified import Message, Part, Request, Text, ToolCall

__all__ = ["PathRule", "compile_path", "path_rules"]

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.decode
_SEGMENT = re.compile(r"\.?([A-Za-z_$@][\w$@-]*)|\[(-?\d+|\*|\?[^=\]]+=[^\]]*)\]")

Mode = Literal["last", "all", "last_user_turn", "last_assistant_turn", "per_tool_call"]


class MatchConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    provider: str = "*"  # provider name glob
    model: str = "*"  # upstream model glob
    client: str = "*"  # client protocol glob
    protocol: str | None = None  # upstream protocol (exact)


class InjectConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    path: str
    when: Literal["missing", "always"] = "missing"


class RuleConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    name: str
    path: str
    inject: InjectConfig
    match: MatchConfig = field(default_factory=MatchConfig)
    source: Literal["request", "response", "stream"] = "response"
    mode: Mode = "last"
    scope: list[str] = field(default_factory=lambda: ["inbound", "provider"])
    ttl: float | None = DEFAULT_TTL
    max_values: int = 16
    max_bytes: int = DEFAULT_MAX_BYTES


Segment = tuple[str, Any]  # ("key", name) | ("index", n) | ("all", None) | ("where", (k, v))


def compile_path(path: str) -> tuple[Segment, ...]:
    """The segments of ``path``; ``ValueError`` says where it stops making sense."""
    segments: list[Segment] = []
    at = 0
    while at < len(path):
        found = _SEGMENT.match(path, at)
        if found is None or (at == 0 and path.startswith(".")):
            raise ValueError(f"cannot read {path[at:]!r} (at character {at})")
        key, bracket = found.groups()
        if key is not None:
            segments.append(("key", key))
        elif bracket == "*":
            segments.append(("all", None))
        elif bracket.startswith("?"):
            name, _, value = bracket[1:].partition("=")
            segments.append(("where", (name, value)))
        else:
            segments.append(("index", int(bracket)))
        at = found.end()
    if not segments:
        raise ValueError("is empty")
    return tuple(segments)


def read(node: Any, segments: Sequence[Segment]) -> list[Any]:
    nodes = [node]
    for kind, arg in segments:
        out: list[Any] = []
        for current in nodes:
            if kind == "key":
                if isinstance(current, dict) and arg in current:
                    out.append(current[arg])
            elif not isinstance(current, list):
                continue
            elif kind == "index":
                if -len(current) <= arg < len(current):
                    out.append(current[arg])
            elif kind == "all":
                out.extend(current)
            else:
                name, value = arg
                out.extend(e for e in current if isinstance(e, dict) and e.get(name) == value)
        nodes = out
    return nodes


def write(node: Any, segments: Sequence[Segment], value: Any, *, always: bool) -> int:
    """Set ``value`` at the path under ``node``; how many places were written."""
    *head, (_, last) = segments
    parents = [node]
    for seg_kind, arg in head:
        out: list[Any] = []
        for current in parents:
            if seg_kind == "key" and isinstance(current, dict):
                child = current.get(arg)
                if child is None:
                    child = current[arg] = {}
                out.append(child)
            elif isinstance(current, list):
                out.extend(read(current, [(seg_kind, arg)]))
        parents = out
    written = 0
    for parent in parents:
        if isinstance(parent, dict) and (always or last not in parent):
            parent[last] = value
            written += 1
    return written


class PathRule(Rule):
    """One configured rule (see the module docstring)."""

    def __init__(self, config: RuleConfig) -> None:
        super().__init__(
            config.name,
            provider=config.match.provider,
            model=config.match.model,
            client=config.match.client,
            ttl=config.ttl,
            max_bytes=config.max_bytes,
            max_values=config.max_values,
        )
        self.protocols = (config.match.protocol,) if config.match.protocol else ()
        self.source = config.source
        self.mode = config.mode
        self.scope = tuple(s for s in config.scope if s != "inbound")
        self.path = compile_path(config.path)
        self.target = compile_path(config.inject.path)
        self.always = config.inject.when == "always"
        # ``shape`` sees the native request; it also reads it when that is the source.
        self.observes = config.source != "request"

    # --- keys -------------------------------------------------------------------------------

    def _keys(self, attempt: Attempt, request: Request) -> list[str]:
        """Where this request's values are filed (for injection)."""
        mode = self.mode
        if mode in ("last", "all"):
            return [attempt.key(self.name, self.scope, mode, "-")]
        if mode == "last_user_turn":
            return [attempt.key(self.name, self.scope, "user", _message_hash(request, "user"))]
        if mode == "last_assistant_turn":
            return [
                attempt.key(self.name, self.scope, "assistant", _message_hash(request, "assistant"))
            ]
        last = next((m for m in reversed(request.messages) if m.role == "assistant"), None)
        calls = [p for p in last.content if isinstance(p, ToolCall)] if last else []
        return [attempt.key(self.name, self.scope, "call", c.id) for c in calls]

    def _filed_under(self, attempt: Attempt, content: list[Part]) -> list[str]:
        """Where an answer's values are filed (for extraction)."""
        request = attempt.exchange.request
        mode = self.mode
        if mode in ("last", "all"):
            return [attempt.key(self.name, self.scope, mode, "-")]
        if mode == "last_user_turn":
            user = _message_hash(request, "user") if request is not None else "-"
            return [attempt.key(self.name, self.scope, "user", user)]
        if mode == "last_assistant_turn":
            answer = Message(role="assistant", content=content)
            return [attempt.key(self.name, self.scope, "assistant", _hash_message(answer))]
        calls = [p for p in content if isinstance(p, ToolCall)]
        return [attempt.key(self.name, self.scope, "call", c.id) for c in calls]

    # --- inject (the native body) -----------------------------------------------------------

    def shapes(self, attempt: Attempt, request: Request) -> bool:
        return True

    def shape(self, attempt: Attempt, body: dict[str, Any]) -> dict[str, Any]:
        # The store is async and this hook is not: the values were fetched in ``inject``.
        values = attempt.notes.get(("fetched", self.name))
        if values:
            value = values if self.mode == "all" else values[-1]
            written = write(body, self.target, value, always=self.always)
            attempt.record(
                "field_cache.inject", rule=self.name, hit=bool(written), values=len(values)
            )
        if self.source == "request":
            found = read(body, self.path)
            if found:
                attempt.notes[("pending", self.name)] = found[-self.max_values :]
        return body

    async def inject(self, attempt: Attempt, request: Request) -> Request:
        keys = self._keys(attempt, request)
        if not keys:
            return request
        try:
            raw = await attempt.store.get_many(keys)
        except Exception:
            attempt.record("field_cache.store_failed", rule=self.name, op="get")
            return request
        values: list[Any] = []
        for item in raw:
            if item is not None:
                values += _decode(item)
        attempt.notes[("fetched", self.name)] = values
        if not values:
            attempt.record("field_cache.inject", rule=self.name, hit=False)
        return request

    # --- extract ----------------------------------------------------------------------------

    def observe(self, attempt: Attempt, data: Any) -> None:
        """A native response body or stream event (dispatch's ``exchange.current.observe``)."""
        if self.source == "request":
            return
        found = read(data, self.path)
        if found:
            kept = attempt.notes.setdefault(("pending", self.name), [])
            kept += found
            del kept[: -self.max_values]

    async def extract(self, attempt: Attempt, content: list[Part]) -> None:
        pending = attempt.notes.pop(("pending", self.name), None)
        if not pending:
            attempt.record("field_cache.extract", rule=self.name, hit=False)
            return
        values = pending if self.mode != "last" else pending[-1:]
        raw = _encode(values)
        if len(raw) > self.max_bytes:
            attempt.record(
                "field_cache.extract", rule=self.name, hit=True, bytes=len(raw), kept=False
            )
            return
        try:
            for key in self._filed_under(attempt, content):
                await attempt.store.set(key, raw, ttl=self.ttl)
        except Exception:
            attempt.record("field_cache.store_failed", rule=self.name, op="set")
            return
        attempt.record(
            "field_cache.extract", rule=self.name, hit=True, values=len(values), bytes=len(raw)
        )


def _message_hash(request: Request, role: str) -> str:
    last = next((m for m in reversed(request.messages) if m.role == role), None)
    return _hash_message(last) if last is not None else "-"


def _hash_message(message: Message) -> str:
    calls = [p for p in message.content if isinstance(p, ToolCall)]
    if calls:
        return turn_hash(0, calls)
    text = "".join(p.text for p in message.content if isinstance(p, Text))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def path_rules(entries: Sequence[Any], where: str = "field_cache.rules") -> list[PathRule]:
    """Rules from their configuration; ``ValueError`` naming the path of what is wrong."""
    rules: list[PathRule] = []
    names: set[str] = set()
    for i, entry in enumerate(entries):
        at = f"{where}[{i}]"
        try:
            config = entry if isinstance(entry, RuleConfig) else msgspec.convert(entry, RuleConfig)
        except msgspec.ValidationError as exc:
            raise ValueError(f"{at}: {exc}") from None
        if config.name in names:
            raise ValueError(f"{at}.name: {config.name!r} is used by another rule")
        names.add(config.name)
        for name in config.scope:
            if name not in SCOPES:
                raise ValueError(f"{at}.scope: unknown scope {name!r}; known: {', '.join(SCOPES)}")
        for key, path in (("path", config.path), ("inject.path", config.inject.path)):
            try:
                segments = compile_path(path)
            except ValueError as exc:
                raise ValueError(f"{at}.{key}: {exc}") from None
            if key == "inject.path" and segments[-1][0] != "key":
                raise ValueError(f"{at}.inject.path: the last segment must be a key")
        if config.max_values < 1 or config.max_bytes < 1:
            raise ValueError(f"{at}: max_values and max_bytes must be at least 1")
        rules.append(PathRule(config))
    return rules
