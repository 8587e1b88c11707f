"""The gateway's middlewares, one job each; every one works alone around any ASGI app."""

from __future__ import annotations

from .auth import InboundKeys
from .cooldown import CooldownRetry
from .fallback import FallbackRouter
from .field_cache import FieldCache
from .log_lines import LogLines
from .protocol import ProtocolNegotiation
from .request_log import RequestLog
from .responses import ResponsesState
from .stream_guard import StreamGuard
from .tracing import Tracing

__all__ = [
    "CooldownRetry",
    "FallbackRouter",
    "FieldCache",
    "InboundKeys",
    "LogLines",
    "ProtocolNegotiation",
    "RequestLog",
    "ResponsesState",
    "StreamGuard",
    "Tracing",
]
