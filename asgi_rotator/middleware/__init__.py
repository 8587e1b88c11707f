"""The gateway's middlewares, one job each; every one works alone around any ASGI app."""

from __future__ import annotations

from .auth import InboundKeys

__all__ = ["InboundKeys"]
