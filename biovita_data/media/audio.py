"""Audio: verify by decoding every frame; keep what libsndfile reads, else FLAC; cut long ones.

With `fingerprints`, each stored file also gets its content fingerprint (media/fingerprint.py)
from the PCM this verifying decode produces anyway: dedup then decodes nothing again."""

from __future__ import annotations

import io
import math
import re
from itertools import pairwise

import av
import numpy as np
import soundfile as sf

from biovita_data.core.cstderr import filtered_c_stderr
from biovita_data.core.layout import KEPT_AUDIO_FORMATS
from biovita_data.core.pcm import open_sound
from biovita_data.media.fingerprint import DECODE_BLOCK, AudioPrinter, audio_fingerprint, packed
from biovita_data.media.records import ItemFailure, StoredFile

# A recording none of whose samples reaches -60 dBFS carries no sound: a failure (`silent`).
SILENCE_PEAK = 10 ** (-60 / 20)
PEAK_STEP = 1 << 17  # frames the silence check reads at a time (most recordings: just the first)
# Formats whose header states the exact frame count: fewer decoded frames means a broken file.
_EXACT_LENGTH = frozenset({"flac", "wav"})
_HIGH_RES = frozenset({"PCM_24", "PCM_32", "FLOAT", "DOUBLE"})  # stored as 24-bit FLAC
_FLAC_MAX_CHANNELS = 8
_WAV_DATA = re.compile(r"^data : (\d+) \(should be (\d+)\)", re.MULTILINE)


def store_audio(
    data: bytes, segment_seconds: float, fingerprints: bool = False
) -> list[StoredFile]:
    """The files to store for one downloaded recording (one, or its segments); ItemFailure."""
    with filtered_c_stderr():  # libmpg123's complaints about broken frames: counted, not shown
        try:
            snd = open_sound(data)
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
            samples, rate, subtype = _decode_av(data)
            return _as_flac(samples, rate, subtype, segment_seconds, fingerprints)
        try:
            return _store_libsndfile(snd, data, segment_seconds, fingerprints)
        except sf.LibsndfileError as exc:  # a decode error part-way (lost sync, bad frame, ...)
            raise ItemFailure("undecodable", f"libsndfile: {exc}") from None


def _store_libsndfile(
    snd: sf.SoundFile, data: bytes, segment_seconds: float, fingerprints: bool
) -> list[StoredFile]:
    with snd:
        fmt = snd.format.lower() if snd.format.lower() in KEPT_AUDIO_FORMATS else None
        rate, channels, declared = snd.samplerate, snd.channels, snd.frames
        known = 0 < declared < 2**40  # libsndfile's sentinel for "unknown" is huge
        if rate <= 0 or channels <= 0:
            raise ItemFailure("undecodable", f"bad header: {rate} Hz, {channels} channels")
        if fmt == "wav":
            _check_wav_data(snd.extra_info)
        subtype = "PCM_24" if snd.subtype in _HIGH_RES else "PCM_16"
        limit = round(segment_seconds * rate)
        if fmt is None and not known:  # read by libsndfile, yet not a kept format: FLAC
            samples = _read_all(snd)
            return _as_flac(samples, rate, subtype, segment_seconds, fingerprints)
        if fmt is None or (known and declared > limit):
            return _segments_streamed(snd, declared, fmt, subtype, segment_seconds, fingerprints)
        printer = AudioPrinter(rate, max_frames=limit) if fingerprints else None
        frames, peak = _scan(snd, printer)
    _check_length(frames, declared if known else 0, fmt)
    if frames > limit:  # the header understated the length: decode again, cutting
        with open_sound(data) as snd:
            return _segments_streamed(snd, frames, fmt, subtype, segment_seconds, fingerprints)
    _check_sound(peak)
    return [
        StoredFile(
            data,
            fmt,
            transcoded=False,
            offset_s=0.0,
            duration_s=frames / rate,
            sample_rate=rate,
            channels=channels,
            fingerprint=packed(printer.finish) if printer else None,
        )
    ]


def _scan(snd: sf.SoundFile, printer: AudioPrinter | None = None) -> tuple[int, float]:
    """Decode every frame (float32, native rate, one reused buffer of DECODE_BLOCK frames):
    frame count and peak (`_peak`); each block also fed to `printer` when one is given."""
    buf = np.empty((DECODE_BLOCK, snd.channels), np.float32)  # the reads dedup's decode makes
    frames, peak = 0, 0.0
    while True:
        block = snd.read(dtype="float32", always_2d=True, out=buf)
        if not len(block):
            return frames, peak
        frames += len(block)
        peak = _peak(block, peak)
        if printer is not None:
            printer.add(block)


def _peak(block: np.ndarray, peak: float) -> float:
    """The running peak magnitude after `block`, read PEAK_STEP frames at a time and only until
    it reaches SILENCE_PEAK (all the silence check asks). A step with NaN samples adds nothing:
    a recording that is NaN throughout fails as silent."""
    for a in range(0, len(block), PEAK_STEP):
        if peak >= SILENCE_PEAK:
            break
        step = block[a : a + PEAK_STEP]
        peak = max(peak, float(step.max()), -float(step.min()))
    return peak


def _read_all(snd: sf.SoundFile) -> np.ndarray:
    samples = snd.read(dtype="float32", always_2d=True)
    if not len(samples):
        raise ItemFailure("undecodable", "no audio frames")
    return samples


