"""``ResponsesState``: the OpenAI Responses API's conversation state, kept by the gateway.

A Responses client continues a conversation by sending only ``previous_response_id`` and
the new input.  This layer stores every response (``store``, default true as at OpenAI)
and, on a continuation, expands the stored chain into the unified request, so the turn can
be served by any provider of any protocol.  It also serves ``GET``/``DELETE
/v1/responses/{id}`` and ``GET /v1/responses/{id}/input_items`` in OpenAI's shapes.

Where it sits: under the protocol layer (and under ``InboundKeys``, whose principal scopes
the stored data), above ``FallbackRouter``: the history is expanded before routing, so the
conversation continues on whatever target serves the turn.  Alone around any app it still
works: it parses the request itself and puts the expanded conversation in the body it
replays to the inner app.

Deliberate choices:

* **One self-sufficient record per response.**  A record holds the whole conversation up to
  it: each earlier turn's input items as the client sent them, its output items as the
  client saw them, and its output as a unified ``Response`` (which keeps what the client
  never saw: Anthropic thinking signatures, Gemini thought signatures, the origin
  protocol).  A continuation reads one key; an older response that expired, was evicted by
  the cap or was deleted does not break the conversations that grew from it.  The price is
  storage that grows with the conversation, bounded by ``max_depth``.
* **Expansion is unified, turn by turn.**  Stored input items are parsed with the Responses
  codec (the client's own protocol, so its markers stay valid); stored outputs become
  assistant messages in a portable form, since the turn may go to another provider or
  another organisation's key: no ``extra`` (origin-only fields, provider item ids such as
  ``msg_``/``fc_``), no reasoning that is only an ``rs_`` reference into one provider's
  store; reasoning payloads (signatures, ``encrypted_content``) stay, and the codecs send
  them back only to the protocol that issued them.  ``instructions`` are never carried
  over (OpenAI semantics).  The unified model has no system role inside a conversation,
  so in an expanded request developer/system message items travel with the instructions,
  not at their place in the item list.  Tool results get the function name of their call
  from the history (Gemini matches by name).
* **Native continuation.**  When the stored response was produced over the Responses
  protocol by a provider, and every target the request's model may be routed to (its
  group, fallbacks included) is that same provider, the provider's own response id is
  passed through instead of the history (``native_continuation``).  If the provider does not
  know the id (another organisation's key, expired there: ``not_found`` or an error on
  ``previous_response_id``, before commit), the turn is sent again, expanded.
* **The id the client sees is ours.**  ``resp_`` and 48 hex digits, random, never the
  provider's id (which may collide across providers or restarts); ``store: false`` without
  ``previous_response_id`` is the exception: nothing to continue, so the response passes
  through untouched.  A plain response is
  re-rendered from its twin through the codec with our id.  A stream is *not* re-encoded:
  the response id lives only in the lifecycle events' ``response`` object
  (``response.created`` ... ``response.completed``), so exactly those events are rewritten
  (id and ``previous_response_id``), found by their ``"response"`` key; every other event
  goes out as it came, which keeps what the unified model does not carry in a same-protocol
  stream (annotations, logprobs, built-in tool items, the provider's item ids).  The
  ``MessageStart`` twin gets our id too, so bytes and twin agree.
* **Stored before it is announced.**  A plain response is stored before its body goes out,
  a stream when its terminal event (``Finish`` or ``Error``) arrives and before that event
  goes out, so a client continuing the instant it has the answer finds it (the cap's
  bookkeeping waits until the answer is out).  Writes are shielded from the request's
  cancellation, within a deadline; a failed write is logged, and the answer still goes out.
  A stream that fails is stored as ``failed``; one that ends without a terminal event (the
  client went away) as ``incomplete``; neither is ever ``completed``.  A failed response
  cannot be continued (400).
* **Scoped, validated, bounded.**  Keys are ``<principal>:<id>`` under the ``responses``
  namespace; without ``InboundKeys`` every client shares one anonymous scope.  Another
  principal's id is simply not found (404, or 400 ``previous_response_not_found``).  An id
  is matched against a strict pattern before it touches the store.  ``ttl`` bounds a
  record's life; ``max_responses`` caps the count through a ring of slots (an atomic
  counter picks the slot, whose previous occupant is deleted), so the oldest go first and a
  shared store is never flooded.  ``max_bytes`` caps the stored bytes the same way: each
  slot also holds its record's size, an atomic counter the ring's total, and a second
  counter (the tail) the oldest slot still counted; a write evicts from the tail until the
  total fits.  Under concurrent writers both caps are approximate by a few records, never
  unbounded.  A record larger than ``max_bytes`` by itself is not stored: a warning is
  logged and a plain answer says so in ``x-rotator-response-stored: false`` (a stream's
  headers are out long before its size is known; the log line is all it gets).
* **What a record weighs.**  The answer's text is in a record twice: as the client saw it
  (``turn.output``, which GET and ``input_items`` serve) and as the unified ``Response``
  (which keeps what the client never saw and a continuation needs: signatures, the origin
  protocol).  The response object as the client saw it is stored without its ``output``,
  which is put back from ``turn.output`` when it is read; it used to hold a third copy.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Awaitable
from typing import Any
from urllib.parse import parse_qsl

import anyio
import msgspec
from msgspec import Struct

from .._types import App, Receive, Scope, Send
from .._types import Message as ASGIMessage
from ..aggregate import StreamAggregate
from ..answer import ensure_request, is_event_stream, send_error, send_json
from ..config import ResponsesConfig
from ..errors import GatewayError
from ..exchange import DEFAULT_MAX_BODY, EVENT, PRINCIPAL, RESPONSE, WANT_RESPONSE, Exchange
from ..protocols import get_codec
from ..protocols.openai_responses import as_instructions
from ..providers import Providers
from ..redaction import redacting_logger
from ..routes import match_route, route_path
from ..state import MemoryStore, StateStore, namespaced
from ..unified import (
    Error,
    Event,
    Finish,
    Message,
    MessageStart,
    Part,
    Reasoning,
    Request,
    Response,
    Text,
    ToolCall,
    ToolResult,
)
from .routing import open_attempt, run_held

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_RESPONSES",
    "DEFAULT_TTL",
    "RESPONSE_ID",
    "ResponsesState",
]


logger = redacting_logger("asgi_rotator.responses")

NAME = "openai_responses"
_DEFAULTS = ResponsesConfig()
DEFAULT_TTL = _DEFAULTS.ttl
DEFAULT_MAX_RESPONSES = _DEFAULTS.max_responses
DEFAULT_MAX_BYTES = _DEFAULTS.max_bytes
DEFAULT_MAX_DEPTH = _DEFAULTS.max_depth
STORED_HEADER = b"x-rotator-response-stored"
# The only ids this layer issues, and the only ones it lets near the store.
RESPONSE_ID = re.compile(r"resp_[0-9a-f]{48}")

_NAMESPACE = "responses"
_ANONYMOUS = "-"
_SEQ_KEY = "ring:seq"
_TAIL_KEY = "ring:tail"  # the last sequence number evicted by the byte cap
_BYTES_KEY = "ring:bytes"  # bytes of the records from the tail to the head
_BYTE_RING = 1 << 40  # slot numbers when only bytes are capped (never wraps in practice)
_STORE_DEADLINE = 10.0  # seconds a final write may take once the request is being torn down
_LIST_LIMIT = 100
_TERMINAL_STATUS = frozenset({"completed", "incomplete", "failed"})
_ITEM_PREFIX = {
    "message": "msg_",
    "function_call": "fc_",
    "function_call_output": "fco_",
    "reasoning": "rs_",
}
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


# --- stored records ----------------------------------------------------------------------------


class _Turn(Struct, kw_only=True, omit_defaults=True):
    """One request and its response, as a conversation remembers them."""

    input: list[dict[str, Any]] = []  # the input items as the client sent them
    input_ids: list[str] = []  # the ids input_items lists them under (parallel to input)
    output: list[dict[str, Any]] = []  # the output items as the client saw them
    response: Response | None = None  # the output, unified: provider payloads and origin


class _Owner(Struct, kw_only=True, omit_defaults=True):
    """Who produced a response, for native continuation (never a key: a credential id)."""

    provider: str
    protocol: str
    upstream_id: str
    credential: str | None = None


class _Record(Struct, kw_only=True, omit_defaults=True):
    version: int = 1
    id: str
    status: str
    created_at: int = 0
    previous_response_id: str | None = None
    history: list[_Turn] = []  # the earlier turns, oldest first
    turn: _Turn
    body: msgspec.Raw  # the response object as the client saw it
    owner: _Owner | None = None


class _HeadTurn(Struct, kw_only=True):
    output: msgspec.Raw = msgspec.Raw(b"")  # empty: the record has no output items


class _Head(Struct, kw_only=True):
    """What ``GET`` needs; decoding skips the history."""

    status: str
    body: msgspec.Raw
    turn: _HeadTurn | None = None


_record_decoder = msgspec.json.Decoder(_Record)
_head_decoder = msgspec.json.Decoder(_Head)


# --- the middleware ----------------------------------------------------------------------------


class ResponsesState:
    """Stored Responses, continuation by ``previous_response_id``, retrieve/delete/input_items.

    ``store``: where records go (namespaced under ``responses:``; a ``MemoryStore`` when
    omitted).  ``providers``: needed only for native continuation, to know which providers
    may serve a model.  ``ttl``: seconds a record lives (``None``: until evicted).
    ``max_responses``: cap on stored records (``None``: no cap).  ``max_bytes``: cap on
    their encoded size in bytes (``None``: no cap); one record over it is not stored.
    ``max_depth``: most earlier
    responses a request may continue from.  ``native_continuation``: pass the provider's own
    id to the provider that owns the response instead of expanding the history.
    """

    def __init__(
        self,
        app: App,
        *,
        store: StateStore | None = None,
        providers: Providers | None = None,
        ttl: float | None = DEFAULT_TTL,
        max_responses: int | None = DEFAULT_MAX_RESPONSES,
        max_bytes: int | None = DEFAULT_MAX_BYTES,
        max_depth: int = DEFAULT_MAX_DEPTH,
        native_continuation: bool = _DEFAULTS.native_continuation,
        max_body: int = DEFAULT_MAX_BODY,
    ) -> None:
        if ttl is not None and not ttl > 0:
            raise ValueError(f"ttl must be a positive number of seconds or None, not {ttl!r}")
        if max_responses is not None and max_responses < 1:
            raise ValueError(f"max_responses must be at least 1 or None, not {max_responses!r}")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1 or None, not {max_bytes!r}")
        if max_depth < 1:
            raise ValueError(f"max_depth must be at least 1, not {max_depth!r}")
        self.app = app
        self.store = namespaced(store if store is not None else MemoryStore(), _NAMESPACE)
        self.providers = providers
        self.ttl = ttl
        self.max_responses = max_responses
        self.max_bytes = max_bytes
        self.max_depth = max_depth
        self.native_continuation = native_continuation and providers is not None
        self.max_body = max_body
        self.codec = get_codec(NAME)
        # target name -> every provider a group containing it may fall back to.
        self._reach: dict[str, set[str]] = _reachable(providers) if providers else {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or "/responses" not in scope["path"]:
            # Every Responses endpoint has it in its path: anything else (Chat Completions,
            # Messages, Gemini) is not this layer's business and passes untouched.
            await self.app(scope, receive, send)
            return
        route = match_route(route_path(scope))
        if route is None or route.protocol != NAME:
            await self.app(scope, receive, send)
        elif route.endpoint == "responses_item":
            await self._item(scope, receive, send, route.item or "")
        elif route.endpoint == "generate" and scope["method"] == "POST":
            await self._create(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    # --- POST /v1/responses ---------------------------------------------------------------

    async def _create(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            exchange = await ensure_request(scope, receive, max_body=self.max_body)
        except GatewayError as error:
            await send_error(send, NAME, error)
            return
        request = exchange.request
        if request is None or exchange.protocol != NAME:
            await self.app(scope, exchange.replay(), send)
            return
        keep = request.store is not False
        if not keep and request.previous_response_id is None:
            exchange.record("responses.skip", reason="store_false")
            await self.app(scope, exchange.replay(), send)
            return
        try:
            turn = await self._prepare(exchange, request)
        except GatewayError as error:
            exchange.current.error = error
            await send_error(send, NAME, error)
            return
        scope[WANT_RESPONSE] = True  # a plain answer is rebuilt and stored from its twin
        recorder = _Recorder(turn, send)
        try:
            if turn.native:
                await self._run_native(scope, turn, recorder, send)
            else:
                await self.app(scope, exchange.replay(), recorder.send)
        finally:
            await recorder.close()

    async def _prepare(self, exchange: Exchange, request: Request) -> _TurnState:
        principal = exchange.scope.get(PRINCIPAL) or _ANONYMOUS
        keep = request.store is not False
        own_input = _input_items(self.codec.build_request(request)["input"]) if keep else []
        # The request as the client sent it: the echo in the response built for it.
        echo = msgspec.structs.replace(request)
        turn = _TurnState(self, exchange, principal, request, echo, own_input, keep)
        previous = request.previous_response_id
        if previous is None:
            return turn
        record = await self._load_previous(principal, previous)
        turn.history = [*record.history, record.turn]
        owner = record.owner
        if (
            self.native_continuation
            and owner is not None
            and owner.protocol == NAME
            and await self._sole_provider(request.model) == owner.provider
        ):
            turn.native = owner
            request.previous_response_id = owner.upstream_id
            exchange.record(
                "responses.native",
                previous=previous,
                provider=owner.provider,
                depth=len(turn.history),
            )
        else:
            turn.expand()
        exchange.body = _encode(self.codec.build_request(request))
        return turn

    async def _load_previous(self, principal: str, previous: str) -> _Record:
        if RESPONSE_ID.fullmatch(previous) is None:
            raise GatewayError(
                "bad_request",
                "Invalid 'previous_response_id': expected an id this gateway issued "
                "('resp_' and 48 hexadecimal digits).",
                param="previous_response_id",
                code="invalid_value",
            )
        raw = await self._read(_key(principal, previous))
        record = _decode_record(raw) if raw is not None else None
        if record is None:
            raise GatewayError(
                "not_found",
                f"Previous response with id '{previous}' not found.",
                status=400,
                param="previous_response_id",
                code="previous_response_not_found",
            )
        if record.status == "failed":
            raise GatewayError(
                "bad_request",
                f"Previous response with id '{previous}' failed and cannot be continued; "
                "continue from the response before it.",
                param="previous_response_id",
            )
        depth = len(record.history) + 1
        if depth > self.max_depth:
            raise GatewayError(
                "bad_request",
                f"The conversation ending with '{previous}' has {depth} responses; this "
                f"gateway continues conversations of at most {self.max_depth} "
                "(responses.max_depth). Start a new conversation with the history as input.",
                param="previous_response_id",
                code="conversation_too_long",
            )
        return record

    async def _sole_provider(self, model: str) -> str | None:
        """The one provider every target of ``model`` belongs to (fallbacks included)."""
        assert self.providers is not None
        try:
            targets = await self.providers.targets(model)
        except GatewayError:
            return None
        names: set[str] = set()
        for target in targets:
            names.add(target.provider.name)
            names.update(self._reach.get(target.name, ()))
        if len(names) != 1:
            return None
        (name,) = names
        provider = self.providers.providers.get(name)
        if provider is None or NAME not in provider.protocols:
            return None
        # A backend that stores nothing (its body rules drop previous_response_id) is sent
        # the expanded history instead.
        return name if provider.continues_natively else None

    async def _run_native(
        self, scope: Scope, turn: _TurnState, recorder: _Recorder, send: Send
    ) -> None:
        exchange = turn.exchange
        entered = exchange.current  # its hooks (a layer above set them) carry into a retry
        held = await run_held(self.app, scope, exchange.replay(), recorder.send)
        if held.committed:
            return
        error = held.error
        if error is not None and (
            error.kind == "not_found" or error.param == "previous_response_id"
        ):
            # The provider lost or never had the response (another organisation's key,
            # expired there): the same turn again with the history.
            exchange.record("responses.native_refused", kind=error.kind, status=error.status)
            turn.native = None
            turn.request.previous_response_id = None
            try:
                turn.expand()
                exchange.body = _encode(self.codec.build_request(turn.request))
            except GatewayError as failure:
                exchange.current.error = failure
                await send_error(send, NAME, failure)
                return
            open_attempt(exchange, entered, None, turn.request)
            await self.app(scope, exchange.replay(), recorder.send)
        elif held.messages:
            await held.release(recorder.send)
        elif error is not None:
            exchange.current.error = error
            await send_error(send, NAME, error)

    # --- storage ----------------------------------------------------------------------------

    async def _save(
        self, exchange: Exchange, principal: str, record: _Record
    ) -> tuple[str, int] | None:
        """Write ``record``; its key and size, or ``None`` when it was not stored."""
        key = _key(principal, record.id)
        raw = _encode(record)
        if self.max_bytes is not None and len(raw) > self.max_bytes:
            logger.warning(
                "response %s not stored: its record is %d bytes, over responses.max_bytes "
                "(%d) (request %s)",
                record.id,
                len(raw),
                self.max_bytes,
                exchange.request_id,
            )
            exchange.record("responses.too_large", id=record.id, bytes=len(raw))
            return None
        if not await _shielded(exchange, "store", self.store.set(key, raw, ttl=self.ttl)):
            exchange.record("responses.store_failed", id=record.id)
            return None
        exchange.record(
            "responses.store",
            id=record.id,
            status=record.status,
            depth=len(record.history) + 1,
            bytes=len(raw),
        )
        return key, len(raw)

    async def _account(self, exchange: Exchange, key: str, size: int) -> None:
        """The caps' bookkeeping, once the client has its answer (it is not on the way)."""
        if self.max_bytes is not None:
            await _shielded(exchange, "account for", self._evict_for_bytes(key, size))
        elif self.max_responses is not None:
            await _shielded(exchange, "account for", self._evict_oldest(key, self.max_responses))

    async def _read(self, key: str) -> bytes | None:
        try:
            return await self.store.get(key)
        except Exception:
            logger.exception("could not read a stored response")
            raise _unavailable() from None

    async def _evict_oldest(self, key: str, cap: int) -> None:
        number = await self.store.incr(_SEQ_KEY)
        slot = f"ring:{number % cap}"
        previous = await self.store.get(slot)
        if previous is not None and previous != key.encode():
            await self.store.delete(previous.decode("utf-8", "replace"))
        await self.store.set(slot, key.encode(), ttl=self.ttl)

    async def _evict_for_bytes(self, key: str, size: int) -> None:
        """The byte cap (and the count cap, when set) over one ring: slots from the tail to
        the head hold ``"<size> <key>"``; the oldest leave until both caps hold."""
        assert self.max_bytes is not None
        ring = self.max_responses or _BYTE_RING
        store = self.store
        number = await store.incr(_SEQ_KEY)
        total = await store.incr(_BYTES_KEY, size)
        tail = int(await store.get(_TAIL_KEY) or b"0") if self.max_responses else 0
        count_full = self.max_responses is not None and number - tail > self.max_responses
        while total > self.max_bytes or count_full:
            tail = await store.incr(_TAIL_KEY)
            if tail >= number:
                await store.incr(_TAIL_KEY, -1)  # our own slot: it stays counted
                break
            slot = f"ring:{tail % ring}"
            entry = await store.get(slot)
            await store.delete(slot)
            if entry is not None:
                held, _, old = entry.decode("utf-8", "replace").partition(" ")
                if old != key:
                    await store.delete(old)
                total = await store.incr(_BYTES_KEY, -int(held))
            count_full = self.max_responses is not None and number - tail > self.max_responses
        await store.set(f"ring:{number % ring}", f"{size} {key}".encode(), ttl=self.ttl)

    # --- GET / DELETE /v1/responses/{id}[/input_items] ------------------------------------

    async def _item(self, scope: Scope, receive: Receive, send: Send, item: str) -> None:
        try:
            exchange = await Exchange.of(scope, receive, max_body=self.max_body)
        except GatewayError as error:
            await send_error(send, NAME, error)
            return
        exchange.protocol = exchange.protocol or NAME
        response_id, _, sub = item.partition("/")
        allowed = ("GET", "DELETE") if not sub else ("GET",)
        if sub in ("", "input_items") and scope["method"] not in allowed:
            refusal = GatewayError(
                "bad_request",
                f"method {scope['method']} not allowed on {scope['path']}",
                status=405,
            )
            await send_error(send, NAME, refusal, [(b"allow", ", ".join(allowed).encode())])
            return
        try:
            body = await self._answer_item(exchange, response_id, sub)
        except GatewayError as error:
            exchange.current.error = error
            await send_error(send, NAME, error)
            return
        await send_json(send, body)

    async def _answer_item(self, exchange: Exchange, response_id: str, sub: str) -> Any:
        scope = exchange.scope
        if sub not in ("", "input_items"):
            raise GatewayError("not_found", f"no route for {scope['path']}")
        if RESPONSE_ID.fullmatch(response_id) is None:
            # Never issued here (a store=false response keeps its provider's id): unknown.
            raise _not_found(response_id[:64])
        key = _key(scope.get(PRINCIPAL) or _ANONYMOUS, response_id)
        if scope["method"] == "DELETE":
            try:
                deleted = await self.store.delete(key)
            except Exception:
                logger.exception("could not delete a stored response")
                raise _unavailable() from None
            if not deleted:
                raise _not_found(response_id)
            exchange.record("responses.delete", id=response_id)
            return {"id": response_id, "object": "response", "deleted": True}
        raw = await self._read(key)
        if raw is None:
            raise _not_found(response_id)
        if sub:
            record = _decode_record(raw)
            if record is None:
                raise _not_found(response_id)
            page = _list_items(record, scope.get("query_string", b""))
            exchange.record("responses.input_items", id=response_id, items=len(page["data"]))
            return page
        try:
            head = _head_decoder.decode(raw)
        except (msgspec.DecodeError, RecursionError):
            raise _not_found(response_id) from None
        exchange.record("responses.retrieve", id=response_id, status=head.status)
        if head.turn is None or not head.turn.output:
            return head.body
        body = _decode(head.body)
        if isinstance(body, dict) and "output" not in body:
            # Stored without it (the same items are the turn's output): put back.
            body["output"] = head.turn.output
        return body


