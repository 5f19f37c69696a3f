"""Audio front end of the loader: decode a 10 s window with soundfile, mix to mono, resample (soxr).

The crop and short-clip rules live here, once: the window's start (`window_start`: random,
onset-aligned or at 0) and how a clip shorter than the window is filled (`fill_short`, the
`short_clip` setting: `pad` with silence, as the official BioVITA extractor does; `repeat` the
clip until the window is full; `repeatpad`, CLAP's: whole repeats, then silence). The loader, the
model's front end (`biovita_model.audio_frontend.fit_length`) and its embeddings all call them.

Only the frames of the window are read when the format can seek (WAV, FLAC, Ogg, MP3 all can in
libsndfile), so a random crop of a 5-minute recording costs about as much as a 10 s one. The
evaluation crop (docs/design.md, "Loader") needs the clip's peak, so it decodes the whole clip.

Two decoders crop: soundfile (libsndfile) + soxr, and FFmpeg through torchcodec (seek, decode,
downmix and resample with FFmpeg's swresample in one call). `decode_clip(backend="auto")` picks
per format from `FFMPEG_FORMATS`, set by measurement (benchmarks/loader.py, `decoders`); both
place the window by libsndfile's frame count and give the same crop within resampler tolerance
(tests/test_fast_loader_crop.py). Without torchcodec (or FFmpeg's libraries) soundfile does all.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import soundfile as sf

from biovita_data.core.cstderr import filtered_c_stderr
from biovita_data.core.pcm import resample, to_mono

TARGET_RATE = 48_000
CLIP_SECONDS = 10.0
ONSET_THRESHOLD = 0.01  # a fraction of the clip's peak |amplitude|
ONSET_LEAD_S = 0.2  # the evaluation crop starts this long before the onset

# After a seek, an MP3 decoder needs the frames before the target: Layer III frames borrow bits
# from earlier ones (the bit reservoir), and mpg123 outputs silence until it has them. Measured
# with libsndfile 1.2: up to 16 frames (9,216 samples) at ~10 kbit/s; 0.5 s covers every rate.
MP3_PREROLL_S = 0.5
MP3_PREROLL_MIN = 9216

# Formats (libsndfile's names) that the "auto" backend crops through FFmpeg, by measurement
# (benchmarks/loader.py, `decoders`: CPU ms per 10 s crop at 48 kHz of 44.1 kHz rows with real
# Xeno-canto lengths, 2-core shared VM, issue 27): CBR MP3 18.7 (FFmpeg) vs 20.3 (soundfile +
# soxr), 8-9 % less in every run. FLAC: 17.3 vs 18.3, 4-7 % less over four runs, yet it stays on
# soundfile for now: tests/test_loader.py checks that a random crop reads only its window by
# counting libsndfile's reads, which an FFmpeg crop does not make. A VBR MP3 stays on soundfile
# too: FFmpeg seeks it through its TOC, which can miss by a second. Other formats: not measured.
FFMPEG_FORMATS: frozenset[str] = frozenset({"MP3"})

Encoded = bytes | bytearray | memoryview  # encoded audio: bytes, or a view (RowReader.media_view)
CropMode = Literal["random", "onset", "start"]
Backend = Literal["auto", "soundfile", "ffmpeg"]
BACKENDS: tuple[str, ...] = ("auto", "soundfile", "ffmpeg")
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


def fill_short(
    x: np.ndarray, n: int, short_clip: str = "pad", *, out: np.ndarray | None = None
) -> np.ndarray:
    """A clip of at most n samples filled to exactly n: "pad" with zeros at the end, "repeat"
    (the clip again and again, cut at n) or "repeatpad" (whole repeats, then zeros); written into
    `out` (float32, n samples) when given."""
    k = x.shape[0]
    if short_clip not in SHORT_CLIPS:
        raise ValueError(f"short_clip must be one of {SHORT_CLIPS}, not {short_clip!r}")
    if out is not None:
        return _fill_into(x[:n], out, short_clip)
    if k >= n:
        return np.ascontiguousarray(x[:n], dtype=np.float32)
    if k == 0 or short_clip == "pad":
        return fit_length(x, n)
    if short_clip == "repeat":
        return np.tile(x, n // k + 1)[:n].astype(np.float32, copy=False)
    return fit_length(np.tile(x, n // k), n)


def _fill_into(x: np.ndarray, out: np.ndarray, short_clip: str) -> np.ndarray:
    """fill_short of x (at most len(out) samples) written into out, without a temporary."""
    n, k = out.shape[0], x.shape[0]
    out[:k] = x
    if k == 0 or k == n or short_clip == "pad":
        out[k:] = 0.0
        return out
    whole = n // k if short_clip == "repeatpad" else -(-n // k)
    for j in range(1, whole):
        out[j * k : min(n, (j + 1) * k)] = x[: min(k, n - j * k)]
    out[whole * k :] = 0.0
    return out


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


_FFMPEG: list = []  # [AudioDecoder class] once imported, [None] when torchcodec cannot load


def ffmpeg_decoder() -> Any:
    """torchcodec's AudioDecoder, or None when torchcodec or FFmpeg's libraries are missing."""
    if not _FFMPEG:
        try:
            from torchcodec.decoders import AudioDecoder as decoder_class
        except Exception:  # not installed, or no FFmpeg libraries it can load
            decoder_class = None
        _FFMPEG.append(decoder_class)
    return _FFMPEG[0]


def mp3_is_cbr(data: Encoded) -> bool:
    """Whether an MP3 opens with LAME's "Info" tag, which marks a constant bitrate stream (whose
    byte offsets FFmpeg turns into exact times; a VBR stream's TOC seek can miss by a second)."""
    data = memoryview(data).cast("B")
    at = 0
    if data[:3] == b"ID3" and len(data) >= 10:  # skip an ID3v2 tag: 10 bytes + syncsafe size
        size = (data[6] & 0x7F) << 21 | (data[7] & 0x7F) << 14 | (data[8] & 0x7F) << 7
        at = 10 + (size | (data[9] & 0x7F)) + (10 if data[5] & 0x10 else 0)
    frame = bytes(data[at : at + 64])
    return len(frame) > 4 and frame[0] == 0xFF and frame[1] & 0xE0 == 0xE0 and b"Info" in frame


