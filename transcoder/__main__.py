"""``python -m transcoder``: the ``transcode`` command."""

from .cli import main

main()