class _TurnState:
    """One POST's conversation: what it continues, what it adds, whether it goes native."""

    __slots__ = (
        "echo",
        "exchange",
        "history",
        "keep",
        "layer",
        "native",
        "own_input",
        "principal",
        "request",
        "response_id",
    )

    def __init__(
        self,
        layer: ResponsesState,
        exchange: Exchange,
        principal: str,
        request: Request,
        echo: Request,
        own_input: list[dict[str, Any]],
        keep: bool,
    ) -> None:
        self.layer = layer
        self.exchange = exchange
        self.principal = principal
        self.request = request
        self.echo = echo
        self.own_input = own_input
        self.keep = keep
        self.history: list[_Turn] = []
        self.native: _Owner | None = None
        self.response_id = f"resp_{os.urandom(24).hex()}"

    @property
    def previous(self) -> str | None:
        return self.echo.previous_response_id

    def expand(self) -> None:
        """The stored turns become the head of the request's conversation (in place)."""
        request = self.request
        codec = self.layer.codec
        messages: list[Message] = []
        system: list[Text] = []
        for turn in self.history:
            if turn.input:
                # ``previous_response_id`` lets a function_call_output answer a call that
                # is in the turn before (it is, in ``messages`` already).
                part = codec.parse_request(
                    {"model": request.model, "input": turn.input, "previous_response_id": "-"}
                )
                messages.extend(part.messages)
                system.extend(part.system)
            response = turn.response
            portable = map(_portable, response.content) if response else ()
            content = [p for p in portable if p is not None]
            if content:
                messages.append(Message(role="assistant", content=content))
        request.messages = [*messages, *request.messages]
        request.system = [as_instructions(t) for t in (*system, *request.system)]
        request.previous_response_id = None
        _name_tool_results(request.messages)
        self.exchange.record(
            "responses.expand",
            previous=self.previous,
            depth=len(self.history),
            messages=len(messages),
        )

    def record(self, body: dict[str, Any], response: Response, status: str) -> _Record:
        exchange = self.exchange
        owner = None
        attempt = exchange.attempts[-1] if exchange.attempts else None
        if attempt is not None and attempt.protocol and response.id:
            owner = _Owner(
                provider=attempt.provider,
                protocol=attempt.protocol,
                upstream_id=response.id,
                credential=attempt.credential,
            )
        output = body.get("output")
        created = body.get("created_at")
        return _Record(
            id=self.response_id,
            status=status,
            created_at=created if isinstance(created, int) else int(time.time()),
            previous_response_id=self.previous,
            history=self.history,
            turn=_Turn(
                input=self.own_input,
                input_ids=[_item_id(item) for item in self.own_input],
                output=output if isinstance(output, list) else [],
                response=response,
            ),
            # Without "output": turn.output holds the same items (put back on GET).
            body=msgspec.Raw(_encode({k: v for k, v in body.items() if k != "output"})),
            owner=owner,
        )


