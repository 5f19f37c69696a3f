"""Audio front end: 48 kHz mono waveforms -> HTS-AT log-mel input (B, 1, T, F), in torch.

The real parameters reproduce `transformers.ClapFeatureExtractor` with `truncation="rand_trunc"`
(the unfused CLAP path): Hann window (periodic), centred reflect-padded STFT, power spectrum,
Slaney-scale mel filters with Slaney area normalisation, 10 * log10(max(mel, 1e-10)), and
`max_samples // hop_length + 1` frames. A clip longer than `max_length_s` is cropped (at its
start, at random, or onset-aligned) and a shorter one filled by the `short_clip` setting (`pad`:
silence, as the official BioVITA extractor; `repeat`; `repeatpad`: CLAP's whole repeats, then
silence) before the STFT, by the loader's rules (`biovita_data.loader.audio.fit_clip`: the one
place they are written). The STFT is batched: one `torch.stft` per batch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from biovita_data.loader.audio import SHORT_CLIPS, fit_clip

Crop = Literal["start", "random", "onset"]
MEL_FLOOR = 1e-10  # the extractor's mel floor before the dB conversion


@dataclass(frozen=True)
class FrontendConfig:
    """STFT / mel parameters of the audio front end (stored in the tower config JSON)."""

    sample_rate: int = 48_000
    max_length_s: int = 10
    n_fft: int = 1024
    hop_length: int = 480
    n_mels: int = 64
    f_min: float = 50.0
    f_max: float = 14_000.0
    short_clip: str = "repeatpad"  # pad | repeat | repeatpad: how a clip under 10 s is filled

    def __post_init__(self) -> None:
        if not isinstance(self.max_length_s, int) or isinstance(self.max_length_s, bool):
            raise ValueError(f"max_length_s must be an integer, not {self.max_length_s!r}")
        if self.short_clip not in SHORT_CLIPS:
            raise ValueError(f"short_clip must be one of {SHORT_CLIPS}, not {self.short_clip!r}")
        if not 0 <= self.f_min < self.f_max <= self.sample_rate / 2:
            raise ValueError(f"need 0 <= f_min < f_max <= sample_rate / 2: {self}")
        if self.hop_length <= 0 or self.n_fft <= 0 or self.n_mels <= 0:
            raise ValueError(f"n_fft, hop_length and n_mels must be positive: {self}")

    @property
    def max_samples(self) -> int:
        """Samples in one clip (sample_rate * max_length_s)."""
        return self.sample_rate * self.max_length_s

    @property
    def n_frames(self) -> int:
        """Frames per clip: max_samples // hop_length + 1 (centred STFT)."""
        return self.max_samples // self.hop_length + 1

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FrontendConfig:
        """Build from a JSON dict, rejecting unknown keys (`padding`: short_clip's older name)."""
        d = dict(d)
        if "padding" in d:
            d.setdefault("short_clip", d.pop("padding"))
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown front end keys: {sorted(unknown)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        """As a JSON-ready dict."""
        return asdict(self)

    def extractor_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the equivalent `transformers.ClapFeatureExtractor`."""
        return {
            "feature_size": self.n_mels,
            "sampling_rate": self.sample_rate,
            "hop_length": self.hop_length,
            "max_length_s": self.max_length_s,
            "fft_window_size": self.n_fft,
            "frequency_min": self.f_min,
            "frequency_max": self.f_max,
            "truncation": "rand_trunc",
            "padding": self.short_clip,
        }


def mel_filters(cfg: FrontendConfig) -> torch.Tensor:
    """The extractor's Slaney mel filter bank, (n_fft // 2 + 1, n_mels), float32."""
    from transformers.audio_utils import mel_filter_bank

    fb = mel_filter_bank(
        num_frequency_bins=cfg.n_fft // 2 + 1,
        num_mel_filters=cfg.n_mels,
        min_frequency=cfg.f_min,
        max_frequency=cfg.f_max,
        sampling_rate=cfg.sample_rate,
        norm="slaney",
        mel_scale="slaney",
    )
    return torch.from_numpy(fb).float()


def _lengths(wave: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    if wave.ndim != 2:
        raise ValueError(
            f"expected a (batch, samples) waveform batch, got shape {tuple(wave.shape)}"
        )
    full = torch.full((wave.shape[0],), wave.shape[1], dtype=torch.long, device=wave.device)
    if lengths is None:
        return full
    lengths = torch.as_tensor(lengths, dtype=torch.long, device=wave.device)
    if lengths.shape != full.shape or (lengths < 1).any() or (lengths > full).any():
        raise ValueError("lengths must be one value in 1..samples per waveform")
    return lengths


def fit_length(
    wave: torch.Tensor,
    n: int,
    *,
    lengths: torch.Tensor | None = None,
    crop: Crop = "start",
    short_clip: str = "repeatpad",
    sample_rate: int = 48_000,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Crop clips longer than n samples and fill shorter ones by `short_clip`: (B, n), each row
    by the loader's rule (`fit_clip`); `random` crops draw u from `generator`."""
    lens = _lengths(wave, lengths)
    if short_clip not in SHORT_CLIPS:
        raise ValueError(f"short_clip must be one of {SHORT_CLIPS}, not {short_clip!r}")
    if crop not in ("start", "random", "onset"):
        raise ValueError(f"crop must be 'start', 'random' or 'onset', not {crop!r}")
    if lengths is None and wave.shape[1] == n and crop != "onset":
        return wave
    u = [0.0] * len(lens)
    if crop == "random":  # no draw otherwise: the global stream stays as it was
        u = torch.rand(lens.shape, generator=generator, device="cpu").tolist()
    rows = wave.detach().to("cpu", torch.float32).numpy()
    out = np.stack(
        [
            fit_clip(rows[b, :k], n, mode=crop, u=u[b], rate=sample_rate, short_clip=short_clip)[0]
            for b, k in enumerate(lens.tolist())
        ]
    )
    return torch.from_numpy(out).to(wave.device, wave.dtype)


class AudioFrontend(nn.Module):
    """Waveforms (B, samples) at the configured rate -> log-mel (B, 1, n_frames, n_mels)."""

    def __init__(self, cfg: FrontendConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.register_buffer(
            "window", torch.hann_window(cfg.n_fft, periodic=True), persistent=False
        )
        self.register_buffer("mel_fb", mel_filters(cfg), persistent=False)

    def forward(
        self,
        wave: torch.Tensor,
        lengths: torch.Tensor | None = None,
        *,
        crop: Crop = "start",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Fit each clip to max_length_s (crop / pad), then the batched log-mel spectrogram."""
        cfg = self.cfg
        x = fit_length(
            wave.float(),
            cfg.max_samples,
            lengths=lengths,
            crop=crop,
            short_clip=cfg.short_clip,
            sample_rate=cfg.sample_rate,
            generator=generator,
        )
        return self.log_mel(x)

    def log_mel(self, x: torch.Tensor) -> torch.Tensor:
        """Log-mel of whole waveforms (B, samples), as they are: (B, 1, samples // hop + 1, F)."""
        cfg = self.cfg
        spec = torch.stft(
            x,
            n_fft=cfg.n_fft,
            hop_length=cfg.hop_length,
            win_length=cfg.n_fft,
            window=self.window,
            center=True,
            pad_mode="reflect",
            onesided=True,
            return_complex=True,
        )
        power = torch.view_as_real(spec).square().sum(-1)  # (B, n_freq, T)
        mel = torch.matmul(power.transpose(1, 2), self.mel_fb)  # (B, T, n_mels)
        return (10.0 * torch.log10(mel.clamp(min=MEL_FLOOR))).unsqueeze(1)


def max_frames(spec_size: int, num_mel_bins: int) -> int:
    """The most frames HTS-AT accepts: spec_size * (spec_size // num_mel_bins)."""
    return spec_size * (spec_size // num_mel_bins)


def check_frontend(cfg: FrontendConfig, spec_size: int, num_mel_bins: int) -> None:
    """Raise ValueError when the front end's output does not fit the HTS-AT input."""
    if cfg.n_mels != num_mel_bins:
        raise ValueError(f"front end has {cfg.n_mels} mel bins, the audio tower {num_mel_bins}")
    limit = max_frames(spec_size, num_mel_bins)
    if cfg.n_frames > limit:
        raise ValueError(
            f"front end gives {cfg.n_frames} frames, HTS-AT accepts at most {limit} "
            f"(spec_size {spec_size}, {num_mel_bins} mel bins): raise hop_length"
        )


def augment_mel(
    mel: torch.Tensor,
    *,
    gain_db: float = 6.0,
    max_mask: float = 0.1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Training augmentation of a log-mel batch: a random gain (+-gain_db) and one time mask."""
    b, _, t, _ = mel.shape
    rand = torch.rand((3, b), generator=generator, device="cpu").to(mel.device)
    gain = (rand[0] * 2 - 1) * gain_db
    width = (rand[1] * max_mask * t).long()
    start = (rand[2] * (t - width + 1).to(rand.dtype)).long()
    pos = torch.arange(t, device=mel.device)
    masked = (pos[None, :] >= start[:, None]) & (pos[None, :] < (start + width)[:, None])
    out = mel + gain.view(b, 1, 1, 1).to(mel.dtype)
    fill = out.mean(dim=(1, 2, 3), keepdim=True)
    return torch.where(masked.view(b, 1, t, 1), fill, out)
