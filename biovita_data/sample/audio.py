"""Synthetic animal calls of the sample world: a species' CallParams rendered to encoded audio."""

from __future__ import annotations

import io
import math
import zlib

import av
import numpy as np
import soundfile as sf
from av.codec.context import Flags

from biovita_data.sample.taxonomy import CallParams

FORMATS = ("mp3", "wav", "flac", "ogg", "m4a")
# soundfile (libsndfile) major format and subtype of each format it writes.
_SF_WRITE = {
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "ogg": ("OGG", "VORBIS"),
}
_SF_NAMES = {"MP3": "mp3", "WAV": "wav", "FLAC": "flac", "OGG": "ogg"}

PEAK = 0.9  # no sample of a synthesized recording exceeds this
SILENT_FLOOR = 1e-5  # RMS of the noise floor of a deliberately silent recording
NYQUIST_GUARD = 0.45  # the band is clipped to this fraction of the sample rate
_RAMP_S = 0.012  # syllable attack/release (raised cosine), at most a quarter of the syllable
_NOISE_CORNER_HZ = 150.0  # background noise is pink above this frequency, flat below
_AAC_BITRATE_PER_CHANNEL = 96_000
_WRITE_BLOCK = 1 << 16  # frames per soundfile write
_OGG_SERIAL = 0x62696F76  # fixed Ogg stream serial ("biov"); libsndfile draws a random one
_BITREV = bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))


def _band(call: CallParams, sample_rate: int) -> tuple[float, float]:
    """The call's band, its top clipped below Nyquist; a clipped band keeps some width."""
    hi = min(call.f_high, NYQUIST_GUARD * sample_rate)
    if hi == call.f_high:
        return call.f_low, hi
    return min(call.f_low, max(0.8 * hi, 0.85 * call.f_low), 0.95 * hi), hi