class _Recorder:
    """The send wrapper for one POST: gives the response our id, stores it, passes it on."""

    __slots__ = ("acc", "final", "key", "send_", "start", "stored", "streaming", "turn", "twinned")

    def __init__(self, turn: _TurnState, send: Send) -> None:
        self.turn = turn
        self.send_ = send
        self.start: ASGIMessage | None = None  # a plain response's start, held for its length
        self.streaming: bool | None = None  # None until a 2xx start was seen
        self.acc = _Accumulator()
        self.final: dict[str, Any] | None = None  # the last terminal response object streamed
        self.stored = False
        self.twinned = False
        self.key: tuple[str, int] | None = None  # the record's key and size once stored

    async def send(self, message: ASGIMessage) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            status = message.get("status", 200)
            if status >= 300:
                self.streaming = None
                await self.send_(message)  # an error answer: nothing to keep
            elif is_event_stream(message):
                self.streaming = True
                await self.send_(message)
            else:
                self.streaming = False
                self.start = message
            return
        if kind != "http.response.body" or self.streaming is None:
            await self.send_(message)
        elif self.streaming:
            await self._stream_body(message)
        else:
            await self._plain_body(message)

    async def _plain_body(self, message: ASGIMessage) -> None:
        start, self.start = self.start, None
        response = message.get(RESPONSE)
        if start is None:
            await self.send_(message)
            return
        if not isinstance(response, Response) or message.get("more_body", False):
            # No twin (a foreign app) or a body in pieces: nothing to judge it by.
            self.turn.exchange.record("responses.untracked", reason="no_twin")
            await self.send_(start)
            await self.send_(message)
            return
        turn = self.turn
        twin = msgspec.structs.replace(response, id=turn.response_id)
        body = turn.layer.codec.build_response(twin, turn.echo)
        body["previous_response_id"] = turn.previous
        raw = _encode(body)
        turn.exchange.response_id = turn.response_id
        if turn.keep:
            status = body.get("status")
            await self._store(body, response, status if status in _TERMINAL_STATUS else "completed")
        headers = [(k, v) for k, v in start.get("headers", ()) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(raw)).encode()))
        if turn.keep and self.key is None:
            headers.append((STORED_HEADER, b"false"))  # too large, or the write failed
        await self.send_({**start, "headers": headers})
        await self.send_({**message, "body": raw, RESPONSE: twin})

    async def _stream_body(self, message: ASGIMessage) -> None:
        events: list[Event] | None = message.get(EVENT)
        if events is None:
            await self.send_(message)  # a heartbeat, or a foreign app's bytes
            return
        self.twinned = True
        turn = self.turn
        self.acc.feed(events)
        body = message.get("body", b"")
        if body:
            rewritten, final = turn.layer.codec.rewrite_stream_ids(
                body, turn.response_id, turn.previous
            )
            if final is not None:
                self.final = final
            if rewritten is not body:
                message = {**message, "body": rewritten}
        if any(isinstance(e, MessageStart) for e in events):
            events = [
                msgspec.structs.replace(e, id=turn.response_id)
                if isinstance(e, MessageStart)
                else e
                for e in events
            ]
            message = {**message, EVENT: events}
            turn.exchange.response_id = turn.response_id
            if turn.exchange.stream is not None:
                turn.exchange.stream.rename(turn.response_id)
        if not self.stored and any(isinstance(e, (Finish, Error)) for e in events):
            await self._store_stream()
        await self.send_(message)

    async def close(self) -> None:
        """After the inner app: a stream that never reached its terminal event is stored
        now; the cap's bookkeeping for what was stored."""
        if self.streaming and self.twinned and not self.stored:
            await self._store_stream()
        elif self.streaming and not self.twinned:
            self.turn.exchange.record("responses.untracked", reason="no_twin")
        if self.key is not None:
            await self.turn.layer._account(self.turn.exchange, *self.key)

    async def _store_stream(self) -> None:
        self.stored = True
        if not self.turn.keep:
            return
        response = self.acc.response()
        status = self.acc.status()
        body = self.final
        if body is None or body.get("status") not in _TERMINAL_STATUS:
            turn = self.turn
            twin = msgspec.structs.replace(response, id=turn.response_id)
            body = turn.layer.codec.build_response(twin, turn.echo)
            body["previous_response_id"] = turn.previous
            body.update(_status_fields(status, self.acc))
        await self._store(body, response, str(body.get("status") or status))

    async def _store(self, body: dict[str, Any], response: Response, status: str) -> None:
        self.stored = True
        turn = self.turn
        record = turn.record(body, response, status)
        self.key = await turn.layer._save(turn.exchange, turn.principal, record)


