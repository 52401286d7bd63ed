"""A reference implementation of the job API for local runs and tests (not shipped in the worker image).

``ReferenceServer`` (standard-library HTTP + SQLite, :mod:`api_reference.server`) implements the contract in
``api_client/openapi.json`` with the state machine of :mod:`api_reference.store`. Run it with
``python -m api_reference --help`` from the repository. It imports ``api_client`` (the contract), never
``transcoder`` or ``worker``.
"""

from __future__ import annotations

from .server import ReferenceServer

__all__ = ["ReferenceServer"]
