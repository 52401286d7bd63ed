"""Decode once, encode an Apple-conformant H.264/AAC HLS ladder.

The public API is what ``__all__`` names; every other module is an
implementation detail.
"""

from __future__ import annotations

from .chapters import ChapterPolicy
from .config import EncoderSettings, LadderPolicy, Limits, RungSpec, TranscodeConfig
from .errors import (
    CancelledError,
    ConfigError,
    InputError,
    LimitExceededError,
    MediaError,
    OutputError,
    TranscodeError,
    UnsupportedInputError,
)
from .ladder import plan_ladder
from .models import (
    AudioInfo,
    AudioPlan,
    ChaptersResult,
    ChunkStats,
    IFrameInfo,
    Ladder,
    LoudnessResult,
    Manifest,
    Progress,
    RenditionResult,
    Rung,
    SegmentInfo,
    SourceInfo,
    ThumbnailsResult,
    TranscodeResult,
    VideoInfo,
)
from .output import LocalDirectory, OutputSink, ResumableOutput
from .probe import probe
from .run import transcode
from .storage import (
    CredentialsError,
    S3Location,
    SourceChangedError,
    SourceNotFoundError,
    StorageConfig,
    StorageError,
    UploadError,
    make_s3_client,
)
from .storyboard import StoryboardPolicy
from .version import __version__

__all__ = [
    "AudioInfo",
    "AudioPlan",
    "CancelledError",
    "ChapterPolicy",
    "ChaptersResult",
    "ChunkStats",
    "ConfigError",
    "CredentialsError",
    "EncoderSettings",
    "IFrameInfo",
    "InputError",
    "Ladder",
    "LadderPolicy",
    "LimitExceededError",
    "Limits",
    "LocalDirectory",
    "LoudnessResult",
    "Manifest",
    "MediaError",
    "OutputError",
    "OutputSink",
    "Progress",
    "RenditionResult",
    "ResumableOutput",
    "Rung",
    "RungSpec",
    "S3Location",
    "SegmentInfo",
    "SourceChangedError",
    "SourceInfo",
    "SourceNotFoundError",
    "StorageConfig",
    "StorageError",
    "StoryboardPolicy",
    "ThumbnailsResult",
    "TranscodeConfig",
    "TranscodeError",
    "TranscodeResult",
    "UnsupportedInputError",
    "UploadError",
    "VideoInfo",
    "__version__",
    "make_s3_client",
    "plan_ladder",
    "probe",
    "transcode",
]
