"""The sample world's synthetic animal calls: shape, determinism, formats, band and kind."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest
import soundfile as sf

from biovita_data.sample.audio import (
    FORMATS,
    PEAK,
    decode_info,
    encode,
    render_audio,
    synthesize,
)
from biovita_data.sample.taxonomy import CALL_KINDS, CallParams


def _call(kind: str, f_low: float = 2000.0, f_high: float = 3000.0) -> CallParams:
    return CallParams(
        kind=kind, f_low=f_low, f_high=f_high, mod_rate=9.0, syllable_s=0.25, syllables=3, gap_s=0.1
    )


def _decode(data: bytes) -> tuple[np.ndarray, int]:
    """Samples (n, channels) and sample rate of encoded audio: soundfile, else PyAV."""
    try:
        samples, sample_rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except sf.LibsndfileError:
        with av.open(io.BytesIO(data)) as container:
            planes = [frame.to_ndarray() for frame in container.decode(audio=0)]
            sample_rate = container.streams.audio[0].sample_rate
        samples = np.concatenate(planes, axis=1).T
    return samples, sample_rate


def _psd(samples: np.ndarray, sample_rate: int, n: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Welch power spectrum (Hann, 50% overlap), averaged over segments and channels."""
    starts = np.arange(0, len(samples) - n + 1, n // 2)
    segments = samples.T[:, starts[:, None] + np.arange(n)] * np.hanning(n)
    power = (np.abs(np.fft.rfft(segments, axis=-1)) ** 2).mean(axis=(0, 1))
    return np.fft.rfftfreq(n, 1 / sample_rate), power


def _flatness(samples: np.ndarray, sample_rate: int, lo: float, hi: float) -> float:
    """Median in-band spectral flatness of the loudest fifth of 1024-sample frames."""
    n = 1024
    mono = samples.mean(axis=1)
    frames = mono[: len(mono) // n * n].reshape(-1, n) * np.hanning(n)
    freqs = np.fft.rfftfreq(n, 1 / sample_rate)
    power = np.abs(np.fft.rfft(frames, axis=1))[:, (freqs >= lo) & (freqs <= hi)] ** 2 + 1e-20
    energy = power.sum(axis=1)
    loud = power[energy >= np.quantile(energy, 0.8)]
    return float(np.median(np.exp(np.log(loud).mean(axis=1)) / loud.mean(axis=1)))


def _rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))


@pytest.mark.parametrize("kind", CALL_KINDS)
def test_synthesize_shape_dtype_and_peak(kind: str) -> None:
    samples = synthesize(_call(kind), duration_s=2.5, sample_rate=22050, channels=2, seed=3)
    assert samples.shape == (round(2.5 * 22050), 2)
    assert samples.dtype == np.float32
    assert np.abs(samples).max() <= PEAK
    assert not np.array_equal(samples[:, 0], samples[:, 1])  # stereo differs in gain/delay


@pytest.mark.parametrize("fmt", FORMATS)
def test_render_is_deterministic_per_seed(fmt: str) -> None:
    def render(seed: int) -> bytes:
        return render_audio(
            _call("trill"), fmt=fmt, sample_rate=32000, channels=2, duration_s=2, seed=seed
        )

    first = render(7)
    assert render(7) == first
    assert render(8) != first


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    ("sample_rate", "channels"), [(22050, 1), (32000, 2), (44100, 1), (48000, 2)]
)
def test_formats_decode_with_advertised_parameters(
    fmt: str, sample_rate: int, channels: int
) -> None:
    data = render_audio(
        _call("whistle"),
        fmt=fmt,
        sample_rate=sample_rate,
        channels=channels,
        duration_s=2.0,
        seed=1,
    )
    info = decode_info(data)
    assert info["format"] == fmt
    assert info["sample_rate"] == sample_rate
    assert info["channels"] == channels
    assert info["duration_s"] == pytest.approx(2.0, abs=0.1)
    samples, decoded_rate = _decode(data)
    assert decoded_rate == sample_rate
    assert samples.shape[1] == channels
    # MP3 and AAC decoders may hand back encoder padding (up to a frame or two) after the end.
    assert 1.9 <= len(samples) / sample_rate <= 2.1


