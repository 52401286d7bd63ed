"""``python -m worker [JOB_ID]`` and the ``transcode-worker`` console script: the Batch container's entrypoint.

Exit codes: worker.exit_codes.ExitCode (one table). Logs: JSON lines on stdout.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

from .exit_codes import ExitCode
from .log import setup_logging
from .run import run
from .settings import SettingsError, read_settings, secret_values


def main(argv: Sequence[str] | None = None) -> int:
    """Read the settings, run the job, return the exit code (``sys.exit`` it)."""
    started = time.monotonic()
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print(__doc__.strip() if __doc__ else "transcode-worker [JOB_ID]")
        return ExitCode.OK
    log = setup_logging(secret_values(), started=started)
    try:
        settings = read_settings(args)
    except SettingsError as exc:
        log.error("bad_settings", "the worker cannot start: fix its environment", problems=list(exc.problems))
        return ExitCode.USAGE
    return int(run(settings, log, started=started))


if __name__ == "__main__":
    sys.exit(main())
