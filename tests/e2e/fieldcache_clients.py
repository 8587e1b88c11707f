"""Two-turn tool conversations with reasoning on, through each official SDK, for the field
cache tests.  Each client turns reasoning on with its own knob and sends turn 2 the way its
users commonly do: the calls and their results, without provider payloads it cannot carry
(a Chat client has no place for a signature; a Gemini client building parts by hand drops
it)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import anthropic
import openai
from google import genai
from google.genai import types as gt

WEATHER: dict[str, Any] = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"location": {"type": "string"}},
        "required": ["location"],
    },
}
CLOCK: dict[str, Any] = {
    "name": "get_clock",
    "description": "The time in a city",
    "parameters": {"type": "object", "properties": {"utc": {"type": "boolean"}}},
}
OUTPUT = "sunny"


@dataclass
class Call:
    id: str
    name: str
    arguments: dict[str, Any]


@dataclass
class Turn:
    text: str
    calls: list[Call]
    raw: Any = None


class Conversation:
    """One client's conversation: ``ask`` a question, then ``answer`` tool calls until the
    model answers in text."""

    protocol: str
    client: Any

    def __init__(self, base_url: str, model: str, *, stream: bool, key: str, tools: int) -> None:
        self.model = model
        self.stream = stream
        self.tools = [WEATHER, CLOCK][:tools]
        self.history: list[Any] = []
        self.key = key
        self.base_url = base_url

    def ask(self, question: str) -> Turn:
        raise NotImplementedError

    def answer(self, turn: Turn) -> Turn:
        raise NotImplementedError

    def run(self, question: str, max_steps: int = 5) -> list[Turn]:
        turns = [self.ask(question)]
        while turns[-1].calls and len(turns) <= max_steps:
            turns.append(self.answer(turns[-1]))
        return turns

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ChatConversation(Conversation):
    protocol = "openai_chat"

    def __init__(self, base_url: str, model: str, **kw: Any) -> None:
        super().__init__(base_url, model, **kw)
        self.client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=self.key, max_retries=0)

    def _send(self) -> Turn:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": self.history,
            "tools": [{"type": "function", "function": t} for t in self.tools],
            "reasoning_effort": "low",
        }
        if self.stream:
            with self.client.chat.completions.stream(**kwargs) as events:
                message = events.get_final_completion().choices[0].message
        else:
            message = self.client.chat.completions.create(**kwargs).choices[0].message
        calls = [
            Call(c.id, c.function.name, json.loads(c.function.arguments))
            for c in message.tool_calls or []
        ]
        if calls:
            self.history.append(
                {
                    "role": "assistant",
                    "content": message.content,
                    "tool_calls": [
                        {
                            "id": c.id,
                            "type": "function",
                            "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
                        }
                        for c in calls
                    ],
                }
            )
        return Turn(message.content or "", calls, message)

    def ask(self, question: str) -> Turn:
        self.history = [{"role": "user", "content": question}]
        return self._send()

    def answer(self, turn: Turn) -> Turn:
        self.history += [
            {"role": "tool", "tool_call_id": c.id, "content": OUTPUT} for c in turn.calls
        ]
        return self._send()


class ResponsesConversation(Conversation):
    protocol = "openai_responses"

    def __init__(self, base_url: str, model: str, **kw: Any) -> None:
        super().__init__(base_url, model, **kw)
        self.client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=self.key, max_retries=0)

    def _send(self) -> Turn:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "input": self.history,
            "tools": [{"type": "function", **t} for t in self.tools],
            "reasoning": {"effort": "low"},
            "store": False,
        }
        if self.stream:
            with self.client.responses.stream(**kwargs) as events:
                response = events.get_final_response()
        else:
            response = self.client.responses.create(**kwargs)
        calls = [
            Call(item.call_id, item.name, json.loads(item.arguments))
            for item in response.output
            if item.type == "function_call"
        ]
        self.history += [
            {
                "type": "function_call",
                "call_id": c.id,
                "name": c.name,
                "arguments": json.dumps(c.arguments),
            }
            for c in calls
        ]
        return Turn(response.output_text, calls, response)

    def ask(self, question: str) -> Turn:
        self.history = [{"role": "user", "content": question}]
        return self._send()

    def answer(self, turn: Turn) -> Turn:
        self.history += [
            {"type": "function_call_output", "call_id": c.id, "output": OUTPUT} for c in turn.calls
        ]
        return self._send()


class AnthropicConversation(Conversation):
    protocol = "anthropic_messages"

    def __init__(self, base_url: str, model: str, **kw: Any) -> None:
        super().__init__(base_url, model, **kw)
        self.client = anthropic.Anthropic(base_url=base_url, api_key=self.key, max_retries=0)

    def _send(self) -> Turn:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "max_tokens": 4096,
            "messages": self.history,
            "tools": [
                {
                    "name": t["name"],
                    "description": t["description"],
                    "input_schema": t["parameters"],
                }
                for t in self.tools
            ],
            "thinking": {"type": "enabled", "budget_tokens": 1024},
        }
        if self.stream:
            with self.client.messages.stream(**kwargs) as events:
                message = events.get_final_message()
        else:
            message = self.client.messages.create(**kwargs)
        calls = [Call(b.id, b.name, dict(b.input)) for b in message.content if b.type == "tool_use"]
        if calls:
            # The whole content back, as Anthropic's docs tell clients to do.
            self.history.append(
                {"role": "assistant", "content": [b.model_dump() for b in message.content]}
            )
        text = "".join(b.text for b in message.content if b.type == "text")
        return Turn(text, calls, message)

    def ask(self, question: str) -> Turn:
        self.history = [{"role": "user", "content": question}]
        return self._send()

    def answer(self, turn: Turn) -> Turn:
        self.history.append(
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": c.id, "content": OUTPUT}
                    for c in turn.calls
                ],
            }
        )
        return self._send()


class GeminiConversation(Conversation):
    protocol = "gemini"

    def __init__(self, base_url: str, model: str, **kw: Any) -> None:
        super().__init__(base_url, model, **kw)
        self.client = genai.Client(
            api_key=self.key,
            http_options=gt.HttpOptions(
                base_url=base_url, retry_options=gt.HttpRetryOptions(attempts=1)
            ),
        )

    def close(self) -> None:
        self.client.close()

    def _send(self) -> Turn:
        config = gt.GenerateContentConfig(
            tools=[
                gt.Tool(function_declarations=[gt.FunctionDeclaration(**t) for t in self.tools])
            ],
            automatic_function_calling=gt.AutomaticFunctionCallingConfig(disable=True),
            thinking_config=gt.ThinkingConfig(thinking_budget=1024, include_thoughts=True),
        )
        if self.stream:
            chunks = list(
                self.client.models.generate_content_stream(
                    model=self.model, contents=self.history, config=config
                )
            )
            text = "".join(
                p.text or ""
                for c in chunks
                for p in (
                    c.candidates[0].content.parts or []
                    if c.candidates and c.candidates[0].content
                    else []
                )
                if not p.thought
            )
            function_calls = [fc for c in chunks for fc in (c.function_calls or [])]
            raw: Any = chunks
        else:
            response = self.client.models.generate_content(
                model=self.model, contents=self.history, config=config
            )
            parts = response.candidates[0].content.parts or []  # type: ignore[index,union-attr]
            text = "".join(p.text or "" for p in parts if not p.thought)
            function_calls = response.function_calls or []
            raw = response
        calls = [Call(fc.id or "", fc.name or "", dict(fc.args or {})) for fc in function_calls]
        if calls:
            # Parts built by hand from the calls: the thought signature is not carried.
            self.history.append(
                gt.Content(
                    role="model",
                    parts=[
                        gt.Part(
                            function_call=gt.FunctionCall(
                                name=c.name, args=c.arguments, id=c.id or None
                            )
                        )
                        for c in calls
                    ],
                )
            )
        return Turn(text, calls, raw)

    def ask(self, question: str) -> Turn:
        self.history = [gt.Content(role="user", parts=[gt.Part(text=question)])]
        return self._send()

    def answer(self, turn: Turn) -> Turn:
        self.history.append(
            gt.Content(
                role="user",
                parts=[
                    gt.Part(
                        function_response=gt.FunctionResponse(
                            name=c.name, id=c.id or None, response={"result": OUTPUT}
                        )
                    )
                    for c in turn.calls
                ],
            )
        )
        return self._send()


CONVERSATIONS: dict[str, type[Conversation]] = {
    c.protocol: c
    for c in (ChatConversation, ResponsesConversation, AnthropicConversation, GeminiConversation)
}