@pytest.mark.parametrize(
    ("kind", "f_low", "f_high", "sample_rate", "fmt"),
    [
        ("whistle", 1500.0, 2100.0, 44100, "mp3"),
        ("trill", 4000.0, 5500.0, 48000, "ogg"),
        ("buzz", 3000.0, 4500.0, 32000, "flac"),
        ("pulse_train", 300.0, 450.0, 22050, "wav"),
        ("croak", 350.0, 500.0, 22050, "m4a"),
        ("sweep", 6000.0, 9000.0, 48000, "m4a"),
        ("chirp", 2500.0, 3800.0, 32000, "mp3"),
        ("whistle", 9000.0, 11000.0, 22050, "wav"),  # band above 0.45 * sample_rate: clipped
    ],
)
def test_dominant_frequency_lies_in_the_band(
    kind: str, f_low: float, f_high: float, sample_rate: int, fmt: str
) -> None:
    call = _call(kind, f_low, f_high)
    for seed in (11, 12):
        data = render_audio(
            call, fmt=fmt, sample_rate=sample_rate, channels=2, duration_s=3, seed=seed
        )
        freqs, power = _psd(*_decode(data))
        dominant = freqs[np.argmax(power)]
        assert f_low * 0.8 <= dominant <= f_high * 1.2
        assert dominant <= 0.45 * sample_rate * 1.05


def test_buzz_and_whistle_in_one_band_differ_in_spectral_flatness() -> None:
    def flatness(kind: str, seed: int) -> float:
        samples = synthesize(_call(kind), duration_s=3, sample_rate=44100, channels=1, seed=seed)
        return _flatness(samples, 44100, 2000.0, 3000.0)

    for seed in (1, 2, 3):
        assert flatness("buzz", seed) > 0.3
        assert flatness("whistle", seed) < 0.05


@pytest.mark.parametrize("fmt", ["wav", "mp3", "m4a"])
def test_silent_recording_is_near_digital_silence(fmt: str) -> None:
    for seed in (1, 2):
        kwargs = {"fmt": fmt, "sample_rate": 22050, "channels": 2, "duration_s": 2, "seed": seed}
        silent, _ = _decode(render_audio(_call("whistle"), silent=True, **kwargs))
        normal, _ = _decode(render_audio(_call("whistle"), **kwargs))
        assert _rms(silent) < 1e-3
        assert _rms(normal) > 1e-2


def test_calls_repeat_across_the_whole_duration() -> None:
    samples = synthesize(_call("chirp"), duration_s=30, sample_rate=22050, channels=1, seed=5)
    windows = samples[:, 0].reshape(6, -1)  # 5-second windows
    rms = np.sqrt(np.mean(windows.astype(np.float64) ** 2, axis=1))
    assert rms.min() > 0.2 * rms.max()


def test_long_ogg_encodes() -> None:
    # Written in one call, libvorbis allocas the whole buffer on the stack and segfaults.
    samples = np.random.default_rng(0).normal(0, 0.05, (60 * 48000, 1)).astype(np.float32)
    info = decode_info(encode(samples, 48000, "ogg"))
    assert info["duration_s"] == pytest.approx(60.0)


def test_unknown_format_raises() -> None:
    samples = synthesize(_call("whistle"), duration_s=1, sample_rate=22050, channels=1, seed=1)
    with pytest.raises(ValueError, match="aiff"):
        encode(samples, 22050, "aiff")
    with pytest.raises(ValueError, match="aiff"):
        render_audio(
            _call("whistle"), fmt="aiff", sample_rate=22050, channels=1, duration_s=1, seed=1
        )


def test_unknown_call_kind_raises() -> None:
    with pytest.raises(ValueError, match="hoot"):
        synthesize(_call("hoot"), duration_s=1, sample_rate=22050, channels=1, seed=1)