class _Accumulator(StreamAggregate):
    """The aggregate, and the status a stored response gets from it."""

    __slots__ = ()

    def status(self) -> str:
        if self.error is not None:
            return "failed"
        if self.finish is None or self.finish.reason in _INCOMPLETE:
            return "incomplete"
        return "completed"


# --- helpers -----------------------------------------------------------------------------------


async def _shielded(exchange: Exchange, what: str, operation: Awaitable[Any]) -> bool:
    """Run a store write to its end even while the request is being torn down (a client
    that goes away mid-stream still leaves its response behind), within a deadline.
    ``False`` when it failed: the client has its answer either way."""
    with anyio.CancelScope(shield=True, deadline=anyio.current_time() + _STORE_DEADLINE) as scope:
        try:
            await operation
        except Exception:
            logger.exception("could not %s a response (%s)", what, exchange.request_id)
            return False
    return not scope.cancelled_caught


def _reachable(providers: Providers) -> dict[str, set[str]]:
    """For each target in a group: the providers that group (and its fallbacks) may use."""
    reach: dict[str, set[str]] = {}
    for name, group in providers.config.groups.items():
        members = providers.resolve(name)
        names = {t.provider.name for t in members}
        for spec in (*group.context_fallbacks, *group.content_fallbacks):
            names.update(t.provider.name for t in providers.resolve(spec))
        for target in members:
            reach.setdefault(target.name, set()).update(names)
    return reach


