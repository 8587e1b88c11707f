"""Shared state: one async ``StateStore`` interface and its backends.

``MemoryStore`` is the embedded default, ``FileStore`` keeps a single node's state across
restarts, ``RedisStore`` shares state between workers and machines (it imports redis-py only
when made, so the base install does without it); ``namespaced`` gives each layer its own key
prefix over one store (a ``Namespace``, whose ``prepare`` gives ``PreparedKeys`` for a layer
that reads the same keys on every request).
"""

from __future__ import annotations

from ._file import FileStore
from ._memory import MemoryStore
from ._redis import RedisStore, StateUnavailableError
from ._store import Namespace, PreparedKeys, StateStore, namespaced

__all__ = [
    "FileStore",
    "MemoryStore",
    "Namespace",
    "PreparedKeys",
    "RedisStore",
    "StateStore",
    "StateUnavailableError",
    "namespaced",
]
