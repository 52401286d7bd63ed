"""``python -m transcoder.chunk_worker``: encode one chunk (see :mod:`transcoder.chunk_pool`)."""

import sys

from transcoder.chunk_pool import main

if __name__ == "__main__":
    sys.exit(main())
