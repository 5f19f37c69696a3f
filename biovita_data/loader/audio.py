"""Audio front end of the loader: decode a 10 s window with soundfile, mix to mono, resample (soxr).

The crop and short-clip rules live here, once: the window's start (`window_start`: random,
onset-aligned or at 0) and how a clip shorter than the window is filled (`fill_short`, the
`short_clip` setting: `pad` with silence, as the official BioVITA extractor does; `repeat` the
clip until the window is full; `repeatpad`, CLAP's: whole repeats, then silence). The loader, the
model's front end (`biovita_model.audio_frontend.fit_length`) and its embeddings all call them.

Only the frames of the window are read when the format can seek (WAV, FLAC, Ogg, MP3 all can in
libsndfile), so a random crop of a 5-minute recording costs about as much as a 10 s one. The
evaluation crop (docs/design.md, "Loader") needs the clip's peak, so it decodes the whole clip.
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
ShortClip = Literal["pad", "repeat", "repeatpad"]
SHORT_CLIPS: tuple[str, ...] = ("pad", "repeat", "repeatpad")


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


def onset_start(
    x: np.ndarray,
    rate: int,
    *,
    threshold: float = ONSET_THRESHOLD,
    lead_s: float = ONSET_LEAD_S,
) -> int:
    """The evaluation crop's start: lead_s before the first sample above threshold x the peak
    (at least 0). The window is not pulled back to fit a late onset: what is left is short."""
    return max(0, onset_index(x, threshold) - round(lead_s * rate))


def window_start(
    frames: int,
    window: int,
    mode: CropMode,
    *,
    u: float = 0.0,
    x: np.ndarray | None = None,
    rate: int = TARGET_RATE,
) -> int:
    """Where a `window`-long crop of `frames` starts: "random" at fraction u in [0, 1) of the
    admissible starts, "onset" (needs the signal x at `rate`) by `onset_start`, "start" at 0."""
    if mode == "random":
        span = max(0, frames - window)
        return min(span, int(u * (span + 1)))
    if mode == "onset":
        if x is None:
            raise ValueError("the onset crop needs the signal")
        return onset_start(x, rate)
    if mode == "start":
        return 0
    raise ValueError(f"mode must be random, onset or start, not {mode!r}")


def fill_short(x: np.ndarray, n: int, short_clip: str = "pad") -> np.ndarray:
    """A clip of at most n samples filled to exactly n: "pad" with zeros at the end, "repeat"
    (the clip again and again, cut at n) or "repeatpad" (whole repeats, then zeros)."""
    k = x.shape[0]
    if short_clip not in SHORT_CLIPS:
        raise ValueError(f"short_clip must be one of {SHORT_CLIPS}, not {short_clip!r}")
    if k >= n:
        return np.ascontiguousarray(x[:n], dtype=np.float32)
    if k == 0 or short_clip == "pad":
        return fit_length(x, n)
    if short_clip == "repeat":
        return np.tile(x, n // k + 1)[:n].astype(np.float32, copy=False)
    return fit_length(np.tile(x, n // k), n)


def fit_clip(
    x: np.ndarray,
    n: int,
    *,
    mode: CropMode = "start",
    u: float = 0.0,
    rate: int = TARGET_RATE,
    short_clip: str = "pad",
) -> tuple[np.ndarray, int, int]:
    """A mono signal cropped (`window_start`) and filled (`fill_short`) to exactly n samples:
    (samples, start, samples taken from the signal)."""
    start = window_start(x.shape[0], n, mode, u=u, x=x, rate=rate)
    kept = x[start : start + n]
    return fill_short(kept, n, short_clip), start, int(kept.shape[0])


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
    short_clip: ShortClip = "pad",
) -> Clip:
    """Decode a seconds-long mono window of encoded audio at target_rate.

    mode "random": the window starts at fraction u in [0, 1) of the admissible starts (training);
    "onset": it starts ONSET_LEAD_S before the first sample above 1 % of the peak, clamped at 0
    (evaluation); "start": at 0 (`window_start`). A clip shorter than the window is filled by
    `short_clip` (`fill_short`; default: zeros at the end); `valid` counts its own samples.
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
            start = window_start(frames, window, mode, x=mono, rate=rate)
            mono = mono[start : start + window]
        else:
            start = window_start(frames, window, mode, u=u)
            mono = read_window(f, start, window)
    out = resample(mono, rate, target_rate, quality)
    valid = min(n_out, out.shape[0])
    return Clip(fill_short(out, n_out, short_clip), valid, start / rate, rate, channels, frames)