def _schedule(
    call: CallParams, duration_s: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Onsets and lengths (s) of the syllables: phrases of call.syllables, with longer pauses."""
    start = rng.uniform(0.0, 1.0) * min(1.0, 0.5 * duration_s)  # at most half a short clip
    n = int(duration_s / (0.9 * call.syllable_s + 0.8 * call.gap_s)) + 1
    lengths = call.syllable_s * rng.uniform(0.9, 1.1, n)
    gaps = call.gap_s * rng.uniform(0.8, 1.2, n)
    pauses = 2.0 * call.gap_s + rng.uniform(0.5, 1.5, n)
    phrase_end = np.arange(1, n + 1) % call.syllables == 0
    after = np.where(phrase_end, pauses, gaps)
    onsets = start + np.concatenate(([0.0], np.cumsum(lengths + after)[:-1]))
    keep = onsets < duration_s
    return onsets[keep], lengths[keep]


def _fast_len(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n: an FFT length pocketfft handles quickly."""
    best = 1 << (n - 1).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            best = min(best, p35 << (-(-n // p35) - 1).bit_length())
            p35 *= 3
        p5 *= 5
    return best


def _cycles(freq: np.ndarray, sample_rate: int) -> np.ndarray:
    """Running cycle count of an instantaneous frequency (Hz per sample), accumulated in float64."""
    return np.cumsum(freq, dtype=np.float64) / sample_rate


def _call_track(
    call: CallParams, n_frames: int, sample_rate: int, rng: np.random.Generator
) -> np.ndarray:
    """The mono call (float32, peak 1) over n_frames samples, zero between syllables."""
    lo, hi = _band(call, sample_rate)
    onsets, lengths = _schedule(call, n_frames / sample_rate, rng)
    pitch = rng.uniform(0.98, 1.02)  # the recording's pitch; syllables add +-1%: within +-3%
    jitter = (pitch * rng.uniform(0.99, 1.01, len(onsets))).astype(np.float32)
    phase0 = rng.uniform(0.0, 2 * np.pi, len(onsets)).astype(np.float32)

    # Every active sample as (syllable, sample within the syllable), then its time and pitch.
    first = np.round(onsets * sample_rate).astype(np.int64)
    count = np.minimum(np.round(lengths * sample_rate).astype(np.int64), n_frames - first)
    syl = np.repeat(np.arange(len(first)), count)
    pos = np.arange(len(syl)) - np.repeat(np.cumsum(count) - count, count)
    tau = pos.astype(np.float32) / np.float32(sample_rate)
    dur = lengths.astype(np.float32)[syl]
    jit = jitter[syl]
    rate = call.mod_rate
    fc = math.sqrt(lo * hi)

    def tone(freq: np.ndarray) -> np.ndarray:
        cycles = (_cycles(freq, sample_rate) % 1.0).astype(np.float32)
        return np.sin(2 * np.pi * cycles + phase0[syl])

    ramp = np.minimum(_RAMP_S, 0.25 * dur)
    env = np.sin(0.5 * np.pi * np.clip(np.minimum(tau, dur - tau) / ramp, 0.0, 1.0)) ** 2
    notes = np.sin(np.pi * rate * tau) ** 2  # one note per 1/mod_rate, silent between notes
    match call.kind:
        case "whistle":  # slow FM (mod_rate / 2) around the band centre, kept inside the band
            depth = min(0.12, 0.9 * (hi - lo) / (hi + lo))
            wave = tone(fc * jit * (1 + depth * np.sin(np.pi * rate * tau + phase0[syl])))
        case "trill":
            wave = notes * tone(fc * jit * (1 + 0.04 * np.cos(2 * np.pi * rate * tau)))
        case "buzz":  # band-passed sawtooth (wingbeat f0 = 12 * mod_rate) plus noise
            saw = 2 * (_cycles(12 * rate * jit, sample_rate) % 1.0).astype(np.float32) - 1
            raw = 0.6 * saw + 0.4 * rng.standard_normal(len(saw), np.float32)
            n_fft = _fast_len(len(raw))
            spec = np.fft.rfft(raw, n_fft)
            freqs = np.fft.rfftfreq(n_fft, 1 / sample_rate)
            spec[(freqs < lo * pitch) | (freqs > hi * pitch)] = 0
            wave = np.fft.irfft(spec, n_fft)[: len(raw)] * (0.6 + 0.4 * notes)
        case "pulse_train":  # a decaying click at the band centre every 1/mod_rate
            u = tau % np.float32(1 / rate)
            wave = np.exp(u / np.float32(-0.003)) * np.sin(2 * np.pi * fc * jit * u)
        case "croak":  # harmonic stack (amplitude 1/k) on f0 just above f_low, gliding down
            f0 = lo * 1.05 * jit * (1 - 0.04 * tau / dur)
            phase = 2 * np.pi * (_cycles(f0, sample_rate) % 1.0).astype(np.float32)
            wave = np.zeros_like(phase)
            for k in range(1, max(1, min(8, int(NYQUIST_GUARD * sample_rate / (lo * 1.1)))) + 1):
                wave += np.sin(k * phase) / k
            wave *= 0.4 + 0.6 * notes
        case "sweep":  # exponential f_low -> f_high over the syllable, slight wobble
            wobble = 1 + 0.02 * np.sin(2 * np.pi * rate * tau)
            wave = tone(lo * (hi / lo) ** (tau / dur) * jit * wobble)
        case "chirp":  # a short linear up-chirp across the band every 1/mod_rate
            frac = np.clip((tau % np.float32(1 / rate)) / min(0.04, 0.5 / rate), 0.0, 1.0)
            wave = np.sin(np.pi * frac) ** 2 * tone((lo + (hi - lo) * frac) * jit)
        case _:
            raise ValueError(f"unknown call kind {call.kind!r}")

    track = np.zeros(n_frames, np.float32)
    track[np.repeat(first, count) + pos] = wave * env
    peak = np.abs(track).max()
    return track / peak if peak > 0 else track


def _background(
    n_frames: int, channels: int, sample_rate: int, rng: np.random.Generator
) -> np.ndarray:
    """Unit-RMS pink-ish noise (1/f above _NOISE_CORNER_HZ, flat below), shape (channels, n)."""
    n_fft = _fast_len(n_frames)
    n_bins = n_fft // 2 + 1
    shape = 1 / np.sqrt(np.maximum(np.fft.rfftfreq(n_fft, 1 / sample_rate), _NOISE_CORNER_HZ))
    shape[0] = 0
    spec = rng.standard_normal((channels, 2 * n_bins), np.float32).view(np.complex64)
    spec *= shape.astype(np.float32)
    noise = np.fft.irfft(spec, n_fft)[:, :n_frames]
    rms = np.sqrt(np.einsum("ij,ij->i", noise, noise) / n_frames)
    return noise / np.maximum(rms, 1e-30)[:, None]


def synthesize(
    call: CallParams,
    *,
    duration_s: float,
    sample_rate: int,
    channels: int,
    seed: int,
    silent: bool = False,
) -> np.ndarray:
    """One seeded recording of the call: float32 (round(duration_s*sample_rate), channels)."""
    n_frames = round(duration_s * sample_rate)
    if n_frames < 1 or channels < 1:
        raise ValueError(f"need a positive length and channel count, got {n_frames}, {channels}")
    rng = np.random.default_rng(seed)
    if silent:
        return np.ascontiguousarray(
            (SILENT_FLOOR * _background(n_frames, channels, sample_rate, rng)).T
        )
    track = _call_track(call, n_frames, sample_rate, rng)
    gain = (rng.uniform(0.2, 0.9) * rng.uniform(0.85, 1.0, channels)).astype(np.float32)
    delay = rng.integers(0, round(0.0006 * sample_rate) + 1, channels)
    delay[0] = 0  # the first channel is the reference; the others arrive up to 0.6 ms later
    snr_db = rng.uniform(10.0, 30.0)
    out = _background(n_frames, channels, sample_rate, rng)
    out *= (gain * math.sqrt(np.dot(track, track) / n_frames) / 10 ** (snr_db / 20))[:, None]
    for c in range(channels):
        out[c, delay[c] :] += float(gain[c]) * track[: n_frames - delay[c]]
    peak = float(np.abs(out).max())
    if peak > PEAK:
        out *= PEAK / peak
        np.clip(out, -PEAK, PEAK, out=out)  # float32 rounding must not step past PEAK
    return np.ascontiguousarray(out.T)


def _ogg_crc(page: bytes) -> int:
    """Ogg's page CRC-32 (poly 0x04C11DB7, MSB first, no reflection/xor), via zlib's CRC-32."""
    raw = zlib.crc32(page.translate(_BITREV), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int(f"{raw:032b}"[::-1], 2)


def _fix_ogg_serial(data: bytes) -> bytes:
    """Set every Ogg page's stream serial to a constant (and redo its CRC): deterministic bytes."""
    out = bytearray(data)
    pos = 0
    while pos < len(out):
        if out[pos : pos + 4] != b"OggS":
            raise ValueError(f"not an Ogg page at byte {pos}")
        n_segments = out[pos + 26]
        end = pos + 27 + n_segments + sum(out[pos + 27 : pos + 27 + n_segments])
        out[pos + 14 : pos + 18] = _OGG_SERIAL.to_bytes(4, "little")
        out[pos + 22 : pos + 26] = bytes(4)
        out[pos + 22 : pos + 26] = _ogg_crc(bytes(out[pos:end])).to_bytes(4, "little")
        pos = end
    return bytes(out)


def _encode_m4a(samples: np.ndarray, sample_rate: int) -> bytes:
    """AAC in an MP4 (iPod/m4a) container through PyAV, bit-exact (no version strings)."""
    layout = "mono" if samples.shape[1] == 1 else "stereo"
    buf = io.BytesIO()
    with av.open(buf, "w", format="ipod", options={"fflags": "+bitexact"}) as container:
        # The "fast" coder halves encode time; its quality is ample for synthetic calls.
        stream = container.add_stream(
            "aac", rate=sample_rate, layout=layout, options={"aac_coder": "fast"}
        )
        stream.bit_rate = _AAC_BITRATE_PER_CHANNEL * samples.shape[1]
        stream.codec_context.flags |= Flags.bitexact
        # PyAV cuts the one planar-float frame into the encoder's frame_size chunks.
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples.T, np.float32), format="fltp", layout=layout
        )
        frame.sample_rate = sample_rate
        frame.pts = 0
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buf.getvalue()


def encode(samples: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    """Encode (n, channels) float samples as mp3, wav, flac, ogg (Vorbis) or m4a (AAC) bytes."""
    if fmt == "m4a":
        if samples.shape[1] > 2:
            raise ValueError(f"m4a output is mono or stereo, got {samples.shape[1]} channels")
        return _encode_m4a(samples, sample_rate)
    if fmt not in _SF_WRITE:
        raise ValueError(f"unknown audio format {fmt!r}; expected one of {FORMATS}")
    major, subtype = _SF_WRITE[fmt]
    buf = io.BytesIO()
    with sf.SoundFile(
        buf, "w", sample_rate, samples.shape[1], subtype=subtype, format=major
    ) as out:
        # In blocks: one huge write overflows the stack inside libvorbis (an alloca per write).
        for start in range(0, len(samples), _WRITE_BLOCK):
            out.write(samples[start : start + _WRITE_BLOCK])
    return _fix_ogg_serial(buf.getvalue()) if fmt == "ogg" else buf.getvalue()


def render_audio(
    call: CallParams,
    *,
    fmt: str,
    sample_rate: int,
    channels: int,
    duration_s: float,
    seed: int,
    silent: bool = False,
) -> bytes:
    """Synthesize one seeded recording of the call and encode it as fmt."""
    samples = synthesize(
        call,
        duration_s=duration_s,
        sample_rate=sample_rate,
        channels=channels,
        seed=seed,
        silent=silent,
    )
    return encode(samples, sample_rate, fmt)


def decode_info(data: bytes) -> dict:
    """sample_rate, channels, duration_s and format (mp3/wav/flac/ogg/m4a) of encoded audio."""
    try:
        info = sf.info(io.BytesIO(data))
    except sf.LibsndfileError:
        with av.open(io.BytesIO(data)) as container:
            stream = container.streams.audio[0]
            if stream.duration is not None:
                duration_s = float(stream.duration * stream.time_base)
            else:
                duration_s = container.duration / av.time_base
            names = container.format.name.split(",")
            return {
                "sample_rate": stream.codec_context.sample_rate,
                "channels": stream.codec_context.channels,
                "duration_s": duration_s,
                "format": "m4a" if "m4a" in names else names[0],
            }
    return {
        "sample_rate": info.samplerate,
        "channels": info.channels,
        "duration_s": info.frames / info.samplerate,
        "format": _SF_NAMES.get(info.format, info.format.lower()),
    }
