"""asgi-rotator: an LLM API gateway made of independent, pure ASGI middlewares."""

from __future__ import annotations

from .errors import GatewayError
from .protocols import Codec, get_codec

__all__ = ["Codec", "GatewayError", "get_codec"]
__version__ = "0.1.0"
