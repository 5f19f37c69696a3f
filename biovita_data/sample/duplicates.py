"""Planted copies in the sample world (`World(duplicates=True)`): known near-duplicates and
near-miss negatives, with their ground truth (`world.planted`).

Audio copies are new Xeno-canto recordings whose bytes are an existing recording (Xeno-canto or
an iNaturalist sound) decoded, trimmed or padded by 0.5-3 s, changed in gain by up to +-6 dB,
resampled and re-encoded (MP3 at another bitrate, FLAC or WAV); a lossless (FLAC/WAV)
original's copy is the same PCM in the other container (an exact copy). Near-miss negatives:
a new recording by the same recordist on the same day and place, of the same species or of a
congeneric one; neither may be merged with its neighbour. Photo copies are not planted in the
world yet: `edit_photo` / `draw_photo_edit` make them (resized, recompressed, some cropped 5 %)
for tests and benchmarks/dedup.py.
"""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import av
import numpy as np
import soundfile as sf
from PIL import Image

if TYPE_CHECKING:
    from biovita_data.sample.world import World

# Share of eligible originals that get a planted copy, per world size.
AUDIO_SHARE = {"tiny": 0.5, "default": 0.12}
PHOTO_SHARE = {"tiny": 0.25, "default": 0.04}
NEGATIVES = {"tiny": 2, "default": 10}  # near-miss negatives of each kind
COPY_XC_BASE = 1_000_000  # planted Xeno-canto ids (the world's own are 100000-999999)
COPY_PHOTO_BASE = 95_000_000  # planted photo ids (the world's own start at 90000000)
MP3_BITRATES = (64_000, 96_000, 128_000, 192_000)
RATES = (22_050, 32_000, 44_100, 48_000)


@dataclass(frozen=True)
class AudioEdit:
    """How a planted audio copy was made from its original's decoded PCM."""

    trim_start_s: float  # > 0 cut from the start, < 0 silence padded before
    trim_end_s: float  # > 0 cut from the end, < 0 silence padded after
    gain_db: float
    sample_rate: int  # 0: the original's
    fmt: str  # mp3 | flac | wav
    bitrate: int | None = None  # mp3 only

    @property
    def exact(self) -> bool:
        """The same PCM in another container: an exact copy."""
        return (
            self.trim_start_s == 0 and self.trim_end_s == 0 and self.gain_db == 0
            and self.bitrate is None and self.fmt in ("flac", "wav")
        )  # fmt: skip


@dataclass(frozen=True)
class PhotoEdit:
    """How a planted photo copy was made from its original's decoded pixels."""

    scale: float  # resized by this factor (1.0: not resized)
    crop: float  # share cut from each border (0.05: 5 %)
    quality: int | None  # JPEG quality; None: PNG (lossless)

    @property
    def exact(self) -> bool:
        return self.scale == 1.0 and self.crop == 0.0 and self.quality is None


@dataclass(frozen=True)
class Planted:
    """Ground truth of one planted record: a copy of `original`, or a near-miss negative."""

    modality: str  # audio | image
    source: str  # the planted record's source
    record_id: int
    original_source: str
    original_id: int
    kind: str  # exact | near | negative
    edit: AudioEdit | PhotoEdit | None = None
    detail: str = ""


# --------------------------------------------------------------------------- transformations
def decode_audio(data: bytes) -> tuple[np.ndarray, int]:
    """Encoded audio -> ((frames, channels) float32, rate), libsndfile or FFmpeg."""
    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        return samples, int(rate)
    except sf.LibsndfileError:
        chunks = []
        with av.open(io.BytesIO(data)) as container:
            stream = container.streams.audio[0]
            rate = stream.codec_context.sample_rate
            resampler = av.AudioResampler(format="flt")
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1, len(out.layout.channels)))
        return np.concatenate(chunks), int(rate)


