"""Audio front end of the loader: decode a 10 s window with soundfile, mix to mono, resample (soxr).

Only the frames of the window are read when the format can seek (WAV, FLAC, Ogg, MP3 all can in
libsndfile), so a random crop of a 5-minute recording costs about as much as a 10 s one. The
evaluation crop (DESIGN.md, "What it is for") needs the clip's peak, so it decodes the whole clip.
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import soundfile as sf
import soxr

from biovita_data.core.cstderr import filtered_c_stderr

TARGET_RATE = 48_000
CLIP_SECONDS = 10.0
ONSET_THRESHOLD = 0.01  # a fraction of the clip's peak |amplitude|
ONSET_LEAD_S = 0.2  # the evaluation crop starts this long before the onset

# After a seek, an MP3 decoder needs the frames before the target: Layer III frames borrow bits
# from earlier ones (the bit reservoir), and mpg123 outputs silence until it has them. Measured
# with libsndfile 1.2: up to 16 frames (9,216 samples) at ~10 kbit/s; 0.5 s covers every rate.
MP3_PREROLL_S = 0.5
MP3_PREROLL_MIN = 9216

CropMode = Literal["random", "onset", "start"]


def preroll_frames(file_format: str, rate: int) -> int:
    """Frames to decode before a seek target so that the target decodes exactly (MP3 only)."""
    if file_format.upper() in ("MP3", "MPEG"):
        return max(MP3_PREROLL_MIN, math.ceil(MP3_PREROLL_S * rate))
    return 0


@dataclass(frozen=True)
class Clip:
    """A decoded, cropped, mono clip at the target rate, with its position in the source."""

    samples: np.ndarray  # float32, exactly n_samples long (zero padded)
    valid: int  # samples that come from the recording; the rest is padding
    start_s: float  # where the window starts in the recording, seconds
    source_rate: int
    source_channels: int
    source_frames: int


def to_mono(x: np.ndarray) -> np.ndarray:
    """Average the channels of a (frames, channels) array into float32 (frames,)."""
    if x.ndim == 1:
        return x.astype(np.float32, copy=False)
    if x.shape[1] == 1:  # a view, no copy
        return x.reshape(-1).astype(np.float32, copy=False)
    out = np.array(x[:, 0], dtype=np.float32)  # column sums: much faster than mean(axis=1)
    for c in range(1, x.shape[1]):
        out += x[:, c]
    if x.shape[1] > 1:
        out *= np.float32(1.0 / x.shape[1])
    return out


def resample(x: np.ndarray, rate_in: int, rate_out: int, quality: str = "HQ") -> np.ndarray:
    """Resample a mono float32 signal with soxr (a no-op when the rates match)."""
    if rate_in == rate_out or x.size == 0:
        return x
    return soxr.resample(x, rate_in, rate_out, quality=quality).astype(np.float32, copy=False)


def fit_length(x: np.ndarray, n: int) -> np.ndarray:
    """Trim or zero-pad (at the end) to exactly n samples."""
    if x.shape[0] >= n:
        return np.ascontiguousarray(x[:n])
    out = np.zeros(n, dtype=np.float32)
    out[: x.shape[0]] = x
    return out


def onset_index(x: np.ndarray, threshold: float = ONSET_THRESHOLD) -> int:
    """The first sample whose |amplitude| exceeds threshold x the peak (0 for a silent clip)."""
    if x.size == 0:
        return 0
    mag = np.abs(x)
    peak = float(mag.max())
    if peak <= 0.0:
        return 0
    above = np.flatnonzero(mag > threshold * peak)
    return int(above[0]) if above.size else 0


def source_window(rate: int, seconds: float) -> int:
    """Frames of the source that cover seconds (rounded up, so resampling never falls short)."""
    return math.ceil(seconds * rate)


def read_window(f: sf.SoundFile, start: int, frames: int) -> np.ndarray:
    """Mono float32 frames [start, start + frames) of an open file, seeking when it can."""
    if start and f.seekable():
        at = max(0, start - preroll_frames(f.format, f.samplerate))
        quiet = filtered_c_stderr() if at and f.format == "MP3" else contextlib.nullcontext()
        try:
            with quiet:
                f.seek(at)
                x = f.read(start - at + frames, dtype="float32", always_2d=True)
            return to_mono(x)[start - at :]
        except (sf.LibsndfileError, RuntimeError):
            f.seek(0)  # a broken seek table: decode from the start instead
    return to_mono(f.read(start + frames, dtype="float32", always_2d=True))[start:]


def decode_whole(data: bytes, *, target_rate: int = TARGET_RATE, quality: str = "HQ") -> np.ndarray:
    """The whole recording as mono float32 at target_rate (for caches that crop later)."""
    with sf.SoundFile(io.BytesIO(data)) as f:
        mono = to_mono(f.read(dtype="float32", always_2d=True))
        rate = f.samplerate
    return resample(mono, rate, target_rate, quality)


def decode_clip(
    data: bytes,
    *,
    mode: CropMode = "random",
    u: float = 0.0,
    seconds: float = CLIP_SECONDS,
    target_rate: int = TARGET_RATE,
    quality: str = "HQ",
) -> Clip:
    """Decode a seconds-long mono window of encoded audio at target_rate.

    mode "random": the window starts at fraction u in [0, 1) of the admissible starts (training);
    "onset": it starts ONSET_LEAD_S before the first sample above 1 % of the peak, clamped at 0
    (evaluation); "start": at 0. Shorter clips are zero padded at the end.
    """
    if mode not in ("random", "onset", "start"):
        raise ValueError(f"mode must be random, onset or start, not {mode!r}")
    n_out = round(seconds * target_rate)
    with sf.SoundFile(io.BytesIO(data)) as f:
        rate, channels, frames = f.samplerate, f.channels, f.frames
        window = source_window(rate, seconds)
        if mode == "onset":
            mono = to_mono(f.read(dtype="float32", always_2d=True))
            frames = mono.shape[0]
            start = max(0, onset_index(mono) - round(ONSET_LEAD_S * rate))
            mono = mono[start : start + window]
        else:
            span = max(0, frames - window)
            start = min(span, int(u * (span + 1))) if mode == "random" else 0
            mono = read_window(f, start, window)
    out = resample(mono, rate, target_rate, quality)
    valid = min(n_out, out.shape[0])
    return Clip(fit_length(out, n_out), valid, start / rate, rate, channels, frames)