def crop_backend(file_format: str, backend: str = "auto", data: Encoded = b"") -> str:
    """The decoder that crops a file of libsndfile format `file_format`: "soundfile" or "ffmpeg".

    "auto": FFmpeg for FFMPEG_FORMATS (an MP3 only when it is CBR: `mp3_is_cbr` on `data`);
    "ffmpeg": FFmpeg for any format. Both fall back to soundfile without torchcodec."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
    if backend == "soundfile" or ffmpeg_decoder() is None:
        return "soundfile"
    fmt = file_format.upper()
    if backend == "ffmpeg":
        return "ffmpeg"
    if fmt not in FFMPEG_FORMATS or (fmt == "MP3" and not mp3_is_cbr(data)):
        return "soundfile"
    return "ffmpeg"


def open_encoded(data: Encoded) -> io.BytesIO | pa.BufferReader:
    """A seekable file over encoded audio, without copying it (a view is read in place)."""
    return io.BytesIO(data) if isinstance(data, bytes) else pa.BufferReader(pa.py_buffer(data))


def _ffmpeg_source(data: Encoded) -> Any:
    """What torchcodec decodes: the bytes, or a uint8 tensor over a view (no copy)."""
    if isinstance(data, bytes):
        return data
    import torch  # present with torchcodec

    with warnings.catch_warnings():  # read-only memory: the decoder only reads it
        warnings.filterwarnings("ignore", message=".*not writable", category=UserWarning)
        return torch.frombuffer(data, dtype=torch.uint8)


def read_window_ffmpeg(
    data: Encoded,
    start: int,
    frames: int,
    rate: int,
    channels: int,
    target_rate: int,
    file_format: str = "",
) -> np.ndarray:
    """Mono float32 at target_rate of source frames [start, start + frames), through FFmpeg:
    seek, decode, downmix and resample (swresample) in one call.

    FFmpeg's timeline keeps an MP3's encoder delay (the stream begins at that delay, where
    libsndfile's frame 0 is), so the window is shifted by the stream's begin time. An MP3 is
    decoded from `preroll_frames` earlier (FFmpeg does not refill the bit reservoir after a seek),
    rounded to a whole number of output samples, which are dropped. FFmpeg's mono downmix of
    stereo is (L + R) / sqrt(2): scaled to the mean, as `to_mono`."""
    decoder_class = ffmpeg_decoder()
    mono = channels <= 2
    dec = decoder_class(
        _ffmpeg_source(data), sample_rate=target_rate, num_channels=1 if mono else None
    )
    begin = float(dec.metadata.begin_stream_seconds_from_header or 0.0)
    step = rate // math.gcd(rate, target_rate)  # source frames per whole number of outputs
    pre = min(start, -(-preroll_frames(file_format, rate) // step) * step) // step * step
    t0 = begin + (start - pre) / rate
    x = dec.get_samples_played_in_range(t0, begin + (start + frames) / rate).data.numpy()
    x = x[:, pre * target_rate // rate :]
    if not mono:
        return to_mono(np.ascontiguousarray(x.T))
    out = x.reshape(-1)
    if channels == 2:
        out *= np.float32(math.sqrt(0.5))
    return out


def decode_whole(
    data: Encoded, *, target_rate: int = TARGET_RATE, quality: str = "HQ"
) -> np.ndarray:
    """The whole recording as mono float32 at target_rate (for caches that crop later)."""
    with sf.SoundFile(open_encoded(data)) as f:
        mono = to_mono(f.read(dtype="float32", always_2d=True))
        rate = f.samplerate
    return resample(mono, rate, target_rate, quality)


def decode_clip(
    data: Encoded,
    *,
    mode: CropMode = "random",
    u: float = 0.0,
    seconds: float = CLIP_SECONDS,
    target_rate: int = TARGET_RATE,
    quality: str = "HQ",
    short_clip: ShortClip = "pad",
    backend: Backend = "auto",
    out: np.ndarray | None = None,
) -> Clip:
    """Decode a seconds-long mono window of encoded audio at target_rate.

    mode "random": the window starts at fraction u in [0, 1) of the admissible starts (training);
    "onset": it starts ONSET_LEAD_S before the first sample above 1 % of the peak, clamped at 0
    (evaluation); "start": at 0 (`window_start`). A clip shorter than the window is filled by
    `short_clip` (`fill_short`; default: zeros at the end); `valid` counts its own samples.
    `backend` picks the decoder of a random or start crop (`crop_backend`; the onset crop decodes
    the whole clip with soundfile); an FFmpeg failure falls back to soundfile. `quality` is
    soxr's; FFmpeg resamples with swresample's default filter. `data` may be a view of the
    encoded bytes (decoded in place); given `out` (float32, seconds x target_rate samples), the
    clip is written there and Clip.samples is `out`.
    """
    if mode not in ("random", "onset", "start"):
        raise ValueError(f"mode must be random, onset or start, not {mode!r}")
    n_out = round(seconds * target_rate)
    if out is not None and (out.shape != (n_out,) or out.dtype != np.float32):
        raise ValueError(f"out must be float32 of {n_out} samples, not {out.dtype} {out.shape}")
    decoded: np.ndarray | None = None
    with sf.SoundFile(open_encoded(data)) as f:
        rate, channels, frames = f.samplerate, f.channels, f.frames
        window = source_window(rate, seconds)
        if mode == "onset":
            mono = to_mono(f.read(dtype="float32", always_2d=True))
            frames = mono.shape[0]
            start = window_start(frames, window, mode, x=mono, rate=rate)
            mono = mono[start : start + window]
        else:
            start = window_start(frames, window, mode, u=u)
            if crop_backend(f.format, backend, data) == "ffmpeg":
                try:
                    decoded = read_window_ffmpeg(
                        data, start, window, rate, channels, target_rate, f.format
                    )
                except Exception:  # FFmpeg cannot read what libsndfile opened: soundfile crops
                    decoded = None
            if decoded is None:
                mono = read_window(f, start, window)
            else:  # FFmpeg keeps an MP3's end padding, which libsndfile drops: cut it
                kept = min(window, max(0, frames - start))
                decoded = decoded[: round(kept * target_rate / rate)]
    if decoded is None:
        decoded = resample(mono, rate, target_rate, quality)
    valid = min(n_out, decoded.shape[0])
    samples = fill_short(decoded, n_out, short_clip, out=out)
    return Clip(samples, valid, start / rate, rate, channels, frames)
