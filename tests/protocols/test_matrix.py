"""The 4x4 translation matrix: every ordered pair of protocols, same -> same included.

A value in protocol A is parsed with A's codec, built with B's codec and parsed again with B's
codec; the *meaning* of the two unified values must agree.  ``request_meaning`` and
``response_meaning`` project a unified value onto what a user of the API cares about, and
they apply the documented lossy conversions of docs/protocols.md for the protocol the value
went through (``via``), each with a comment naming the rule; everything else must survive.

Streams go the same way (A's SSE -> unified events -> B's encoder -> B's decoder) and the
bytes made for B are also fed to B's official SDK, whose accumulator must assemble the same
text, tool calls and usage.  Errors, in-band and as HTTP responses, must make B's SDK raise
its own exception class.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import anthropic
import openai
import pytest
from google.genai import errors as genai_errors

from asgi_rotator.errors import GatewayError
from asgi_rotator.protocols import get_codec
from asgi_rotator.protocols._common import budget_to_effort, effort_to_budget
from asgi_rotator.sse import SSEDecoder
from asgi_rotator.unified import (
    BlockStop,
    Error,
    Event,
    File,
    Finish,
    Image,
    Message,
    MessageStart,
    OutputFormat,
    Reasoning,
    ReasoningConfig,
    ReasoningDelta,
    Request,
    Response,
    Signature,
    Text,
    TextDelta,
    Tool,
    ToolArgsDelta,
    ToolCall,
    ToolCallStart,
    ToolChoice,
    ToolResult,
    Usage,
    UsageEvent,
)
from tests.conftest import FIXTURES, load_fixture
from tests.sdk import anthropic_client, genai_client, openai_client, replay

CHAT = "openai_chat"
RESPONSES = "openai_responses"
ANTHROPIC = "anthropic_messages"
GEMINI = "gemini"
PROTOCOLS = [CHAT, RESPONSES, ANTHROPIC, GEMINI]
PAIRS = [pytest.param(a, b, id=f"{a}->{b}") for a in PROTOCOLS for b in PROTOCOLS]
MODEL = {
    CHAT: "gpt-4.1",
    RESPONSES: "gpt-4.1",
    ANTHROPIC: "claude-sonnet-4-6",
    GEMINI: "gemini-2.5-flash",
}
ANTHROPIC_DEFAULT_MAX_TOKENS = 4096


def fixtures(protocol: str, pattern: str) -> list[str]:
    return sorted(p.name for p in (FIXTURES / protocol).glob(pattern))


def over_fixtures(pattern: str) -> list[Any]:
    """(source, fixture, target) for every fixture of every source, and every target."""
    return [
        pytest.param(a, name, b, id=f"{a}/{name.split('.')[0]}->{b}")
        for a in PROTOCOLS
        for name in fixtures(a, pattern)
        for b in PROTOCOLS
    ]


# --- going through a codec -------------------------------------------------------------------


def parse_request(protocol: str, body: dict[str, Any], model: str) -> Request:
    # Gemini carries model (and stream) in the URL, which the gateway passes alongside.
    return get_codec(protocol).parse_request(body, model=model if protocol == GEMINI else None)


def through_request(request: Request, via: str) -> Request:
    codec = get_codec(via)
    return parse_request(via, codec.build_request(request), request.model)


def through_response(response: Response, via: str) -> Response:
    codec = get_codec(via)
    return codec.parse_response(codec.build_response(response))


def decode(protocol: str, raw: bytes) -> list[Event]:
    sse = SSEDecoder()
    decoder = get_codec(protocol).stream_decoder()
    events = [e for s in [*sse.feed(raw), *sse.close()] for e in decoder.feed(s)]
    return events + decoder.close()


def client_request(protocol: str) -> Request:
    """The request a client of ``protocol`` streams with (usage asked for, as the SDKs do
    when they want it; Gemini shows thoughts when asked)."""
    request = Request(model=MODEL[protocol], stream=True, origin=protocol)
    if protocol == CHAT:
        request.include_usage = True
    if protocol == GEMINI:
        request.reasoning = ReasoningConfig(include_thoughts=True)
    return request


def encode(protocol: str, events: list[Event]) -> bytes:
    encoder = get_codec(protocol).stream_encoder(client_request(protocol))
    return b"".join(encoder.encode(e) for e in events)


def args(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


# --- meaning: requests -----------------------------------------------------------------------


def image_meaning(image: Image) -> tuple[Any, ...]:
    url = image.url or ""
    if url.startswith("data:"):  # a data: URL and inline base64 say the same thing
        header, _, data = url.partition(",")
        return ("image", header[5:].split(";")[0], data)
    if image.data is not None:
        return ("image", image.media_type, image.data)
    if image.url is not None:
        return ("image", "url", url)
    return ("image", "file_id", image.extra.get("file_id"))  # Responses input_image by id


def file_meaning(file: File) -> tuple[Any, ...]:
    url = file.url or ""
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        return ("file", header[5:].split(";")[0], data)
    if file.data is not None:
        return ("file", file.media_type, file.data)
    return ("file", "url" if file.url else "file_id", file.url or file.file_id)


def result_content(result: ToolResult, via: str) -> tuple[Any, ...]:
    texts = "".join(p.text for p in result.content if isinstance(p, Text))
    media = [
        image_meaning(p) if isinstance(p, Image) else file_meaning(p)
        for p in result.content
        if isinstance(p, Image | File)
    ]
    if via == CHAT:
        media = []  # Chat tool messages carry text only: images in tool results are dropped
    if via == GEMINI:
        media = []  # Gemini: they become sibling parts of the functionResponse (see the turn)
    return (args(texts), tuple(media))


def request_meaning(request: Request, via: str) -> dict[str, Any]:
    """What the client asked for, as it reaches the model through protocol ``via``."""
    foreign = request.origin != via
    ids: dict[str, Any] = {}

    def ref(call_id: str) -> int:
        # In a request the meaning of a tool-call id is the pairing: which call a result
        # answers.  Gemini sends no ids (pairs by name and order) and synthesizes them on
        # parse, as Chat does for legacy ``functions``.
        return ids.setdefault(call_id, len(ids))

    turns: list[tuple[str, list[Any]]] = []
    for message in request.messages:
        # Anthropic and Gemini merge consecutive turns of one speaker (strict alternation);
        # tool results are spoken by the user side in both.
        speaker = "assistant" if message.role == "assistant" else "user"
        if not turns or turns[-1][0] != speaker:
            turns.append((speaker, []))
        parts = turns[-1][1]
        for part in message.content:
            if isinstance(part, Text):
                parts.append(("text", part.text))
            elif isinstance(part, Image):
                parts.append(image_meaning(part))
            elif isinstance(part, File):
                parts.append(file_meaning(part))
            elif isinstance(part, ToolCall):
                parts.append(("call", ref(part.id), part.name, args(part.arguments)))
            elif isinstance(part, ToolResult):
                # is_error survives only where the wire has it (Anthropic is_error, Gemini
                # {"error": ...}); Chat and Responses tool outputs are plain text.
                error = part.is_error and via in (ANTHROPIC, GEMINI)
                parts.append(("result", ref(part.tool_call_id), error, result_content(part, via)))
                if via == GEMINI:
                    parts.extend(
                        image_meaning(p) if isinstance(p, Image) else file_meaning(p)
                        for p in part.content
                        if isinstance(p, Image | File)
                    )
            elif isinstance(part, Reasoning) and part.source == via:
                # Reasoning payloads go only back to the protocol that issued them; Anthropic
                # takes only signed (or redacted) thinking.
                if via != ANTHROPIC or part.signature or part.redacted:
                    parts.append(("reasoning", part.text, part.signature, part.redacted))
    for n, (speaker, parts) in enumerate(turns):
        if via == ANTHROPIC and foreign:
            # Messages API "Tool use": tool_result blocks come first in their user message.
            parts.sort(key=lambda p: p[0] != "result")
        # Adjacent text parts are read as one text (Chat sends plain-text content as one
        # string, as OpenAI itself concatenates text parts).
        turns[n] = (speaker, merge_texts(parts))

    tools = [
        # no parameters and an empty object schema say the same
        (t.name, t.description, t.parameters or {"type": "object", "properties": {}})
        for t in request.tools or []
        # built-in tools of one provider only go to that provider
        if t.type == "function" or not foreign
    ]
    choice = request.tool_choice or ToolChoice()
    if via == GEMINI and not request.tools:
        choice = ToolChoice()  # Gemini: a toolConfig without tools says nothing

    reasoning = reasoning_meaning(request, via)
    max_tokens = request.max_tokens
    temperature, top_p = request.temperature, request.top_p
    if via == ANTHROPIC and foreign:
        # Anthropic requires max_tokens; with thinking it must exceed the budget, and
        # temperature / top_p < 0.95 are incompatible with thinking (they are dropped).
        if max_tokens is None:
            max_tokens = ANTHROPIC_DEFAULT_MAX_TOKENS
        if reasoning[0]:
            budget = anthropic_budget(request)
            if max_tokens <= budget:
                max_tokens = budget + ANTHROPIC_DEFAULT_MAX_TOKENS
            temperature = None
            if top_p is not None and top_p < 0.95:
                top_p = None
    sampling = {
        field: None if foreign and via in NO_FIELD[field] else getattr(request, field)
        for field in NO_FIELD
    }
    if via == ANTHROPIC and foreign and reasoning[0]:
        sampling["top_k"] = None  # incompatible with thinking, like temperature

    output = request.output
    output_meaning: Any = None
    if output is not None and output.type != "text":
        output_meaning = (output.type, output.schema)
        if via == ANTHROPIC and foreign and output.type == "json_object":
            output_meaning = None  # Anthropic has no schema-less JSON mode: dropped

    return {
        "model": request.model,
        "system": system_text(request.system),
        "turns": turns,
        "tools": tools,
        "tool_choice": (choice.mode, choice.name),
        "reasoning": reasoning,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "top_p": top_p,
        **sampling,
        "output": output_meaning,
    }


# Request fields a protocol has no wire field for: dropped when building it from another one.
NO_FIELD = {
    "stop": {RESPONSES},
    "top_k": {CHAT, RESPONSES},
    "seed": {RESPONSES, ANTHROPIC},
    "presence_penalty": {RESPONSES, ANTHROPIC},
    "frequency_penalty": {RESPONSES, ANTHROPIC},
    "parallel_tool_calls": {GEMINI},
    "user": {GEMINI},
}


def system_text(system: list[Text]) -> str:
    # Several system parts may be joined into one (Responses ``instructions``, a Gemini
    # systemInstruction part): the text is the meaning, not the part boundaries.
    return "\n\n".join(p.text for p in system)


def reasoning_on(request: Request) -> bool:
    config = request.reasoning
    if config is None:
        return False
    if config.enabled is not None:
        return config.enabled
    return config.effort not in (None, "none") or bool(config.budget_tokens)


def anthropic_budget(request: Request) -> int:
    config = request.reasoning
    assert config is not None
    if config.budget_tokens:
        return config.budget_tokens
    return effort_to_budget(config.effort or "medium")


def reasoning_meaning(request: Request, via: str) -> tuple[bool, str | None]:
    """(on, effort level): the level is compared through the shared effort <-> budget table."""
    on = reasoning_on(request)
    if on and via == ANTHROPIC and request.origin != via:
        choice = request.tool_choice
        if choice is not None and choice.mode in ("required", "tool"):
            on = False  # thinking does not allow a forced tool choice: the tool choice wins
        elif not anthropic_can_think(request):
            on = False  # a tool loop without signed thinking to start with would be rejected
    config = request.reasoning
    if not on or config is None:
        return (False, None)
    if config.effort is not None and config.effort != "none":
        return (True, config.effort)
    if config.budget_tokens and config.budget_tokens > 0:
        return (True, budget_to_effort(config.budget_tokens))
    if request.origin != via and via in (CHAT, RESPONSES):
        # OpenAI has no "on" switch: reasoning on at the model's default level sends no
        # effort, which reads back as "not asked for".
        return (False, None)
    # Reasoning on at the provider's default level: Anthropic needs a budget and takes
    # the shared table's default (medium).
    return (True, "medium" if via == ANTHROPIC and request.origin != via else None)


def anthropic_can_think(request: Request) -> bool:
    assistant = [m for m in request.messages if m.role == "assistant"]
    if not assistant or not any(isinstance(p, ToolCall) for p in assistant[-1].content):
        return True
    return any(
        isinstance(p, Reasoning) and p.source == ANTHROPIC and (p.signature or p.redacted)
        for p in assistant[-1].content
    )


# --- meaning: responses ----------------------------------------------------------------------

# How each protocol says a finish reason it has no word for (docs/protocols.md).
FINISH_VIA = {
    CHAT: {"pause": "stop", "error": "stop"},
    RESPONSES: {"pause": "stop"},
    ANTHROPIC: {"error": "stop"},
    GEMINI: {"pause": "stop"},
}
# Gemini has no cache-write count (cachedContentTokenCount is reads): writes are lost there.
CACHE_WRITE = {CHAT, RESPONSES, ANTHROPIC}


def usage_meaning(usage: Usage | None, via: str) -> tuple[int, ...]:
    usage = usage or Usage()
    write = usage.cache_write_tokens if via in CACHE_WRITE else 0
    return (
        usage.input_tokens,
        usage.output_tokens,
        usage.reasoning_tokens,
        usage.cache_read_tokens,
        write,
    )


def response_meaning(response: Response, via: str) -> dict[str, Any]:
    blocks: list[Any] = []
    for part in response.content:
        if isinstance(part, Text):
            blocks.append(("text", part.text))
        elif isinstance(part, ToolCall):
            call_id = None if synthetic_id(part, via) else part.id
            blocks.append(("call", call_id, part.name, args(part.arguments)))
        elif isinstance(part, Reasoning):
            # The text of any provider's reasoning is shown to every client; payloads only
            # to their own protocol (an Anthropic client sees a foreign one as a thinking
            # block with an empty signature).  A payload-only part has nothing to show.
            own = part.source == via
            if part.text or own:
                payloads = (part.signature or None, part.redacted or None) if own else (None, None)
                blocks.append(("reasoning", part.text, *payloads))
    return {
        "model": response.model,
        "content": merge_texts(blocks),
        "finish": FINISH_VIA[via].get(response.finish_reason, response.finish_reason)
        if response.origin != via
        else response.finish_reason,
        "usage": usage_meaning(response.usage, via),
    }


def synthetic_id(call: ToolCall, via: str) -> bool:
    """An id the wire did not carry (Gemini calls without id, Chat legacy ``function_call``):
    it is made up again on every parse, and is only left out when going back to that wire."""
    if via == GEMINI:
        return bool(call.extra.get("__gemini", {}).get("syntheticId"))
    return via == CHAT and bool(call.extra.get("__openai_chat", {}).get("legacy"))


def merge_texts(blocks: list[Any]) -> list[Any]:
    """Adjacent text blocks are one answer (Chat has a single ``content`` string)."""
    merged: list[Any] = []
    for block in blocks:
        if block[0] == "text" and merged and merged[-1][0] == "text":
            merged[-1] = ("text", merged[-1][1] + block[1])
        else:
            merged.append(block)
    return merged


# --- meaning: streams ------------------------------------------------------------------------


def accumulate(events: list[Event]) -> dict[str, Any]:
    """The response a stream of unified events adds up to."""
    text: dict[int, str] = {}
    reasoning: dict[int, str] = {}
    calls: dict[int, list[str]] = {}
    payloads: list[tuple[str | None, str | None, str | None]] = []
    usage = Usage()
    finish: Finish | None = None
    errors: list[tuple[str, str]] = []
    for event in events:
        if isinstance(event, TextDelta):
            text[event.index] = text.get(event.index, "") + event.text
        elif isinstance(event, ReasoningDelta):
            reasoning[event.index] = reasoning.get(event.index, "") + event.text
        elif isinstance(event, Signature):
            payloads.append((event.source, event.signature or None, event.redacted or None))
        elif isinstance(event, ToolCallStart):
            calls[event.index] = [event.id, event.name, ""]
        elif isinstance(event, ToolArgsDelta):
            calls[event.index][2] += event.delta
        elif isinstance(event, UsageEvent):
            usage = usage.merge(event.usage)
        elif isinstance(event, Finish):
            finish = event
            usage = usage.merge(event.usage or Usage())
        elif isinstance(event, Error):
            errors.append((event.error.kind, event.error.message))
    return {
        "text": "".join(text[i] for i in sorted(text)),
        "reasoning": "".join(reasoning[i] for i in sorted(reasoning)),
        "calls": [(c[0], c[1], args(c[2] or "{}")) for _, c in sorted(calls.items())],
        "payloads": payloads,
        "finish": finish.reason if finish else None,
        "usage": usage,
        "errors": errors,
    }


def stream_meaning(events: list[Event], source: str, via: str) -> dict[str, Any]:
    result = accumulate(events)
    if source != via and result["finish"] is not None:
        result["finish"] = FINISH_VIA[via].get(result["finish"], result["finish"])
    result["usage"] = usage_meaning(result["usage"], via)
    # Reasoning payloads reach only the protocol that issued them.
    result["payloads"] = [p for p in result["payloads"] if p[0] == via]
    return result


# --- the official SDKs, one driver per protocol ----------------------------------------------
# Each driver feeds bytes our encoder made to the SDK's own stream accumulator and returns
# what the SDK assembled, counted by the unified usage rule.


def sdk_chat(raw: bytes) -> dict[str, Any]:
    with openai_client(replay(200, raw, sse=True)) as client:
        with client.chat.completions.stream(model=MODEL[CHAT], messages=[]) as stream:
            for _ in stream:
                pass
            # get_final_completion() raises LengthFinishReasonError on "length" by design.
            completion = stream.current_completion_snapshot
    message = completion.choices[0].message
    usage = completion.usage
    return {
        "text": message.content or "",
        "reasoning": (message.model_extra or {}).get("reasoning_content") or "",
        "calls": [
            (c.id, c.function.name, args(c.function.arguments)) for c in message.tool_calls or []
        ],
        "tokens": (usage.prompt_tokens, usage.completion_tokens) if usage else None,
    }


def sdk_responses(raw: bytes) -> dict[str, Any]:
    with openai_client(replay(200, raw, sse=True)) as client:
        with client.responses.stream(model=MODEL[RESPONSES], input="hi") as stream:
            events = list(stream)
    # A length or content-filter stop is response.incomplete, on which get_final_response()
    # raises by design: the last event carries the assembled response either way.
    assert events[-1].type in ("response.completed", "response.incomplete")
    response = events[-1].response
    text, reasoning, calls = "", "", []
    for item in response.output:
        if item.type == "message":
            text += "".join(c.text for c in item.content if c.type == "output_text")
        elif item.type == "reasoning":
            reasoning += "\n\n".join(s.text for s in item.summary)
        elif item.type == "function_call":
            calls.append((item.call_id, item.name, args(item.arguments)))
    usage = response.usage
    return {
        "text": text,
        "reasoning": reasoning,
        "calls": calls,
        "tokens": (usage.input_tokens, usage.output_tokens) if usage else None,
    }


def sdk_anthropic(raw: bytes) -> dict[str, Any]:
    with anthropic_client(replay(200, raw, sse=True)) as client:
        with client.messages.stream(
            model=MODEL[ANTHROPIC], max_tokens=1024, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            message = stream.get_final_message()
    usage = message.usage
    return {
        "text": "".join(b.text for b in message.content if b.type == "text"),
        "reasoning": "".join(b.thinking for b in message.content if b.type == "thinking"),
        "calls": [(b.id, b.name, b.input) for b in message.content if b.type == "tool_use"],
        "tokens": (
            usage.input_tokens
            + (usage.cache_read_input_tokens or 0)
            + (usage.cache_creation_input_tokens or 0),
            usage.output_tokens,
        ),
    }


def sdk_gemini(raw: bytes) -> dict[str, Any]:
    with genai_client(replay(200, raw, sse=True)) as client:
        chunks = list(client.models.generate_content_stream(model=MODEL[GEMINI], contents="hi"))
    text, reasoning, calls = "", "", []
    for chunk in chunks:
        for candidate in chunk.candidates or []:
            for part in (candidate.content.parts if candidate.content else None) or []:
                if part.function_call is not None:
                    call = part.function_call
                    calls.append((call.id, call.name, call.args))
                elif part.text and part.thought:
                    reasoning += part.text
                elif part.text:
                    text += part.text
    usage = chunks[-1].usage_metadata if chunks else None
    tokens = None
    if usage is not None and usage.prompt_token_count is not None:
        output = (usage.candidates_token_count or 0) + (usage.thoughts_token_count or 0)
        tokens = (usage.prompt_token_count + (usage.tool_use_prompt_token_count or 0), output)
    return {"text": text, "reasoning": reasoning, "calls": calls, "tokens": tokens}


SDK_STREAM: dict[str, Callable[[bytes], dict[str, Any]]] = {
    CHAT: sdk_chat,
    RESPONSES: sdk_responses,
    ANTHROPIC: sdk_anthropic,
    GEMINI: sdk_gemini,
}


@contextmanager
def sdk_call(protocol: str, status: int, body: bytes | dict[str, Any], sse: bool) -> Iterator[Any]:
    """A thunk making one request of ``protocol``'s SDK against a canned reply."""
    handler = replay(status, body, sse=sse)
    if protocol in (CHAT, RESPONSES):
        with openai_client(handler) as client:
            if protocol == CHAT:
                yield lambda: list(
                    client.chat.completions.create(model="m", messages=[], stream=sse)
                    if sse
                    else [client.chat.completions.create(model="m", messages=[])]
                )
            else:
                yield lambda: list(
                    client.responses.create(model="m", input="hi", stream=True)
                    if sse
                    else [client.responses.create(model="m", input="hi")]
                )
    elif protocol == ANTHROPIC:
        with anthropic_client(handler) as aclient:
            messages: Any = [{"role": "user", "content": "hi"}]
            yield lambda: list(
                aclient.messages.create(model="m", max_tokens=8, messages=messages, stream=True)
                if sse
                else [aclient.messages.create(model="m", max_tokens=8, messages=messages)]
            )
    else:
        with genai_client(handler) as gclient:
            yield lambda: list(
                gclient.models.generate_content_stream(model="m", contents="hi")
                if sse
                else [gclient.models.generate_content(model="m", contents="hi")]
            )


