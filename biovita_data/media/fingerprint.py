"""Content fingerprints of decoded media: exact hashes, audio landmarks, image perceptual hashes.

Audio: the decoded PCM mixed to mono and resampled to RATE (22,050 Hz: the band up to 11 kHz,
where the sample world's and most real bird, frog, bat-audible and insect calls lie; the lowest
common source rate) is hashed exactly (`exact`: SHA-256 of its 16-bit samples, whatever the
container), and reduced to landmarks: spectral peaks (local maxima of the log spectrogram,
gain-independent) paired with the next few peaks ahead of them; each pair's (f1, f2, dt) is a
27-bit hash kept with the anchor's frame. Two recordings are copies when many of their hashes
agree at one time offset (`match_landmarks`): robust to re-encoding, resampling, gain and
trimming, and specific, because a different recording of the same call (or the same noise
process) lines its peaks up at no single offset. Chromaprint, by contrast, folds 28-3,520 Hz
into 12 pitch classes and needs about 5 s (benchmarks/dedup.py compares them).

Images: `exact` hashes the decoded RGB pixels (SHA-256); the perceptual hash is PDQ (256 bits,
Meta's, the one TreeOfLife-200M used; `pdqhash`) of the whole photo and of its centre
(5 % off each border, so a lightly cropped copy still matches), compared by Hamming distance.

A medium that cannot be fingerprinted (too short, clipped, flat, tiny) gets `none` with the
reason; it is never matched by content (only by its exact hash, which stays valid).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from biovita_data.core import pcm

RATE = 22_050  # Hz: every recording is resampled to this before hashing
N_FFT = 1024  # 46 ms window, 21.5 Hz bins
HOP = 256  # 11.6 ms per frame
PEAK_FRAMES = 10  # a peak is the largest value within +-PEAK_FRAMES frames ...
PEAK_BINS = 12  # ... and +-PEAK_BINS bins
PEAK_FLOOR_DB = 10.0  # ... and this far above the recording's median level (gain-independent)
# pairs per anchor peak: the next FAN_OUT peaks in the target zone. 3, not 5: 40 % fewer
# landmarks (~95 per audio second), so the near search holds 40 % less and meets 64 % fewer
# chance agreements, with the same recall (benchmarks/dedup.py, README there)
FAN_OUT = 3
MAX_DT = 96  # target zone: up to 96 frames (1.1 s) ahead ...
MAX_DF = 192  # ... and within +-192 bins (4 kHz)
CHUNK = 256  # frames per step of the spectrogram and the peak search (cache-sized)
MIN_SECONDS = 1.0  # shorter recordings get no landmarks (their exact hash still counts)
MIN_LANDMARKS = 20  # fewer than this: no landmarks (too little structure to tell copies)
CLIP_LEVEL = 0.999  # samples at or above this |value| are clipped ...
CLIP_SHARE = 0.05  # ... and a recording with more than 5 % of them gets no landmarks
# frames per read of every decode that is fingerprinted (materialize's verifying decode, dedup's):
# at most 8 MB of stereo float32; 8x fewer calls and GIL round trips than 1 << 17
DECODE_BLOCK = 1 << 20
MIN_IMAGE_SIDE = 32  # px: smaller photos get no perceptual hash
PDQ_MIN_QUALITY = 30  # PDQ's own quality below which its hash is unreliable (flat images)
# PDQ of the photo scaled to this long side (area average): 2 ms instead of 5-11 ms a photo,
# copies <= 28 bits apart, other photos >= 90 (benchmarks/dedup.py; full size: 24 / 86)
PDQ_SIDE = 256
CENTRE_CUT = 0.05  # a second PDQ of the photo without 5 % of each border (cropped copies)

_AUDIO_TAG = b"BVA2"  # BVA1: FAN_OUT 5 (stored by older runs: decoded again)
_IMAGE_TAG = b"BVI1"


@dataclass
class Fingerprint:
    """A decoded medium's fingerprint: its exact hash, plus landmarks or a perceptual hash."""

    modality: str  # audio | image
    exact: bytes  # 32 bytes: SHA-256 of the decoded, resampled PCM / decoded pixels
    hashes: np.ndarray | None = None  # audio: uint32 landmark hashes
    times: np.ndarray | None = None  # audio: int32 anchor frames (HOP / RATE s each)
    pdq: bytes | None = None  # image: 64 bytes (PDQ of the whole photo, of its centre)
    none: str | None = None  # why there are no landmarks / no perceptual hash

    def pack(self) -> bytes:
        """The bytes stored in a shard's `fingerprint` column (unpack reads them back)."""
        note = (self.none or "").encode()
        head = struct.pack("<4s32sH", _TAG[self.modality], self.exact, len(note)) + note
        if self.modality == "image":
            return head + (self.pdq or b"")
        if self.hashes is None:
            return head
        pairs = np.empty((len(self.hashes), 2), "<u4")
        pairs[:, 0], pairs[:, 1] = self.hashes, self.times
        return head + pairs.tobytes()


