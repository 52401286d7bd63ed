"""Deployment helpers for the ARM64 AWS Batch worker: job definition and Dockerfile checks.

- ``python -m deploy.jobdef render|verify``: render the Batch job definition
  from ``deploy/templates/batch-jobdef.json``; verify a job definition (as
  ``aws batch describe-job-definitions`` returns it) against the plan of record.
- ``python -m deploy.dockercheck [--wheels]``: check ``docker/arm64/Dockerfile``'s
  invariants without a Docker engine, and that every runtime dependency resolves
  to a manylinux aarch64 wheel for the image's Python.

Nothing here talks to AWS: the commands read and print JSON, so they run in CI
and on machines without credentials.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = Path(__file__).resolve().parent / "templates" / "batch-jobdef.json"
DOCKERFILE = REPO_ROOT / "docker" / "arm64" / "Dockerfile"
SETUP_CFG = REPO_ROOT / "setup.cfg"
