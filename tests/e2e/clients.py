"""One driver per official SDK: the same conversation, as each SDK's users write it.

Each driver turns what the SDK returned into a ``Result`` so tests compare meaning across
protocols: the text, the tool calls, and the usage the client was told.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import anthropic
import openai
from google import genai
from google.genai import types as gt

WEATHER = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"location": {"type": "string"}},
        "required": ["location"],
    },
}
QUESTION = "What is the weather in Paris?"
TOOL_OUTPUT = "sunny, 21 C"


@dataclass
class Call:
    id: str
    name: str
    arguments: dict[str, Any]


class Driver:
    """Base: every driver owns one SDK client and closes it (no socket outlives a test)."""

    protocol: str
    client: Any

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()


@dataclass
class Result:
    text: str = ""
    calls: list[Call] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cached_tokens: int = 0
    raw: Any = None


class ChatDriver(Driver):
    protocol = "openai_chat"

    def __init__(self, base_url: str, api_key: str = "client-key") -> None:
        self.client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=api_key, max_retries=0)

    def ask(
        self,
        model: str,
        text: str = "Hello there",
        *,
        stream: bool = False,
        tools: bool = False,
        history: Any = None,
    ) -> Result:
        messages = history or [{"role": "user", "content": text}]
        kwargs: dict[str, Any] = {"model": model, "messages": messages}
        if tools:
            kwargs["tools"] = [{"type": "function", "function": WEATHER}]
        if not stream:
            completion = self.client.chat.completions.create(**kwargs)
            message = completion.choices[0].message
            return Result(
                text=message.content or "",
                calls=[
                    Call(c.id, c.function.name, json.loads(c.function.arguments))
                    for c in message.tool_calls or []
                ],
                input_tokens=completion.usage.prompt_tokens if completion.usage else 0,
                output_tokens=completion.usage.completion_tokens if completion.usage else 0,
                raw=completion,
            )
        with self.client.chat.completions.stream(
            **kwargs, stream_options={"include_usage": True}
        ) as events:
            final = events.get_final_completion()
        message = final.choices[0].message
        return Result(
            text=message.content or "",
            calls=[
                Call(c.id, c.function.name, json.loads(c.function.arguments))
                for c in message.tool_calls or []
            ],
            input_tokens=final.usage.prompt_tokens if final.usage else 0,
            output_tokens=final.usage.completion_tokens if final.usage else 0,
            raw=final,
        )

    def tool_round_trip(self, model: str, *, stream: bool = False) -> tuple[Result, Result]:
        first = self.ask(model, QUESTION, stream=stream, tools=True)
        history = [
            {"role": "user", "content": QUESTION},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
                    }
                    for c in first.calls
                ],
            },
            *({"role": "tool", "tool_call_id": c.id, "content": TOOL_OUTPUT} for c in first.calls),
        ]
        return first, self.ask(model, stream=stream, tools=True, history=history)


class ResponsesDriver(Driver):
    protocol = "openai_responses"

    def __init__(self, base_url: str, api_key: str = "client-key") -> None:
        self.client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=api_key, max_retries=0)

    def ask(
        self,
        model: str,
        text: str = "Hello there",
        *,
        stream: bool = False,
        tools: bool = False,
        history: Any = None,
    ) -> Result:
        kwargs: dict[str, Any] = {"model": model, "input": history or text}
        if tools:
            kwargs["tools"] = [{"type": "function", **WEATHER}]
        if stream:
            with self.client.responses.stream(**kwargs) as events:
                response = events.get_final_response()
        else:
            response = self.client.responses.create(**kwargs)
        calls = [
            Call(item.call_id, item.name, json.loads(item.arguments))
            for item in response.output
            if item.type == "function_call"
        ]
        usage = response.usage
        return Result(
            text=response.output_text,
            calls=calls,
            input_tokens=usage.input_tokens if usage else 0,
            output_tokens=usage.output_tokens if usage else 0,
            raw=response,
        )

    def tool_round_trip(self, model: str, *, stream: bool = False) -> tuple[Result, Result]:
        first = self.ask(model, QUESTION, stream=stream, tools=True)
        history: list[Any] = [{"role": "user", "content": QUESTION}]
        history += [
            {
                "type": "function_call",
                "call_id": c.id,
                "name": c.name,
                "arguments": json.dumps(c.arguments),
            }
            for c in first.calls
        ]
        history += [
            {"type": "function_call_output", "call_id": c.id, "output": TOOL_OUTPUT}
            for c in first.calls
        ]
        return first, self.ask(model, stream=stream, tools=True, history=history)


class AnthropicDriver(Driver):
    protocol = "anthropic_messages"

    def __init__(self, base_url: str, api_key: str = "client-key") -> None:
        self.client = anthropic.Anthropic(base_url=base_url, api_key=api_key, max_retries=0)

    def ask(
        self,
        model: str,
        text: str = "Hello there",
        *,
        stream: bool = False,
        tools: bool = False,
        history: Any = None,
    ) -> Result:
        kwargs: dict[str, Any] = {
            "model": model,
            "max_tokens": 1024,
            "messages": history or [{"role": "user", "content": text}],
        }
        if tools:
            kwargs["tools"] = [
                {
                    "name": WEATHER["name"],
                    "description": WEATHER["description"],
                    "input_schema": WEATHER["parameters"],
                }
            ]
        if stream:
            with self.client.messages.stream(**kwargs) as events:
                message = events.get_final_message()
        else:
            message = self.client.messages.create(**kwargs)
        usage = message.usage
        return Result(
            text="".join(b.text for b in message.content if b.type == "text"),
            calls=[
                Call(b.id, b.name, dict(b.input)) for b in message.content if b.type == "tool_use"
            ],
            # The unified rule: Anthropic's input_tokens leaves cache tokens out.
            input_tokens=usage.input_tokens
            + (usage.cache_read_input_tokens or 0)
            + (usage.cache_creation_input_tokens or 0),
            output_tokens=usage.output_tokens,
            raw=message,
        )

    def tool_round_trip(self, model: str, *, stream: bool = False) -> tuple[Result, Result]:
        first = self.ask(model, QUESTION, stream=stream, tools=True)
        history = [
            {"role": "user", "content": QUESTION},
            {"role": "assistant", "content": [c.model_dump() for c in first.raw.content]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": c.id, "content": TOOL_OUTPUT}
                    for c in first.calls
                ],
            },
        ]
        return first, self.ask(model, stream=stream, tools=True, history=history)


class GeminiDriver(Driver):
    protocol = "gemini"

    def __init__(self, base_url: str, api_key: str = "client-key") -> None:
        self.client = genai.Client(
            api_key=api_key,
            http_options=gt.HttpOptions(
                base_url=base_url, retry_options=gt.HttpRetryOptions(attempts=1)
            ),
        )

    def ask(
        self,
        model: str,
        text: str = "Hello there",
        *,
        stream: bool = False,
        tools: bool = False,
        history: Any = None,
    ) -> Result:
        config = gt.GenerateContentConfig(
            tools=[gt.Tool(function_declarations=[gt.FunctionDeclaration(**WEATHER)])]
            if tools
            else None,
            automatic_function_calling=gt.AutomaticFunctionCallingConfig(disable=True),
        )
        contents = history or text
        if stream:
            chunks = list(
                self.client.models.generate_content_stream(
                    model=model, contents=contents, config=config
                )
            )
            text_out = "".join(c.text or "" for c in chunks if c.candidates)
            calls = [fc for c in chunks for fc in (c.function_calls or [])]
            usage = next((c.usage_metadata for c in reversed(chunks) if c.usage_metadata), None)
            raw: Any = chunks
        else:
            response = self.client.models.generate_content(
                model=model, contents=contents, config=config
            )
            text_out = response.text or ""
            calls = response.function_calls or []
            usage = response.usage_metadata
            raw = response
        return Result(
            text=text_out,
            calls=[Call(fc.id or "", fc.name or "", dict(fc.args or {})) for fc in calls],
            input_tokens=(usage.prompt_token_count or 0) if usage else 0,
            # The unified rule: Gemini's candidates leave thoughts out.
            output_tokens=((usage.candidates_token_count or 0) + (usage.thoughts_token_count or 0))
            if usage
            else 0,
            raw=raw,
        )

    def tool_round_trip(self, model: str, *, stream: bool = False) -> tuple[Result, Result]:
        first = self.ask(model, QUESTION, stream=stream, tools=True)
        model_parts = [
            gt.Part(function_call=gt.FunctionCall(name=c.name, args=c.arguments, id=c.id or None))
            for c in first.calls
        ]
        history = [
            gt.Content(role="user", parts=[gt.Part(text=QUESTION)]),
            gt.Content(role="model", parts=model_parts),
            gt.Content(
                role="user",
                parts=[
                    gt.Part(
                        function_response=gt.FunctionResponse(
                            name=c.name, id=c.id or None, response={"result": TOOL_OUTPUT}
                        )
                    )
                    for c in first.calls
                ],
            ),
        ]
        return first, self.ask(model, stream=stream, tools=True, history=history)


DRIVERS = {d.protocol: d for d in (ChatDriver, ResponsesDriver, AnthropicDriver, GeminiDriver)}
