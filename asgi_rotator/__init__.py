"""asgi-rotator: an LLM API gateway made of independent, pure ASGI middlewares."""

from __future__ import annotations

from .config import Config, ConfigError, load_config, parse_config
from .dispatch import ProviderDispatch
from .errors import GatewayError
from .exchange import Exchange
from .protocols import Codec, get_codec
from .providers import Providers
from .stack import Gateway, build_app

__all__ = [
    "Codec",
    "Config",
    "ConfigError",
    "Exchange",
    "Gateway",
    "GatewayError",
    "ProviderDispatch",
    "Providers",
    "build_app",
    "get_codec",
    "load_config",
    "parse_config",
]
__version__ = "0.1.0"