# Which exception class a client's SDK raises for an error of each kind (HTTP or in-band).
SDK_ERRORS: dict[str, dict[str, type[Exception]]] = {
    CHAT: {
        "rate_limited": openai.RateLimitError,
        "auth": openai.AuthenticationError,
        "not_found": openai.NotFoundError,
        "bad_request": openai.BadRequestError,
        "context_window_exceeded": openai.BadRequestError,
        "content_filtered": openai.BadRequestError,
        "overloaded": openai.InternalServerError,
        "server_error": openai.InternalServerError,
        "timeout": openai.InternalServerError,
    },
    ANTHROPIC: {
        "rate_limited": anthropic.RateLimitError,
        "auth": anthropic.AuthenticationError,
        "not_found": anthropic.NotFoundError,
        "bad_request": anthropic.BadRequestError,
        "context_window_exceeded": anthropic.BadRequestError,
        "content_filtered": anthropic.BadRequestError,
        "overloaded": anthropic.OverloadedError,
        "server_error": anthropic.InternalServerError,
        "timeout": anthropic.GatewayTimeoutError,
    },
    GEMINI: {
        kind: genai_errors.ServerError
        if kind in ("overloaded", "server_error", "timeout")
        else genai_errors.ClientError
        for kind in (
            "rate_limited",
            "auth",
            "not_found",
            "bad_request",
            "context_window_exceeded",
            "content_filtered",
            "overloaded",
            "server_error",
            "timeout",
        )
    },
}
SDK_ERRORS[RESPONSES] = SDK_ERRORS[CHAT]
# A 403 is "auth" too, but each SDK has its own class for it.
SDK_FORBIDDEN = {
    CHAT: openai.PermissionDeniedError,
    RESPONSES: openai.PermissionDeniedError,
    ANTHROPIC: anthropic.PermissionDeniedError,
    GEMINI: genai_errors.ClientError,
}
# The base class each SDK raises for an in-band stream error.
SDK_STREAM_ERROR: dict[str, type[Exception]] = {
    CHAT: openai.APIError,
    RESPONSES: openai.APIError,
    ANTHROPIC: anthropic.APIStatusError,
    GEMINI: genai_errors.APIError,
}