_TAG = {"audio": _AUDIO_TAG, "image": _IMAGE_TAG}


def packed(make: Callable[..., Fingerprint], *args: object) -> bytes | None:
    """make(*args).pack(), or None when fingerprinting fails: materialize then stores the file
    without one, and dedup decodes it again and notes why (never a failed record)."""
    try:
        return make(*args).pack()
    except Exception:
        return None


CURRENT = (_AUDIO_TAG, _IMAGE_TAG)  # the tags of this version's fingerprints


def current(data: bytes | None) -> bool:
    """Whether stored fingerprint bytes are of this version (an older one is made again)."""
    return data is not None and data[:4] in CURRENT


def unpack(data: bytes) -> Fingerprint:
    """A Fingerprint from the bytes `pack` wrote."""
    tag, exact, n_note = struct.unpack_from("<4s32sH", data)
    at = 38
    note = data[at : at + n_note].decode() or None
    rest = data[at + n_note :]
    if tag == _IMAGE_TAG:
        return Fingerprint("image", exact, pdq=rest or None, none=note)
    if tag != _AUDIO_TAG:
        raise ValueError(f"not a fingerprint (tag {tag!r})")
    if note:
        return Fingerprint("audio", exact, none=note)
    pairs = np.frombuffer(rest, "<u4").reshape(-1, 2)
    return Fingerprint("audio", exact, pairs[:, 0].copy(), pairs[:, 1].astype(np.int32))


# ----------------------------------------------------------------------------------- audio
def to_mono(samples: np.ndarray, rate: int) -> np.ndarray:
    """(frames, channels) or mono float PCM -> mono float32 at RATE (soxr, high quality)."""
    return pcm.resample(np.ascontiguousarray(pcm.to_mono(samples)), rate, RATE)


def _clipped(block: np.ndarray) -> int:
    """Samples of a block at or above CLIP_LEVEL in magnitude (its peak first: usually none)."""
    if not block.size or max(float(block.max()), -float(block.min())) < CLIP_LEVEL:
        return 0
    return int(np.count_nonzero(np.abs(block) >= CLIP_LEVEL))


