"""``python -m asgi_rotator``: the ``asgi-rotator`` command."""

from __future__ import annotations

from .cli import main

raise SystemExit(main())