def encode_mp3(samples: np.ndarray, rate: int, bitrate: int) -> bytes:
    """MP3 (LAME through PyAV) at a constant bitrate, bit-exact (no version strings)."""
    layout = "mono" if samples.shape[1] == 1 else "stereo"
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp3", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream("libmp3lame", rate=rate, layout=layout)
        stream.bit_rate = bitrate
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples.T, np.float32), format="fltp", layout=layout
        )
        frame.sample_rate = rate
        frame.pts = 0
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buf.getvalue()


def edit_audio(data: bytes, edit: AudioEdit) -> bytes:
    """The copy's bytes: the original decoded, trimmed/padded, gained, resampled, re-encoded."""
    import soxr

    from biovita_data.sample.audio import encode

    samples, rate = decode_audio(data)
    a = round(max(edit.trim_start_s, 0) * rate)
    b = len(samples) - round(max(edit.trim_end_s, 0) * rate)
    samples = samples[a:b]
    pad = [(round(max(-edit.trim_start_s, 0) * rate), round(max(-edit.trim_end_s, 0) * rate))]
    samples = np.pad(samples, [*pad, (0, 0)])
    peak = float(np.abs(samples).max()) or 1.0
    gain = min(10 ** (edit.gain_db / 20), 0.95 / peak)  # louder, yet never clipped
    samples = samples * np.float32(gain if edit.gain_db else 1.0)
    out_rate = edit.sample_rate or rate  # 0: the original's rate
    if out_rate != rate:
        samples = soxr.resample(samples, rate, out_rate, quality="HQ")
    samples = np.ascontiguousarray(samples, np.float32)
    if edit.fmt == "mp3":
        return encode_mp3(samples, out_rate, edit.bitrate or 128_000)
    return encode(samples, out_rate, edit.fmt)


def edit_photo(data: bytes, edit: PhotoEdit) -> bytes:
    """The copy's bytes: the original decoded, cropped, resized and saved again."""
    im = Image.open(io.BytesIO(data)).convert("RGB")
    if edit.crop:
        dx, dy = round(im.width * edit.crop), round(im.height * edit.crop)
        im = im.crop((dx, dy, im.width - dx, im.height - dy))
    if edit.scale != 1.0:
        size = (max(1, round(im.width * edit.scale)), max(1, round(im.height * edit.scale)))
        im = im.resize(size, Image.Resampling.LANCZOS)
    out = io.BytesIO()
    if edit.quality is None:
        im.save(out, "PNG", compress_level=1)
    else:
        im.save(out, "JPEG", quality=edit.quality)
    return out.getvalue()


def draw_audio_edit(rng: np.random.Generator, duration_s: float, exact: bool) -> AudioEdit:
    """A seeded edit: exact (another container) or trimmed/padded, gained, resampled, re-encoded."""
    if exact:
        return AudioEdit(0.0, 0.0, 0.0, 0, str(rng.choice(["flac", "wav"])))
    room = max(0.0, (duration_s - 1.5) / 2)  # a trimmed copy keeps at least 1.5 s
    cut = [float(rng.uniform(0.5, 3.0)) for _ in range(2)]
    sides = [  # each end: trimmed (0.6), padded (0.2) or left alone
        round(min(c, room), 2)
        if rng.random() < 0.6
        else -round(c, 2)
        if rng.random() < 0.5
        else 0.0
        for c in cut
    ]
    fmt = str(rng.choice(["mp3", "mp3", "flac", "wav"]))
    return AudioEdit(
        trim_start_s=sides[0],
        trim_end_s=sides[1],
        gain_db=round(float(rng.uniform(-6, 6)), 1),
        sample_rate=int(rng.choice(RATES)),
        fmt=fmt,
        bitrate=int(rng.choice(MP3_BITRATES)) if fmt == "mp3" else None,
    )