class AudioPrinter:
    """The fingerprint of PCM fed block by block, as a decoder produces it (materialize's
    verifying decode): `add` each (frames, channels) float block at `rate`, then `finish`.
    It keeps the mono mix at the native rate (4 bytes a frame), so the result is exactly
    audio_fingerprint of the whole."""

    def __init__(self, rate: int, max_frames: int | None = None) -> None:
        self.rate = rate
        self.max_frames = max_frames  # more than this: nothing kept (the caller cuts segments)
        self.blocks: list[np.ndarray] = []
        self.clipped = 0
        self.samples = 0
        self.frames = 0

    def add(self, block: np.ndarray) -> None:
        raw = block if block.ndim == 2 else block[:, None]
        self.frames += len(raw)
        if self.max_frames is not None and self.frames > self.max_frames:
            self.blocks = []  # a file longer than its header said: never held whole
            return
        self.clipped += _clipped(raw)
        self.samples += raw.size
        mono = pcm.to_mono(raw)
        self.blocks.append(mono if mono.base is None else mono.copy())  # decoders reuse buffers

    def finish(self) -> Fingerprint:
        if self.max_frames is not None and self.frames > self.max_frames:
            raise ValueError(f"more than {self.max_frames} frames: fingerprint its segments")
        mono = np.concatenate(self.blocks) if self.blocks else np.empty(0, np.float32)
        mono = to_mono(mono, self.rate)
        exact = hashlib.sha256(_pcm16(mono).tobytes()).digest()
        seconds = len(mono) / RATE
        clipped = self.clipped / self.samples if self.samples else 0.0
        if seconds < MIN_SECONDS:
            note = f"too short ({seconds:.2f} s < {MIN_SECONDS} s)"
            return Fingerprint("audio", exact, none=note)
        if clipped > CLIP_SHARE:
            note = f"clipped ({clipped:.0%} of samples at full scale)"
            return Fingerprint("audio", exact, none=note)
        hashes, times = landmarks(mono)
        if len(hashes) < MIN_LANDMARKS:
            note = f"too little structure ({len(hashes)} landmarks)"
            return Fingerprint("audio", exact, none=note)
        return Fingerprint("audio", exact, hashes, times)


def audio_fingerprint(samples: np.ndarray, rate: int) -> Fingerprint:
    """The fingerprint of decoded PCM ((frames, channels) or mono float) at `rate` Hz."""
    printer = AudioPrinter(rate)
    printer.add(samples)
    return printer.finish()


def join_segments(parts: list[tuple[float, Fingerprint]]) -> Fingerprint:
    """A segmented recording's fingerprint from its segments' (offset_s, fingerprint), in time
    order: the exact hash of the segments' exact hashes, their landmarks on one time axis.
    Materialize fingerprints each stored segment as it cuts it; dedup does the same from the
    stored files of an older shard, so both give the same result."""
    if len(parts) == 1:
        return parts[0][1]
    exact = hashlib.sha256(b"".join(f.exact for _, f in parts)).digest()
    marked = [(off, f) for off, f in parts if f.hashes is not None]
    if not marked:
        return Fingerprint("audio", exact, none=parts[0][1].none)
    hashes = np.concatenate([f.hashes for _, f in marked])
    times = np.concatenate([f.times + round(off * RATE / HOP) for off, f in marked])
    return Fingerprint("audio", exact, hashes, times.astype(np.int32))


def _pcm16(mono: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(mono, -1.0, 1.0) * 32767).astype("<i2")


