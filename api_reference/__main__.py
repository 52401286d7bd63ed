"""``python -m api_reference``: serve the reference job API or run its admin commands."""

from __future__ import annotations

from .server import main

raise SystemExit(main())