def draw_photo_edit(rng: np.random.Generator, exact: bool) -> PhotoEdit:
    """A seeded edit: exact (the same pixels as PNG) or resized, recompressed, some cropped 5 %."""
    if exact:
        return PhotoEdit(1.0, 0.0, None)
    return PhotoEdit(
        scale=round(float(rng.uniform(0.4, 0.9)), 2),
        crop=0.05 if rng.random() < 0.3 else 0.0,
        quality=int(rng.integers(55, 90)),
    )


# --------------------------------------------------------------------------- planting
def plant(world: World) -> list[Planted]:
    """Add copies and near-miss negatives (as new Xeno-canto recordings) to the world's
    recordings; return their ground truth. Seeded: the same world gets the same plants."""
    rng = np.random.default_rng([world.seed, 24_000])
    size = world.size if world.size in AUDIO_SHARE else "default"
    eligible = [
        r for r in world.recordings
        if r.flaw is None and not r.restricted and 3.0 <= r.duration_s < 60
    ]  # fmt: skip
    picks = [r for r in eligible if rng.random() < AUDIO_SHARE[size]]
    ids = iter(range(COPY_XC_BASE, COPY_XC_BASE + 10**6))
    planted: list[Planted] = []
    added = []
    for orig in picks:
        # exact: the same 16-bit PCM in the other lossless container (FLAC <-> WAV)
        edit = draw_audio_edit(rng, orig.duration_s, exact=orig.fmt in ("flac", "wav"))
        if edit.exact:
            edit = replace(edit, fmt="wav" if orig.fmt == "flac" else "flac")
        rid = next(ids)
        added.append(
            replace(
                orig,
                id=rid,
                source="xeno-canto",
                fmt=edit.fmt,
                sample_rate=edit.sample_rate or orig.sample_rate,
                duration_s=round(orig.duration_s - edit.trim_start_s - edit.trim_end_s, 2),
                license="//creativecommons.org/licenses/by-nc-sa/4.0/",
                uploaded=orig.uploaded + dt.timedelta(days=int(rng.integers(1, 200))),
                observation_id=None,
                flaw="copy",
                duplicate_of=orig.id,
            )
        )
        planted.append(
            Planted("audio", "xeno-canto", rid, orig.source, orig.id,
                    "exact" if edit.exact else "near", edit)
        )  # fmt: skip
    by_genus: dict[str, list] = {}
    for r in eligible:
        by_genus.setdefault(world.species[r.species_index].name.split()[0], []).append(r)
    for k, orig in enumerate(picks[: 2 * NEGATIVES[size]]):
        # same recordist, same day and place; a new recording (new seed) of the same species,
        # or (odd k) of a congeneric species when the genus has another
        genus = by_genus[world.species[orig.species_index].name.split()[0]]
        other = [r for r in genus if r.species_index != orig.species_index]
        species_index = other[0].species_index if k % 2 and other else orig.species_index
        rid = next(ids)
        added.append(
            replace(
                orig, id=rid, source="xeno-canto", species_index=species_index,
                seed=int(rng.integers(0, 2**31)), observation_id=None,
                license="//creativecommons.org/licenses/by-nc-sa/4.0/",
                uploaded=orig.uploaded + dt.timedelta(days=int(rng.integers(1, 200))),
            )
        )  # fmt: skip
        what = "congeneric species" if species_index != orig.species_index else "same species"
        planted.append(
            Planted("audio", "xeno-canto", rid, orig.source, orig.id, "negative",
                    detail=f"same recordist, day and place; another recording ({what})")
        )  # fmt: skip
    world.recordings.extend(added)
    world.__dict__.pop("recording_by_id", None)  # the cached lookup, rebuilt with the plants
    world.planted_edits = {(p.source, p.record_id): p for p in planted}
    return planted


def copy_audio(world: World, source: str, rid: int) -> bytes:
    """A planted copy's bytes: its original's bytes edited as planted."""
    p = world.planted_edits[(source, rid)]
    return edit_audio(world.audio_bytes(p.original_source, p.original_id), p.edit)