def spectrogram(mono: np.ndarray) -> np.ndarray:
    """Magnitude, float32, shape (frames, N_FFT // 2 + 1): Hann window, HOP hop."""
    from scipy import fft

    if len(mono) < N_FFT:
        mono = np.pad(mono, (0, N_FFT - len(mono)))
    windows = np.lib.stride_tricks.sliding_window_view(mono, N_FFT)[::HOP]
    spec = np.empty((len(windows), N_FFT // 2 + 1), np.float32)
    for a in range(0, len(windows), CHUNK):  # a cache-sized block of frames at a time
        spec[a : a + CHUNK] = np.abs(fft.rfft(windows[a : a + CHUNK] * _window(), axis=1))
    return spec


def _running_max(a: np.ndarray, radius: int, axis: int) -> np.ndarray:
    """Max over a centred window of 2 * radius + 1 along `axis` (zero beyond the edges).

    Doubling: windows of 1, 2, 4, ... p values in log2(p) elementwise maxima, then two
    overlapping windows of p cover the window (5 passes for 21 or 25 instead of 21 or 25)."""
    width = 2 * radius + 1
    m = np.swapaxes(a, 0, axis)
    m = np.concatenate([np.zeros_like(m[:radius]), m, np.zeros_like(m[:radius])])
    span = 1
    while span * 2 <= width:
        m = np.maximum(m[:-span], m[span:])
        span *= 2
    n = a.shape[axis]
    return np.swapaxes(np.maximum(m[:n], m[width - span : width - span + n]), 0, axis)


@lru_cache(maxsize=1)
def _window() -> np.ndarray:
    return np.hanning(N_FFT).astype(np.float32)


def peaks(spec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(frame, bin) of the spectrogram's local maxima above the floor, in time order.

    The floor is relative (the median magnitude, raised PEAK_FLOOR_DB), so a gain change moves
    every value and the floor alike and the same peaks are found."""
    floor = float(np.median(spec[::16])) * 10 ** (PEAK_FLOOR_DB / 20)
    found_t, found_f = [], []
    for a in range(0, len(spec), CHUNK):  # CHUNK frames, with the neighbours their maxima need
        lo = max(0, a - PEAK_FRAMES)
        part = spec[lo : a + CHUNK + PEAK_FRAMES]
        # bins first: the same maxima (a rectangle is separable), 1.6x faster in this order
        local = _running_max(_running_max(part, PEAK_BINS, 1), PEAK_FRAMES, 0)
        inner = slice(a - lo, a - lo + CHUNK)
        t, f = np.nonzero((part[inner] == local[inner]) & (part[inner] > floor))
        found_t.append(t + a)
        found_f.append(f)
    t = np.concatenate(found_t) if found_t else np.empty(0, np.int64)
    f = np.concatenate(found_f) if found_f else np.empty(0, np.int64)
    keep = (f > 1) & (f < spec.shape[1] - 1)  # DC and Nyquist bins carry no call
    return t[keep], f[keep]


def landmarks(mono: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(hashes uint32, anchor frames int32) of mono float32 PCM at RATE."""
    t, f = peaks(spectrogram(mono))
    hashes = []
    n = len(t)
    for k in range(1, FAN_OUT * 8 + 1):  # candidates ahead in time order; FAN_OUT accepted each
        if k >= n:
            break
        dt = t[k:] - t[:-k]
        df = f[k:].astype(np.int64) - f[:-k]
        ok = (dt > 0) & (dt <= MAX_DT) & (np.abs(df) <= MAX_DF)
        h = np.full(n, -1, np.int64)
        h[: n - k] = np.where(ok, (f[:-k] << 17) | (f[k:] << 7) | dt, -1)
        hashes.append(h)
    if not hashes:
        return np.empty(0, np.uint32), np.empty(0, np.int32)
    h = np.stack(hashes, axis=1)  # (anchors, candidates)
    valid = h >= 0
    rank = np.cumsum(valid, axis=1)
    take = valid & (rank <= FAN_OUT)
    rows = np.nonzero(take)[0]
    return h[take].astype(np.uint32), t[rows].astype(np.int32)


def match_landmarks(
    a_hashes: np.ndarray, a_times: np.ndarray, b_hashes: np.ndarray, b_times: np.ndarray
) -> tuple[float, int, int]:
    """(score, matched, offset): the share of the smaller set's landmarks that agree at the best
    time offset (a frame either side counted too), that count, and the offset (b - a, frames)."""
    ia = np.argsort(a_hashes, kind="stable")
    ah, at = a_hashes[ia], a_times[ia]
    lo = np.searchsorted(ah, b_hashes, "left")
    hi = np.searchsorted(ah, b_hashes, "right")
    counts = hi - lo
    if not counts.sum():
        return 0.0, 0, 0
    idx = np.repeat(lo, counts) + (
        np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    )
    offsets = np.repeat(b_times, counts) - at[idx]
    values, freq = np.unique(offsets, return_counts=True)
    best = _best_offset(values, freq)
    n = min(len(a_hashes), len(b_hashes))
    return best[0] / n, best[0], best[1]


def _best_offset(values: np.ndarray, freq: np.ndarray) -> tuple[int, int]:
    """The offset whose count plus its neighbours' (+-1 frame) is largest: (count, offset)."""
    pos = {int(v): int(c) for v, c in zip(values, freq, strict=True)}
    best, where = 0, 0
    for v, c in pos.items():
        total = c + pos.get(v - 1, 0) + pos.get(v + 1, 0)
        if total > best:
            best, where = total, v
    return best, where


# ----------------------------------------------------------------------------------- images
def image_fingerprint(im) -> Fingerprint:
    """The fingerprint of a decoded photo: pixel SHA-256 and PDQ. `im`: a PIL image (any mode)
    or its pixels as an (h, w, 3) uint8 RGB array (no conversion then)."""
    from PIL import Image

    if isinstance(im, np.ndarray):
        pixels, rgb = np.ascontiguousarray(im), None
    else:
        rgb = im if im.mode == "RGB" else im.convert("RGB")
        pixels = np.asarray(rgb)
    height, width = pixels.shape[:2]
    digest = hashlib.sha256(struct.pack("<II", width, height))
    digest.update(pixels)  # the pixel bytes, hashed in place
    exact = digest.digest()
    if min(width, height) < MIN_IMAGE_SIDE:
        return Fingerprint("image", exact, none=f"too small ({width}x{height} px)")
    import pdqhash

    if max(width, height) > PDQ_SIDE:  # PDQ averages down to 64 x 64 anyway: 4x that is plenty
        scale = PDQ_SIDE / max(width, height)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        rgb = rgb if rgb is not None else Image.fromarray(pixels)
        pixels = np.asarray(rgb.resize(size, Image.Resampling.BOX))
    bits, quality = pdqhash.compute(pixels)
    if quality < PDQ_MIN_QUALITY:
        return Fingerprint("image", exact, none=f"too flat (PDQ quality {quality})")
    h, w = pixels.shape[:2]
    dy, dx = round(h * CENTRE_CUT), round(w * CENTRE_CUT)
    centre, _ = pdqhash.compute(np.ascontiguousarray(pixels[dy : h - dy, dx : w - dx]))
    pdq = np.packbits(np.concatenate([bits, centre]).astype(np.uint8)).tobytes()
    return Fingerprint("image", exact, pdq=pdq)


def pdq_distance(a: bytes, b: bytes) -> int:
    """Bits that differ between two photos' PDQ hashes: the least over whole vs whole, and
    each one's centre (CENTRE_CUT off every border) vs the other whole (a cropped copy)."""
    return min(hamming(a[:32], b[:32]), hamming(a[32:], b[:32]), hamming(a[:32], b[32:]))


def hamming(a: bytes, b: bytes) -> int:
    """Bits that differ between two equal-length hashes."""
    return int.from_bytes(a, "big").__xor__(int.from_bytes(b, "big")).bit_count()


def decode_audio(data: bytes) -> tuple[np.ndarray, int]:
    """Stored audio bytes -> ((frames, channels) float32, rate): libsndfile, else FFmpeg.

    Read DECODE_BLOCK frames at a time, as materialize's verifying decode reads them:
    libsndfile's MP3 floats differ in the last bit between read sizes, which would change the
    exact hash of the same file."""
    import soundfile as sf

    from biovita_data.core.cstderr import filtered_c_stderr

    try:
        with filtered_c_stderr(), pcm.open_sound(data) as snd:
            blocks = list(snd.blocks(DECODE_BLOCK, dtype="float32", always_2d=True))
            rate = snd.samplerate
        if not blocks:
            return np.empty((0, 1), np.float32), int(rate)
        return np.concatenate(blocks), int(rate)
    except sf.LibsndfileError:
        from biovita_data.media.audio import _decode_av

        samples, rate, _ = _decode_av(data)
        return samples, rate
