"""The front end against the official BioVITA extractor's documented front end (48 kHz mono, 64
mel bins, window 1024, hop 480, 50-14,000 Hz, 10 s from 0.2 s before the first sample above 1 %
of the peak, shorter clips padded with silence): the same input tensors, short and long clips."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from biovita_data.loader.audio import decode_clip, fill_short, window_start  # noqa: E402
from biovita_data.sample.published_folder import encode_audio  # noqa: E402
from biovita_model.audio_frontend import AudioFrontend, FrontendConfig  # noqa: E402
from biovita_model.towers import read_config  # noqa: E402

SR = 48_000


def official_features(x: np.ndarray) -> np.ndarray:
    """The official front end from its documented parameters: (1001, 64) log-mel."""
    mag = np.abs(x)
    first = int(np.flatnonzero(mag > 0.01 * mag.max())[0])
    start = max(0, first - round(0.2 * SR))
    clip = x[start : start + 10 * SR]
    clip = np.concatenate([clip, np.zeros(10 * SR - clip.size, np.float32)])  # silence
    extractor = transformers.ClapFeatureExtractor(
        feature_size=64, sampling_rate=SR, hop_length=480, max_length_s=10, fft_window_size=1024,
        frequency_min=50, frequency_max=14_000, truncation="rand_trunc", padding="pad",
    )  # fmt: skip
    out = extractor(clip, sampling_rate=SR, return_tensors="np")["input_features"]
    return np.asarray(out, dtype=np.float32).reshape(-1, 64)


def call(seconds: float, onset_s: float, seed: int) -> np.ndarray:
    """A noisy tone after onset_s of near-silence, float32 mono at 48 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * SR)) / SR
    x = 0.4 * np.sin(2 * np.pi * 2_000 * t) + 0.05 * rng.standard_normal(t.size)
    x[: round(onset_s * SR)] *= 0.001
    return x.astype(np.float32)


@pytest.mark.parametrize(("seconds", "onset_s"), [(3.5, 0.5), (13.0, 2.0)])
def test_front_end_matches_the_official_extractor(seconds: float, onset_s: float) -> None:
    cfg = FrontendConfig.from_dict(read_config("htsat-unfused")["frontend"])
    assert (cfg.sample_rate, cfg.n_mels, cfg.n_fft, cfg.hop_length) == (SR, 64, 1024, 480)
    assert (cfg.f_min, cfg.f_max, cfg.max_length_s) == (50.0, 14_000.0, 10)
    pad = dataclasses.replace(cfg, short_clip="pad")
    x = call(seconds, onset_s, seed=int(seconds))
    want = official_features(x)
    frontend = AudioFrontend(pad)
    # the path of embed / eval: decoded from a file, onset crop, filled by short_clip
    clip = decode_clip(encode_audio(x, SR, "wav"), mode="onset", short_clip="pad")
    got = frontend.log_mel(torch.from_numpy(clip.samples)[None])[0, 0].numpy()
    # the model's own path from a waveform (encode_audio / audio_features)
    direct = frontend(torch.from_numpy(x)[None], crop="onset")[0, 0].numpy()
    assert got.shape == direct.shape == want.shape == (1001, 64)
    # 16-bit WAV quantisation and float32 vs float64 STFT: well under a dB on loud bins
    loud = want > want.max() - 60
    assert np.abs(got - want)[loud].max() < 0.5
    assert np.abs(direct - want).max() < 1e-3
    repeat = AudioFrontend(dataclasses.replace(cfg, short_clip="repeat"))
    rep = repeat(torch.from_numpy(x)[None], crop="onset")[0, 0].numpy()
    if seconds < 10:  # repeating a short clip is not what the extractor does
        assert np.abs(rep - want).max() > 10
    else:
        assert np.abs(rep - want).max() < 1e-3


def test_short_clip_rules_live_in_one_place() -> None:
    x = np.arange(1, 4, dtype=np.float32)
    assert fill_short(x, 8, "pad").tolist() == [1, 2, 3, 0, 0, 0, 0, 0]
    assert fill_short(x, 8, "repeat").tolist() == [1, 2, 3, 1, 2, 3, 1, 2]
    assert fill_short(x, 8, "repeatpad").tolist() == [1, 2, 3, 1, 2, 3, 0, 0]
    with pytest.raises(ValueError, match="short_clip"):
        fill_short(x, 8, "loop")
    sig = np.zeros(3 * SR, np.float32)
    sig[SR + 7] = 1.0
    assert window_start(sig.size, SR, "onset", x=sig, rate=SR) == SR + 7 - round(0.2 * SR)
    assert window_start(10, 4, "random", u=0.999) == 6 and window_start(10, 4, "start") == 0
    # an older run's config names the setting `padding`
    assert FrontendConfig.from_dict({"padding": "pad"}).short_clip == "pad"