def sdk_message(exc: Exception) -> str:
    """The provider's message as the SDK exposes it."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):  # openai / anthropic HTTP errors: the error object
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return inner["message"]
    return str(getattr(exc, "message", exc))


# --- requests --------------------------------------------------------------------------------

# Requests a target refuses with a 400 rather than send something else (docs/protocols.md).
REFUSED = {
    # Chat Completions takes files inline or by file_id, not by URL.
    (RESPONSES, "request_multiturn_images.json", CHAT): "not by file id",
    (ANTHROPIC, "request_multiturn_images.json", CHAT): "not by URL",
    (GEMINI, "request_multiturn_images.json", CHAT): "not by URL",
    (GEMINI, "request_unknown_fields.json", CHAT): "not by URL",
    # An image by (OpenAI Responses) file id means nothing to another provider.
    (RESPONSES, "request_multiturn_images.json", ANTHROPIC): "image by file id",
    # Anthropic documents are PDF or plain text.
    (CHAT, "request_multimodal.json", ANTHROPIC): "PDF or plain text",
    # Gemini cannot resolve another provider's file ids.
    (CHAT, "request_multimodal.json", GEMINI): "file id cannot be sent to Gemini",
    (RESPONSES, "request_multiturn_images.json", GEMINI): "file id cannot be sent to Gemini",
    (ANTHROPIC, "request_unknown_fields.json", GEMINI): "file id cannot be sent to Gemini",
    # A function_call_output answering a call of a previous response (previous_response_id):
    # only the Responses API can pair it; the ResponsesState layer expands the history first.
    (RESPONSES, "request_previous_response.json", CHAT): "no matching tool call",
    (RESPONSES, "request_previous_response.json", ANTHROPIC): "no matching tool call",
    (RESPONSES, "request_previous_response.json", GEMINI): "no matching tool call",
}


@pytest.mark.parametrize(("source", "name", "target"), over_fixtures("request_*.json"))
def test_request_fixture_meaning_survives(source: str, name: str, target: str) -> None:
    body = load_fixture(source, name)
    request = parse_request(source, body, body.get("model", MODEL[source]))
    refusal = REFUSED.get((source, name, target))
    if refusal is not None:
        with pytest.raises(GatewayError) as info:  # by the codec, or as the provider would
            through_request(request, target)
        assert info.value.kind == "bad_request" and info.value.status == 400
        assert refusal in info.value.message
        return
    again = through_request(request, target)
    assert request_meaning(again, target) == request_meaning(request, target)


PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
WEATHER = Tool(
    name="get_weather",
    description="Current weather for a city",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
        "required": ["city"],
    },
)
CONVERSATION = [
    Message(
        role="user",
        content=[
            Text(text="Weather in Paris and Oslo? And what is in these pictures?"),
            Image(data=PNG, media_type="image/png"),
            Image(url="https://example.com/cat.jpg"),
        ],
    ),
    Message(
        role="assistant",
        content=[
            Text(text="Checking both."),
            ToolCall(id="call_paris", name="get_weather", arguments='{"city": "Paris"}'),
            ToolCall(id="call_oslo", name="get_weather", arguments='{"city":"Oslo","unit":"c"}'),
        ],
    ),
    Message(
        role="tool",
        content=[
            ToolResult(tool_call_id="call_paris", content=[Text(text='{"temp": 21}')]),
            ToolResult(
                tool_call_id="call_oslo",
                content=[Text(text="station offline"), Image(data=PNG, media_type="image/png")],
                is_error=True,
            ),
        ],
    ),
    Message(role="assistant", content=[Text(text="Paris is 21C; Oslo is unknown.")]),
    Message(role="user", content=[Text(text="Thanks. Now a haiku, please.")]),
]
# Unified values as a client of any protocol could send them; each is built in the source
# protocol first, so every source carries every feature it can express.
CANONICAL_REQUESTS = {
    "conversation": Request(
        model="test-model",
        system=[Text(text="You are terse.")],
        messages=CONVERSATION,
        tools=[WEATHER, Tool(name="noop", description="Does nothing")],
        tool_choice=ToolChoice(mode="tool", name="get_weather"),
        parallel_tool_calls=False,
        max_tokens=500,
        temperature=0.3,
        top_p=0.9,
        top_k=40,
        stop=["END", "STOP"],
        seed=7,
        presence_penalty=0.5,
        frequency_penalty=0.25,
        user="user-42",
    ),
    "reasoning": Request(
        model="test-model",
        system=[Text(text="Think first.")],
        messages=CONVERSATION,
        tools=[WEATHER],
        reasoning=ReasoningConfig(enabled=True, effort="high"),
        max_tokens=30000,
    ),
    "reasoning_budget_and_schema": Request(
        model="test-model",
        messages=[Message(role="user", content=[Text(text="Give me a city as JSON.")])],
        reasoning=ReasoningConfig(enabled=True, budget_tokens=2048),
        temperature=0.7,
        output=OutputFormat(
            name="city",
            schema={"type": "object", "properties": {"name": {"type": "string"}}},
        ),
    ),
    "reasoning_off": Request(
        model="test-model",
        messages=[Message(role="user", content=[Text(text="Quick answer.")])],
        reasoning=ReasoningConfig(enabled=False),
        max_tokens=64,
    ),
}


@pytest.mark.parametrize("name", CANONICAL_REQUESTS)
@pytest.mark.parametrize(("source", "target"), PAIRS)
def test_request_meaning_survives(source: str, target: str, name: str) -> None:
    canonical = CANONICAL_REQUESTS[name]
    request = parse_request(source, get_codec(source).build_request(canonical), canonical.model)
    assert request_meaning(request, source) == request_meaning(canonical, source)
    again = through_request(request, target)
    assert request_meaning(again, target) == request_meaning(request, target)


# --- responses -------------------------------------------------------------------------------

CANONICAL_RESPONSES = {
    "tool_calls_with_reasoning": Response(
        id="resp_1",
        model="test-model",
        content=[
            Reasoning(text="The user wants two cities.", signature="sig-xyz", source=ANTHROPIC),
            Text(text="Checking both."),
            ToolCall(id="call_paris", name="get_weather", arguments='{"city": "Paris"}'),
            ToolCall(id="call_oslo", name="get_weather", arguments='{"city":"Oslo"}'),
        ],
        finish_reason="tool_calls",
        usage=Usage(
            input_tokens=5000,
            output_tokens=700,
            reasoning_tokens=400,
            cache_read_tokens=3000,
            cache_write_tokens=1200,
        ),
    ),
    "length": Response(
        id="resp_2",
        model="test-model",
        content=[Text(text="Once upon a")],
        finish_reason="length",
        usage=Usage(input_tokens=9, output_tokens=3),
    ),
}


def response_cases() -> list[Any]:
    cases = over_fixtures("response_*.json")
    cases += [
        pytest.param(None, name, b, id=f"{name}->{b}")
        for name in CANONICAL_RESPONSES
        for b in PROTOCOLS
    ]
    return cases


@pytest.mark.parametrize(("source", "name", "target"), response_cases())
def test_response_meaning_survives(source: str | None, name: str, target: str) -> None:
    if source is None:
        response = CANONICAL_RESPONSES[name]
    else:
        response = get_codec(source).parse_response(load_fixture(source, name))
    again = through_response(response, target)
    assert response_meaning(again, target) == response_meaning(response, target)


FINISH_REASONS = ["stop", "length", "tool_calls", "content_filter", "pause", "error"]


def finished(reason: str) -> Response:
    content: list[Any] = [Text(text="Partial answer")]
    if reason == "tool_calls":  # every protocol but Chat infers this from the calls
        content.append(ToolCall(id="call_1", name="get_weather", arguments='{"city": "Rome"}'))
    return Response(
        id="resp_f",
        model="test-model",
        content=content,
        finish_reason=reason,  # type: ignore[arg-type]
        usage=Usage(input_tokens=10, output_tokens=4),
    )


def as_events(response: Response) -> list[Event]:
    events: list[Event] = [MessageStart(id=response.id, model=response.model)]
    for index, part in enumerate(response.content):
        if isinstance(part, Text):
            events.append(TextDelta(index=index, text=part.text))
        elif isinstance(part, ToolCall):
            events.append(ToolCallStart(index=index, id=part.id, name=part.name))
            events.append(ToolArgsDelta(index=index, delta=part.arguments))
        events.append(BlockStop(index=index))
    return [*events, Finish(reason=response.finish_reason, usage=response.usage)]


@pytest.mark.parametrize("reason", FINISH_REASONS)
@pytest.mark.parametrize("target", PROTOCOLS)
def test_finish_reason_survives_or_maps(target: str, reason: str) -> None:
    response = finished(reason)
    expected = FINISH_VIA[target].get(reason, reason)
    assert through_response(response, target).finish_reason == expected
    stream = stream_meaning(decode(target, encode(target, as_events(response))), "-", target)
    if target == RESPONSES and reason == "error":
        # A stream has only response.failed for an abnormal end, read back as an error.
        assert (stream["finish"], stream["errors"][0][0]) == (None, "server_error")
    else:
        assert stream["finish"] == expected


# --- streams ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("source", "name", "target"), over_fixtures("stream_*.sse"))
def test_stream_meaning_survives_and_the_sdk_assembles_it(
    source: str, name: str, target: str
) -> None:
    events = decode(source, load_fixture(source, name))
    raw = encode(target, events)
    again = decode(target, raw)
    expected = stream_meaning(events, source, target)
    assert stream_meaning(again, source, target) == expected
    if expected["errors"]:
        return  # in-band errors: see test_in_band_error_makes_the_client_sdk_raise
    assembled = SDK_STREAM[target](raw)
    # Chat and Gemini write no usage when none is known (Gemini's after-finish usage chunk
    # is ignored by design): the SDK then has none, which counts as zero.
    assembled["tokens"] = assembled["tokens"] or (0, 0)
    usage = accumulate(events)["usage"]
    assert assembled == {
        "text": expected["text"],
        "reasoning": expected["reasoning"],
        "calls": expected["calls"],
        "tokens": (usage.input_tokens, usage.output_tokens),
    }


# --- errors ----------------------------------------------------------------------------------

ERROR_STREAMS = [
    pytest.param(a, name, b, id=f"{a}/{name.split('.')[0]}->{b}")
    for a in PROTOCOLS
    for name in fixtures(a, "stream_*.sse")
    if any(isinstance(e, Error) for e in decode(a, load_fixture(a, name)))
    for b in PROTOCOLS
]


@pytest.mark.parametrize(("source", "name", "target"), ERROR_STREAMS)
def test_in_band_error_makes_the_client_sdk_raise(source: str, name: str, target: str) -> None:
    events = decode(source, load_fixture(source, name))
    (error,) = [e.error for e in events if isinstance(e, Error)]
    raw = encode(target, events)
    with (
        sdk_call(target, 200, raw, sse=True) as call,
        pytest.raises(SDK_STREAM_ERROR[target]) as info,
    ):
        call()
    assert sdk_message(info.value) == error.message
    if target == GEMINI:  # google-genai raises by the error's HTTP code
        assert type(info.value) is SDK_ERRORS[GEMINI][error.kind]


def error_cases() -> list[Any]:
    return [
        pytest.param(a, name, b, id=f"{a}/{name.split('.')[0]}->{b}")
        for a in PROTOCOLS
        for name in fixtures(a, "error_*.json")
        for b in PROTOCOLS
    ]


@pytest.mark.parametrize(("source", "name", "target"), error_cases())
def test_provider_error_makes_the_client_sdk_raise_its_class(
    source: str, name: str, target: str
) -> None:
    match = re.match(r"error_(\d+)", name)
    assert match is not None
    error = get_codec(source).parse_error(int(match.group(1)), load_fixture(source, name), {})
    status, body = get_codec(target).build_error(error)
    expected = SDK_ERRORS[target][error.kind]
    if error.kind == "auth" and error.status == 403:
        expected = SDK_FORBIDDEN[target]
    with sdk_call(target, status, body, sse=False) as call, pytest.raises(expected) as info:
        call()
    assert type(info.value) is expected
    message = sdk_message(info.value)
    if target == ANTHROPIC and error.kind == "context_window_exceeded":
        # Anthropic clients recognise the error by "prompt is too long", which is prefixed.
        assert message.endswith(error.message) and "prompt is too long" in message
    else:
        assert message == error.message
    again = get_codec(target).parse_error(status, body, {})
    assert again.kind == error.kind
    if target == GEMINI:  # elsewhere retry_after travels as the Retry-After header, not the body
        assert again.retry_after == error.retry_after
