"""The loader's crop decoders (soundfile + soxr, FFmpeg through torchcodec) give the same crop."""

from __future__ import annotations

import numpy as np
import pytest

from biovita_data.loader import audio as la
from biovita_data.sample.published_folder import encode_audio

pytest.importorskip("torchcodec")
if la.ffmpeg_decoder() is None:
    pytest.skip("torchcodec cannot load FFmpeg's libraries", allow_module_level=True)

EDGE = 4800  # 0.1 s at 48 kHz: each resampler treats the window's edges its own way


def tones(seconds: float, rate: int, channels: int) -> np.ndarray:
    """float32 (frames, channels): a different tone per channel plus a warble (3 +- 0.2 kHz), all
    well below every Nyquist frequency, where the two resamplers' filters differ."""
    t = np.arange(int(seconds * rate)) / rate
    chirp = 0.05 * np.sin(2 * np.pi * (3000 * t - 200 * np.cos(t)))
    cols = [
        (0.3 / (c + 1)) * np.sin(2 * np.pi * (700 + 900 * c) * t + c) + chirp
        for c in range(channels)
    ]
    return np.stack(cols, 1).astype(np.float32)


CASES = [  # (format, mp3 compression: a number is CBR, None VBR, seconds, channels, rate)
    ("flac", None, 40.0, 1, 44100),
    ("flac", None, 40.0, 2, 44100),
    ("flac", None, 30.0, 3, 32000),
    ("flac", None, 6.0, 1, 44100),  # shorter than the window: padded
    ("mp3", 0.6, 40.0, 1, 44100),
    ("mp3", 0.3, 50.0, 2, 44100),
    ("mp3", 0.6, 30.0, 2, 32000),
    ("mp3", 0.6, 30.0, 1, 22050),
    ("mp3", 0.6, 30.0, 1, 48000),  # no resampling
]


@pytest.mark.parametrize(("fmt", "compression", "seconds", "channels", "rate"), CASES)
def test_ffmpeg_crop_matches_soundfile(fmt, compression, seconds, channels, rate) -> None:
    data = encode_audio(tones(seconds, rate, channels), rate, fmt, compression)
    assert la.crop_backend(fmt.upper(), "auto", data) == ("ffmpeg" if fmt == "mp3" else "soundfile")
    for u in (0.0, 0.37, 0.999):
        ref = la.decode_clip(data, u=u, backend="soundfile")
        got = la.decode_clip(data, u=u, backend="ffmpeg")
        assert got.samples.shape == ref.samples.shape == (480_000,)
        assert got.valid == ref.valid
        assert got.start_s == ref.start_s
        assert (got.source_rate, got.source_channels, got.source_frames) == (
            ref.source_rate,
            ref.source_channels,
            ref.source_frames,
        )
        err = got.samples - ref.samples
        assert np.sqrt(np.mean(err**2) / np.mean(ref.samples**2)) < 2e-3
        inner = slice(EDGE, ref.valid - EDGE)
        assert np.abs(err[inner]).max() < 1e-3
        assert not got.samples[ref.valid :].any()  # the padding is silence


def test_auto_picks_ffmpeg_only_where_measured_and_exact() -> None:
    cbr = encode_audio(tones(12.0, 44100, 1), 44100, "mp3", 0.6)
    vbr = encode_audio(tones(12.0, 44100, 1), 44100, "mp3", None)
    wav = encode_audio(tones(12.0, 44100, 1), 44100, "wav")
    assert la.mp3_is_cbr(cbr) and not la.mp3_is_cbr(vbr)
    assert la.crop_backend("MP3", "auto", cbr) == "ffmpeg"
    assert la.crop_backend("MP3", "auto", vbr) == "soundfile"  # a VBR seek is not exact
    assert la.crop_backend("WAV", "auto", wav) == "soundfile"  # not measured
    assert la.crop_backend("FLAC", "soundfile") == "soundfile"
    assert la.crop_backend("FLAC", "auto") == "soundfile"  # measured: within noise
    assert la.crop_backend("WAV", "ffmpeg") == "ffmpeg"
    with pytest.raises(ValueError, match="backend"):
        la.crop_backend("FLAC", "gstreamer")


def test_id3v2_tag_is_skipped_when_looking_for_the_cbr_tag() -> None:
    cbr = encode_audio(tones(3.0, 44100, 1), 44100, "mp3", 0.6)
    body = b"TIT2" + (11).to_bytes(4, "big") + b"\0\0\0benchmark"
    size = len(body)
    syncsafe = bytes([(size >> 21) & 0x7F, (size >> 14) & 0x7F, (size >> 7) & 0x7F, size & 0x7F])
    tagged = b"ID3\x04\x00\x00" + syncsafe + body + cbr
    assert la.mp3_is_cbr(tagged)
    assert not la.mp3_is_cbr(b"ID3\x04\x00\x00" + syncsafe + body + b"\0" * 64)


def test_ffmpeg_failure_and_absence_fall_back_to_soundfile(monkeypatch) -> None:
    data = encode_audio(tones(20.0, 44100, 2), 44100, "flac")
    ref = la.decode_clip(data, u=0.5, backend="soundfile")

    def broken(*args, **kwargs):
        raise RuntimeError("no FFmpeg here")

    monkeypatch.setattr(la, "read_window_ffmpeg", broken)
    assert np.array_equal(la.decode_clip(data, u=0.5, backend="ffmpeg").samples, ref.samples)
    monkeypatch.undo()
    monkeypatch.setattr(la, "_FFMPEG", [None])
    assert la.crop_backend("FLAC", "ffmpeg") == "soundfile"
    assert np.array_equal(la.decode_clip(data, u=0.5).samples, ref.samples)


def test_onset_crop_stays_on_soundfile() -> None:
    x = tones(20.0, 44100, 1)
    x[: 44100 * 3] = 0.0
    data = encode_audio(x, 44100, "flac")
    a = la.decode_clip(data, mode="onset", backend="ffmpeg")
    b = la.decode_clip(data, mode="onset", backend="soundfile")
    assert np.array_equal(a.samples, b.samples)
    assert a.start_s == pytest.approx(3.0 - la.ONSET_LEAD_S, abs=1e-3)
