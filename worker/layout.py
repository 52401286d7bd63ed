"""Where a run's ladder goes, and how a later run finds it again. Pure: no I/O.

Every run writes under a prefix of its own, below ``HLS_OUTPUT_URI``::

    {HLS_OUTPUT_URI}{video_id}/{job_id}-a{attempt}-{run_tag}/master.m3u8
    e.g. s3://academy-videos/hls/7/42-a1-3f9c0b1d/master.m3u8

``attempt`` is the API's ``job.attempt`` (it grows with each database-level
retry; ``AWS_BATCH_JOB_ATTEMPT`` is always 1 because Batch never retries);
``run_tag`` is 8 random hex digits drawn by each run. So two runs never write
the same key, even two runs of one attempt (a re-run of the same Batch job, or
a second Batch job submitted for the attempt): every key is written once
(R2 allows about one write per second per key, and nothing can overwrite a
ladder another run is reading or reporting).

``{video_id}/{job_id}-a`` is the job's *stem*: a later run of the same job (any
attempt) lists the directories that start with it and adopts one whose master
playlist exists and checks out, instead of encoding again. The master playlist
is written last, after every object it names is stored, so its presence means
that ladder is complete. A directory with checkpoint records and no master is
a run that died part way: a later attempt transcodes into it and resumes
(worker.outputs.find_resumable_run), so the keys it had stored stay its own.

``hls_path`` (reported to the API) is the master playlist's object key in the
bucket, HLS_OUTPUT_URI's own prefix included (``hls/7/42-a1-3f9c0b1d/master.m3u8``),
or, for a local output directory, its path relative to that directory
(``7/42-a1-3f9c0b1d/master.m3u8``).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from .settings import OutputRoot

__all__ = ["CHECKPOINTS", "MANIFEST", "MASTER", "RunDir", "job_stem", "new_run_tag", "parse_run_dir"]

MASTER = "master.m3u8"
MANIFEST = "manifest.json"  # the engine's output manifest, stored just before the master
CHECKPOINTS = ".checkpoint/"  # the engine's checkpoint records: a run that died left them (transcoder.checkpoint)
_RUN_TAG = re.compile(r"^[0-9a-f]{8}$")
_RUN_DIR = re.compile(r"^(?P<video>[1-9][0-9]*)/(?P<job>[1-9][0-9]*)-a(?P<attempt>[1-9][0-9]*)-(?P<tag>[0-9a-f]{8})/$")


def new_run_tag() -> str:
    """8 random hex digits: what makes a run's prefix its own."""
    return secrets.token_hex(4)


def job_stem(video_id: int, job_id: int) -> str:
    """The key prefix (relative to the output root) shared by every run of the job."""
    return f"{_positive(video_id, 'video_id')}/{_positive(job_id, 'job_id')}-a"


@dataclass(frozen=True, slots=True, kw_only=True)
class RunDir:
    """One run's directory under the output root."""

    video_id: int
    job_id: int
    attempt: int
    run_tag: str

    def __post_init__(self) -> None:
        for name in ("video_id", "job_id", "attempt"):
            _positive(getattr(self, name), name)
        if not _RUN_TAG.match(self.run_tag):
            raise ValueError(f"run_tag must be 8 lower-case hex digits, got {self.run_tag!r}")

    @property
    def relative(self) -> str:
        """``{video_id}/{job_id}-a{attempt}-{run_tag}/``, relative to the output root."""
        return f"{self.video_id}/{self.job_id}-a{self.attempt}-{self.run_tag}/"

    def destination(self, root: OutputRoot) -> str:
        """Where the transcoder writes: ``s3://bucket/prefix/...`` or a local directory path."""
        return root.uri + self.relative

    def master_key(self, root: OutputRoot) -> str:
        """The master playlist's key in the bucket (local: relative to the root directory)."""
        return (root.prefix if root.is_s3 else "") + self.relative + MASTER

    def hls_path(self, root: OutputRoot) -> str:
        """What ``complete`` reports (see the module docstring)."""
        return self.master_key(root)


def parse_run_dir(relative: str) -> RunDir | None:
    """The run a directory name (relative to the root, ending in ``/``) belongs to; None if not a run's."""
    match = _RUN_DIR.match(relative)
    if match is None:
        return None
    return RunDir(
        video_id=int(match["video"]),
        job_id=int(match["job"]),
        attempt=int(match["attempt"]),
        run_tag=match["tag"],
    )


def _positive(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value