def _key(principal: str, response_id: str) -> str:
    return f"{principal}:{response_id}"


def _decode_record(raw: bytes) -> _Record | None:
    try:
        return _record_decoder.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        logger.warning("a stored response could not be decoded; treated as absent")
        return None


def _not_found(response_id: str) -> GatewayError:
    return GatewayError(
        "not_found", f"Response with id '{response_id}' not found.", param="response_id"
    )


def _unavailable() -> GatewayError:
    return GatewayError("server_error", "stored responses are unavailable right now")


def _input_items(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _item_id(item: dict[str, Any]) -> str:
    existing = item.get("id")
    if isinstance(existing, str) and existing:
        return existing
    kind = item.get("type") or "message"
    return f"{_ITEM_PREFIX.get(kind, 'item_')}{os.urandom(16).hex()}"


def _portable(part: Part) -> Part | None:
    """An output part as history for any target: without ``extra`` (fields and item ids
    only its origin understands) and without reasoning that is only a reference into one
    provider's store (a Responses ``rs_`` id with no ``encrypted_content``)."""
    if isinstance(part, Reasoning) and part.source == NAME and part.redacted is None:
        return None
    return msgspec.structs.replace(part, extra={}) if part.extra else part


def _name_tool_results(messages: list[Message]) -> None:
    names: dict[str, str] = {}
    for message in messages:
        for part in message.content:
            if isinstance(part, ToolCall):
                names[part.id] = part.name
            elif isinstance(part, ToolResult) and part.name is None:
                part.name = names.get(part.tool_call_id)


def _status_fields(status: str, acc: _Accumulator) -> dict[str, Any]:
    if status == "failed":
        error = acc.error
        message = getattr(error, "message", None) or "The response failed."
        return {
            "status": "failed",
            "incomplete_details": None,
            "error": {"code": "server_error", "message": message},
        }
    if status == "incomplete":
        finish = acc.finish
        reason = _INCOMPLETE.get(finish.reason, "interrupted") if finish else "interrupted"
        return {"status": "incomplete", "incomplete_details": {"reason": reason}, "error": None}
    return {"status": "completed", "incomplete_details": None, "error": None}


def _list_items(record: _Record, query: bytes) -> dict[str, Any]:
    """``input_items``: every item the response was generated from, in OpenAI's shapes."""
    params = dict(parse_qsl(query.decode("latin-1")))
    limit_text = params.get("limit", "20")
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= _LIST_LIMIT:
        raise GatewayError(
            "bad_request",
            f"Invalid 'limit': expected an integer from 1 to {_LIST_LIMIT}.",
            param="limit",
            code="invalid_value",
        )
    order = params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise GatewayError(
            "bad_request",
            "Invalid 'order': expected 'asc' or 'desc'.",
            param="order",
            code="invalid_value",
        )
    items: list[dict[str, Any]] = []
    for turn in record.history:
        items.extend(_listed(i, n) for i, n in zip(turn.input, turn.input_ids, strict=False))
        items.extend(turn.output)
    items.extend(
        _listed(i, n) for i, n in zip(record.turn.input, record.turn.input_ids, strict=False)
    )
    if order == "desc":
        items.reverse()
    ids = [item.get("id") for item in items]
    start, end = 0, len(items)
    for name in ("after", "before"):
        cursor = params.get(name)
        if cursor is None:
            continue
        if cursor not in ids:
            raise GatewayError(
                "bad_request",
                f"Invalid '{name}': no item with that id in this response's input.",
                param=name,
                code="invalid_value",
            )
        if name == "after":
            start = ids.index(cursor) + 1
        else:
            end = ids.index(cursor)
    window = items[start:end]
    limit = int(limit_text)
    # ``before`` pages backwards: the items nearest the cursor.
    page = window[-limit:] if "before" in params and "after" not in params else window[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0].get("id") if page else None,
        "last_id": page[-1].get("id") if page else None,
        "has_more": len(window) > len(page),
    }


def _listed(item: dict[str, Any], item_id: str) -> dict[str, Any]:
    """An input item as OpenAI lists it: typed, with an id and a status, content as parts."""
    out = dict(item)
    kind = out.get("type") or ("message" if "role" in out else "item_reference")
    out["type"] = kind
    out["id"] = item_id
    if kind == "message":
        content = out.get("content")
        if isinstance(content, str):
            if out.get("role") == "assistant":
                part: dict[str, Any] = {"type": "output_text", "text": content, "annotations": []}
            else:
                part = {"type": "input_text", "text": content}
            out["content"] = [part]
        out.setdefault("status", "completed")
    elif kind in ("function_call", "function_call_output"):
        out.setdefault("status", "completed")
    return out
