"""The reasoning payloads the mock issued, and the checks the real services make when a
conversation sends them back.  Without these checks a gateway that loses a thinking block, a
thought signature or an encrypted reasoning item between two turns would pass every test.

Each check returns the provider's complaint (a 400 message), or ``None``:

* **Anthropic**, "Extended thinking" / "Preserving thinking blocks": a ``thinking`` block
  must come back unmodified with the signature it was issued with (any turn), and with
  thinking on, the final assistant turn of a tool loop must *start* with a thinking or
  redacted_thinking block.
* **Gemini 3** ("Thought signatures"): in the current turn (everything after the last user
  text), the first ``functionCall`` part of every model step must carry the signature the
  model issued; parallel calls after the first carry none.  A signature this model did not
  issue is "corrupted".  The documented placeholder ``skip_thought_signature_validator`` is
  accepted for history from elsewhere, which the mock takes to mean calls it did not issue.
* **OpenAI Responses** ("Reasoning", "Encrypted reasoning items"), with ``store: false``: a
  step's function calls must come back with the reasoning item issued beside them, carrying
  its ``encrypted_content``; encrypted content is only valid with the key it was issued to.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["GEMINI_PLACEHOLDER", "Issued", "check_anthropic", "check_gemini", "check_responses"]

GEMINI_PLACEHOLDER = "skip_thought_signature_validator"


class Issued:
    """What one mock instance handed out (it forgets on ``clear``)."""

    def __init__(self) -> None:
        self.thinking: dict[str, str] = {}  # Anthropic signature -> the thinking text
        self.gemini_signatures: set[str] = set()  # as sent (base64)
        self.gemini_steps: set[str] = set()  # fingerprints of signed function-call steps
        self.encrypted: dict[str, str | None] = {}  # Responses encrypted_content -> API key
        # call_id -> (rs id, encrypted content, the key it was issued to)
        self.responses_calls: dict[str, tuple[str, str, str | None]] = {}

    def clear(self) -> None:
        self.thinking.clear()
        self.gemini_signatures.clear()
        self.gemini_steps.clear()
        self.encrypted.clear()
        self.responses_calls.clear()


def gemini_step(user_text: str, calls: list[tuple[str, Any]]) -> str:
    """A model step's identity: the user text it answered and its calls (name, args)."""
    return json.dumps([user_text, [[n, a] for n, a in calls]], sort_keys=True)


def check_anthropic(body: dict[str, Any], issued: Issued) -> str | None:
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    last_assistant = None
    for i, message in enumerate(messages):
        content = message.get("content")
        if message.get("role") != "assistant" or not isinstance(content, list):
            continue
        last_assistant = i
        for j, block in enumerate(content):
            if not isinstance(block, dict):
                continue
            if block.get("type") == "thinking":
                signature = block.get("signature")
                if signature not in issued.thinking:
                    return f"messages.{i}.content.{j}: Invalid `signature` in `thinking` block"
                if issued.thinking[signature] != block.get("thinking"):
                    return (
                        f"messages.{i}.content.{j}: `thinking` or `redacted_thinking` blocks "
                        "in the latest assistant message cannot be modified. These blocks must "
                        "remain as they were in the original response."
                    )
            elif block.get("type") == "redacted_thinking":
                # The mock never redacts, so no redacted data is its own.
                return f"messages.{i}.content.{j}: Invalid `data` in `redacted_thinking` block"
    thinking = body.get("thinking")
    if not (isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")):
        return None
    if last_assistant is None:
        return None
    blocks = [b for b in messages[last_assistant].get("content") or [] if isinstance(b, dict)]
    if not any(b.get("type") == "tool_use" for b in blocks):
        return None
    first = blocks[0].get("type") if blocks else None
    if first in ("thinking", "redacted_thinking"):
        return None
    return (
        f"messages.{last_assistant}.content.0.type: Expected `thinking` or `redacted_thinking`, "
        f"but found `{first}`. When `thinking` is enabled, a final `assistant` message must "
        "start with a thinking block (preceding the lastmost set of `tool_use` and "
        "`tool_result` blocks)."
    )


def _get(node: dict[str, Any], camel: str, snake: str) -> Any:
    value = node.get(camel)
    return node.get(snake) if value is None else value


def _user_text(parts: list[Any]) -> str:
    return " ".join(
        p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)
    )


def check_gemini(body: dict[str, Any], issued: Issued) -> str | None:
    """Gemini 3's rule (only called for Gemini 3 models)."""
    contents = [c for c in body.get("contents") or [] if isinstance(c, dict)]
    start = 0
    user_text = ""
    for k, content in enumerate(contents):
        parts = [p for p in content.get("parts") or [] if isinstance(p, dict)]
        if content.get("role", "user") == "user" and _user_text(parts):
            start, user_text = k + 1, _user_text(parts)
        for part in parts:
            signature = _get(part, "thoughtSignature", "thought_signature")
            if (
                signature is not None
                and signature != GEMINI_PLACEHOLDER
                and signature not in issued.gemini_signatures
            ):
                return f"Corrupted thought signature (contents[{k}])."
    for k in range(start, len(contents)):
        content = contents[k]
        if content.get("role") != "model":
            continue
        parts = [p for p in content.get("parts") or [] if isinstance(p, dict)]
        calls = [(p, _get(p, "functionCall", "function_call")) for p in parts]
        calls = [(p, c) for p, c in calls if isinstance(c, dict)]
        if not calls:
            continue
        part, call = calls[0]
        signature = _get(part, "thoughtSignature", "thought_signature")
        if signature is None:
            return (
                "Function call is missing a thought_signature in functionCall parts. This is "
                "required for tools to work correctly, and missing thought_signature may lead "
                f"to degraded model performance. Additional data, function call "
                f"`default_api:{call.get('name')}` , position {k + 1}."
            )
        if signature == GEMINI_PLACEHOLDER:
            step = gemini_step(user_text, [(c.get("name"), c.get("args") or {}) for _, c in calls])
            if step in issued.gemini_steps:
                return (
                    f"contents[{k}]: the placeholder thought signature was sent for a function "
                    "call this model issued; send back the thought_signature it came with."
                )
    return None


def check_responses(body: dict[str, Any], key: str | None, issued: Issued) -> str | None:
    """With ``store: false``; returns the message, with the code after a ``|``."""
    items = body.get("input")
    if not isinstance(items, list):
        return None
    carried: set[str] = set()
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        if item.get("type") == "reasoning" and item.get("encrypted_content") is not None:
            content = item["encrypted_content"]
            if content not in issued.encrypted or issued.encrypted[content] != key:
                return (
                    f"invalid_encrypted_content|input[{i}]: The encrypted content could not "
                    "be verified: it was not issued to this organization or key."
                )
            carried.add(content)
    # The current turn's function calls (since the last item of another kind).
    step: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, dict) and item.get("type") == "function_call":
            step.append(item)
        elif step and isinstance(item, dict) and item.get("type") == "function_call_output":
            continue
        elif step and isinstance(item, dict) and item.get("type") != "reasoning":
            step = []
    for item in step:
        wanted = issued.responses_calls.get(str(item.get("call_id")))
        # Another key could never have sent it back: that is the other rule's business.
        if wanted is not None and wanted[2] == key and wanted[1] not in carried:
            return (
                f"|Item '{item.get('id') or item.get('call_id')}' of type 'function_call' was "
                f"provided without its required 'reasoning' item: '{wanted[0]}'. With "
                "`store: false`, send the reasoning item back with its `encrypted_content` "
                "(include `reasoning.encrypted_content`)."
            )
    return None