def _check_length(frames: int, declared: int, fmt: str | None) -> None:
    if frames <= 0:
        raise ItemFailure("undecodable", "no audio frames")
    if fmt in _EXACT_LENGTH and declared and frames < declared:
        raise ItemFailure("undecodable", f"decoded {frames} of {declared} frames (truncated)")


def _check_wav_data(log: str) -> None:
    """A WAV whose data chunk states more bytes than the file holds was cut short.

    libsndfile then quietly reads what is there; its open log says `data : N (should be M)`.
    Streaming recorders leave 0 or 0xFFFFFFFF there: those are not truncations.
    """
    m = _WAV_DATA.search(log)
    if m and 0 < int(m[1]) < 0xFFFFFF00 and int(m[2]) < int(m[1]):
        raise ItemFailure("undecodable", f"WAV data chunk of {m[1]} bytes holds {m[2]} (truncated)")


def _check_sound(peak: float) -> None:
    if not peak >= SILENCE_PEAK:  # also catches NaN
        raise ItemFailure("silent", f"peak {peak:.2e} is below -60 dBFS everywhere")


def _decode_av(data: bytes) -> tuple[np.ndarray, int, str]:
    """What libsndfile cannot read (M4A/AAC, ...) through FFmpeg: (frames, channels) float32."""
    chunks: list[np.ndarray] = []
    try:
        with av.open(io.BytesIO(data), metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise ItemFailure("undecodable", f"no audio stream ({container.format.name})")
            stream = container.streams.audio[0]
            ctx = stream.codec_context
            high = ctx.format is not None and ctx.format.bytes > 2 and ctx.codec.name in (
                "flac", "alac", "wavpack", "pcm_s24le", "pcm_s32le", "pcm_f32le",
            )  # fmt: skip
            rate = ctx.sample_rate
            resampler = av.AudioResampler(format="flt")  # packed float32; same rate and layout
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1, len(out.layout.channels)))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1, len(out.layout.channels)))
    except ItemFailure:
        raise
    except (av.error.FFmpegError, ValueError, EOFError) as exc:
        raise ItemFailure("undecodable", f"FFmpeg: {exc}") from None
    if not chunks or not rate:
        raise ItemFailure("undecodable", "no audio frames")
    return np.concatenate(chunks), int(rate), "PCM_24" if high else "PCM_16"


def _bounds(frames: int, rate: int, segment_seconds: float) -> list[int]:
    """Equal segments of at most segment_seconds: start frames plus the end."""
    n = max(1, math.ceil(frames / round(segment_seconds * rate)))
    return [round(k * frames / n) for k in range(n + 1)]


def _as_flac(
    samples: np.ndarray, rate: int, subtype: str, segment_seconds: float, fingerprints: bool
) -> list[StoredFile]:
    """Decoded samples stored as FLAC: one file, or equal segments when too long."""
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    _check_sound(peak)
    cuts = _bounds(len(samples), rate, segment_seconds)
    return [
        _flac_file(samples[a:b], rate, subtype, a / rate, fingerprints) for a, b in pairwise(cuts)
    ]


def _segments_streamed(
    snd: sf.SoundFile,
    declared: int,
    fmt: str | None,
    subtype: str,
    segment_seconds: float,
    fingerprints: bool,
) -> list[StoredFile]:
    """Cut while decoding (never all in memory) into FLAC files; the last one takes the rest."""
    rate = snd.samplerate
    cuts = _bounds(declared, rate, segment_seconds)
    files: list[StoredFile] = []
    peak, frames = 0.0, 0
    for k, (a, b) in enumerate(pairwise(cuts)):
        last = k == len(cuts) - 2
        block = snd.read(-1 if last else b - a, dtype="float32", always_2d=True)
        if not len(block):
            break
        peak = _peak(block, peak)
        files.append(_flac_file(block, rate, subtype, frames / rate, fingerprints))
        frames += len(block)
    _check_length(frames, declared, fmt)
    _check_sound(peak)
    return files


def _flac_file(
    samples: np.ndarray, rate: int, subtype: str, offset_s: float, fingerprints: bool
) -> StoredFile:
    channels = samples.shape[1]
    if channels > _FLAC_MAX_CHANNELS:
        raise ItemFailure("undecodable", f"{channels} channels: FLAC stores at most 8")
    top = 1.0 - (2.0**-23 if subtype == "PCM_24" else 2.0**-15)
    clipped = np.clip(samples, -1.0, top)  # libsndfile wraps, not clips, out-of-range floats
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", rate, channels, subtype=subtype, format="FLAC") as out:
        for start in range(0, len(clipped), DECODE_BLOCK):
            out.write(clipped[start : start + DECODE_BLOCK])
    print_ = None
    if fingerprints:  # of what decoding the FLAC gives back: libsndfile scales by 2^15 / 2^23
        scale = np.float32(2.0**23 if subtype == "PCM_24" else 2.0**15)
        print_ = packed(audio_fingerprint, np.rint(clipped * scale) / scale, rate)
    return StoredFile(
        buf.getvalue(),
        "flac",
        transcoded=True,
        offset_s=offset_s,
        duration_s=len(samples) / rate,
        sample_rate=rate,
        channels=channels,
        fingerprint=print_,
    )
