"""Small pieces every codec shares: validation helpers, ids, and the reasoning-effort table."""

from __future__ import annotations

import os
from typing import Any

from ..errors import GatewayError
from ..model_names import check_model_name
from .base import bad_request

__all__ = [
    "budget_to_effort",
    "effort_to_budget",
    "expect_bool",
    "expect_dict",
    "expect_int",
    "expect_list",
    "expect_model",
    "expect_number",
    "expect_str",
    "int_or_zero",
    "new_id",
    "reported_cost",
    "response_object",
]

# One table for every codec, so effort -> budget -> effort is stable across hops.
# Anthropic's minimum budget is 1024 (Messages API, "Extended thinking").
_EFFORT_BUDGET = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 24576}


def effort_to_budget(effort: str) -> int:
    return _EFFORT_BUDGET.get(effort, _EFFORT_BUDGET["medium"])


def budget_to_effort(budget: int) -> str:
    if budget <= 1024:
        return "minimal"
    if budget <= 2048:
        return "low"
    if budget <= 8192:
        return "medium"
    return "high"


def new_id(prefix: str) -> str:
    """A fresh opaque id (``prefix`` + 24 hex chars), as providers shape theirs."""
    return f"{prefix}{os.urandom(12).hex()}"


def response_object(body: Any) -> dict[str, Any]:
    """An upstream's plain response body, which a JSON object must be.  Anything else is the
    upstream's fault: a 502, never a 400 that would blame the client."""
    if not isinstance(body, dict):
        raise GatewayError(
            "server_error", "upstream sent a response that is not a JSON object", status=502
        )
    return body


def expect_dict(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise bad_request(path, f"expected an object, got {_kind(value)}")
    return value


def expect_list(value: Any, path: str, *, non_empty: bool = False) -> list[Any]:
    if not isinstance(value, list):
        raise bad_request(path, f"expected an array, got {_kind(value)}")
    if non_empty and not value:
        raise bad_request(path, "must not be empty")
    return value


def expect_str(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise bad_request(path, f"expected a string, got {_kind(value)}")
    return value


def expect_model(value: Any, path: str = "model") -> str:
    """A client's model name: a string the edge accepts (``model_names.check_model_name``)."""
    return check_model_name(expect_str(value, path), path)


def expect_int(value: Any, path: str, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(path, f"expected an integer, got {_kind(value)}")
    if minimum is not None and value < minimum:
        raise bad_request(path, f"must be >= {minimum}, got {value}")
    return value


def expect_number(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad_request(path, f"expected a number, got {_kind(value)}")
    return value


def expect_bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise bad_request(path, f"expected a boolean, got {_kind(value)}")
    return value


def int_or_zero(value: Any) -> int:
    """A count or index as a provider sent it, or 0 when it is not an integer (absent,
    null, a string, a boolean)."""
    # Exactly int: JSON's true decodes to bool, a subclass of int.
    return value if type(value) is int else 0


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "an object",
    }.get(type(value), type(value).__name__)


# xAI: "1 USD = 10,000,000,000 ticks" (xAI docs, "Cost Tracking").
USD_TICKS = 10**10


def reported_cost(usage: Any) -> float | None:
    """What the provider says a response cost, in USD, from its usage object, or ``None``.

    * xAI: ``usage.cost_in_usd_ticks`` (chat completions and Responses).
    * OpenRouter: ``usage.cost`` is what was charged to the account; on a BYOK request
      (``usage.is_byok``) that is only OpenRouter's fee, and the upstream provider charged
      ``usage.cost_details.upstream_inference_cost`` to the user's own key on top
      (OpenRouter docs, "Usage Accounting").
    """
    if not isinstance(usage, dict):
        return None
    ticks = usage.get("cost_in_usd_ticks")
    if isinstance(ticks, int) and not isinstance(ticks, bool) and ticks >= 0:
        return ticks / USD_TICKS
    if "cost" not in usage:
        return None  # most providers report none
    total = _amount(usage["cost"])
    if total is None:
        return None
    details = usage.get("cost_details")
    if usage.get("is_byok") is True and isinstance(details, dict):
        upstream = _amount(details.get("upstream_inference_cost"))
        if upstream is not None:
            total += upstream
    return total


def _amount(value: Any) -> float | None:
    """A finite amount of 0 or more, or ``None`` (absent, null, negative, NaN, a string)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if 0 <= value < float("inf"):
            return float(value)
    return None
