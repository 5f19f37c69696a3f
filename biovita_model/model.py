"""BioVITAModel: HTS-AT audio + adapter aligned to open_clip image and text towers; checkpoints.

Checkpoint format (a run folder `RUN/`):

- `RUN/config.json`: `{"format": "biovita-model", "format_version": 1, "towers": <spec>,
  "tower_config": <TowerConfig.to_dict()>, "logit_scale_init": ..., "max_logit_scale": ...,
  "frozen": [...], "biovita_version": ..., "extra": {...}}`. The tower config holds the open_clip
  model_cfg + preprocess_cfg, the HTS-AT config and the front end, so the architecture is rebuilt
  without the folders it first came from.
- `RUN/model.pt`: `torch.save` of `model.state_dict()` (keys `clip.*`, `audio.*`,
  `audio_adapter.weight`, `log_logit_scales.<pair>`); read back with `weights_only=True`.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from biovita_model.audio_frontend import AudioFrontend, Crop
from biovita_model.towers import TowerConfig, Towers, create_towers, towers_from_config

PAIRS = ("audio_text", "audio_image", "image_text")
PARTS = ("audio", "image", "text")
CHECKPOINT_FORMAT = "biovita-model"
CHECKPOINT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.pt"


class GaussianNoise(nn.Module):
    """Adds N(0, std^2) noise to an image tensor (before normalisation)."""

    def __init__(self, std: float = 0.03) -> None:
        super().__init__()
        self.std = std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x + noise, clipped to [0, 1]."""
        return (x + torch.randn_like(x) * self.std).clamp(0.0, 1.0)


def _to_rgb(image: Any) -> Any:
    """PIL image -> RGB (a module-level function: transforms must pickle for data workers)."""
    return image.convert("RGB")


def image_transforms(
    preprocess_cfg: dict[str, Any],
    *,
    scale: tuple[float, float] = (0.8, 1.0),
    brightness: float = 0.3,
    noise_std: float = 0.03,
) -> tuple[Callable[[Any], torch.Tensor], Callable[[Any], torch.Tensor]]:
    """(train, eval) PIL -> tensor transforms from open_clip's preprocess config.

    Eval is open_clip's plain resize + centre crop + normalise. Train adds light augmentation:
    small shifts / zoom (random resized crop, aspect 0.9-1.1), brightness jitter, pixel noise.
    """
    from open_clip.transform import PreprocessCfg, image_transform_v2
    from torchvision import transforms as T

    pp = PreprocessCfg(**preprocess_cfg)
    eval_tf = image_transform_v2(pp, is_train=False)
    size = pp.size if isinstance(pp.size, int) else tuple(pp.size)
    mode = (
        T.InterpolationMode.BILINEAR
        if pp.interpolation == "bilinear"
        else T.InterpolationMode.BICUBIC
    )
    train_tf = T.Compose(
        [
            _to_rgb,
            T.RandomResizedCrop(size, scale=scale, ratio=(0.9, 1.1), interpolation=mode),
            T.ColorJitter(brightness=brightness),
            T.ToTensor(),
            GaussianNoise(noise_std),
            T.Normalize(mean=pp.mean, std=pp.std),
        ]
    )
    return train_tf, eval_tf


class BioVITAModel(nn.Module):
    """Audio, image and text encoders into one L2-normalised space, with per-pair logit scales."""

    def __init__(
        self,
        towers: Towers,
        *,
        logit_scale_init: float = 1 / 0.07,
        max_logit_scale: float = 100.0,
    ) -> None:
        super().__init__()
        self.spec = towers.spec
        self.tower_config: TowerConfig = towers.config
        self.clip = towers.clip
        self.audio = towers.audio
        self.audio_adapter = nn.Linear(towers.audio_dim, towers.embed_dim, bias=False)
        self.frontend = AudioFrontend(towers.frontend)
        self.tokenizer = towers.tokenizer
        self.logit_scale_init = float(logit_scale_init)
        self.max_logit_scale = float(max_logit_scale)
        self.log_logit_scales = nn.ParameterDict(
            {p: nn.Parameter(torch.tensor(math.log(logit_scale_init))) for p in PAIRS}
        )
        # open_clip's own scale (and bias) are not used by our losses: keep them out of training
        # (DDP would otherwise see parameters without gradients).
        for name in ("logit_scale", "logit_bias"):
            p = getattr(self.clip, name, None)
            if isinstance(p, nn.Parameter):
                p.requires_grad_(False)
        self.frozen: set[str] = set()

    # ---- encoders ------------------------------------------------------------------------

    @property
    def embed_dim(self) -> int:
        """Width of the shared space."""
        return self.tower_config.embed_dim

    @property
    def device(self) -> torch.device:
        """Where the parameters are."""
        return self.audio_adapter.weight.device

    def audio_features(
        self,
        wave: torch.Tensor,
        lengths: torch.Tensor | None = None,
        *,
        crop: Crop = "start",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Waveforms (B, samples) at the front end's rate -> HTS-AT input (B, 1, T, F)."""
        return self.frontend(wave, lengths, crop=crop, generator=generator)

    def encode_mel(self, mel: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """HTS-AT input (B, 1, T, F) -> shared-space embeddings (B, D)."""
        out = self.audio(input_features=mel)
        x = self.audio_adapter(out.audio_embeds)
        return F.normalize(x, dim=-1) if normalize else x

    def encode_audio(
        self,
        wave: torch.Tensor,
        lengths: torch.Tensor | None = None,
        *,
        crop: Crop = "start",
        normalize: bool = True,
    ) -> torch.Tensor:
        """Waveforms (B, samples) -> shared-space embeddings (B, D)."""
        return self.encode_mel(self.audio_features(wave, lengths, crop=crop), normalize)

    def encode_image(self, pixels: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Preprocessed images (B, 3, H, W) -> shared-space embeddings (B, D)."""
        return self.clip.encode_image(pixels, normalize=normalize)

    def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Token ids (B, context) -> shared-space embeddings (B, D)."""
        return self.clip.encode_text(tokens, normalize=normalize)

    def tokenize(self, texts: str | Sequence[str]) -> torch.Tensor:
        """Texts -> token ids on the model's device."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        return self.tokenizer(texts).to(self.device)

    def logit_scale(self, pair: str) -> torch.Tensor:
        """exp(learned log scale) of a pair (`audio_text`, `audio_image`, `image_text`), capped."""
        return self.log_logit_scales[pair].clamp(max=math.log(self.max_logit_scale)).exp()

    def logit_scales(self) -> dict[str, torch.Tensor]:
        """All three pair scales."""
        return {p: self.logit_scale(p) for p in PAIRS}

    def forward(
        self,
        audio: torch.Tensor | None = None,
        image: torch.Tensor | None = None,
        text: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Embeddings of the inputs given (audio as HTS-AT input (B,1,T,F)) plus the scales.

        Training code calls the model through forward (as DDP needs); audio enters as log-mel so
        the front end can run in data workers or on the device beforehand.
        """
        out: dict[str, torch.Tensor] = {}
        if audio is not None:
            out["audio"] = self.encode_mel(audio)
        if image is not None:
            out["image"] = self.encode_image(image)
        if text is not None:
            out["text"] = self.encode_text(text)
        out.update({f"scale_{p}": s for p, s in self.logit_scales().items()})
        return out

    # ---- parts, freezing -----------------------------------------------------------------

    def named_part_parameters(self, part: str) -> Iterator[tuple[str, nn.Parameter]]:
        """Parameters of one part: `audio` (tower + adapter), `image` or `text` (open_clip)."""
        if part == "audio":
            for n, p in self.audio.named_parameters():
                yield f"audio.{n}", p
            yield "audio_adapter.weight", self.audio_adapter.weight
        elif part in ("image", "text"):
            visual = getattr(self.clip, "visual", None)
            visual_ids = {id(p) for p in visual.parameters()} if visual is not None else set()
            for n, p in self.clip.named_parameters():
                if n in ("logit_scale", "logit_bias"):
                    continue
                if (id(p) in visual_ids) == (part == "image"):
                    yield f"clip.{n}", p
        else:
            raise ValueError(f"part must be one of {PARTS}, not {part!r}")

    def part_parameters(self, part: str) -> list[nn.Parameter]:
        """Parameters of one part (see named_part_parameters)."""
        return [p for _, p in self.named_part_parameters(part)]

    def freeze(self, *, image: bool = True, text: bool = True, audio: bool = False) -> None:
        """Freeze (True) or unfreeze (False) each part; frozen parts also stay in eval mode."""
        wanted = {"image": image, "text": text, "audio": audio}
        for part, frozen in wanted.items():
            for p in self.part_parameters(part):
                p.requires_grad_(not frozen)
        self.frozen = {p for p, f in wanted.items() if f}
        self.train(self.training)

    def _part_modules(self, part: str) -> list[nn.Module]:
        if part == "audio":
            return [self.audio]
        visual = getattr(self.clip, "visual", None)
        if part == "image":
            return [visual] if visual is not None else []
        return [m for n, m in self.clip.named_children() if n != "visual"]

    def train(self, mode: bool = True) -> BioVITAModel:
        """As nn.Module.train, but frozen parts stay in eval mode (dropout off, BN stats fixed)."""
        super().train(mode)
        for part in self.frozen:
            for m in self._part_modules(part):
                m.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters with requires_grad."""
        return [p for p in self.parameters() if p.requires_grad]

    def image_transforms(
        self, **kwargs: Any
    ) -> tuple[Callable[[Any], torch.Tensor], Callable[[Any], torch.Tensor]]:
        """(train, eval) image transforms for this model's image tower (see image_transforms)."""
        return image_transforms(dict(self.tower_config.open_clip["preprocess_cfg"]), **kwargs)


def create_model(spec: str, *, load_weights: bool = True, **kwargs: Any) -> BioVITAModel:
    """Towers from `spec` (`tiny`, `local-dir:PATH`) wrapped in a BioVITAModel."""
    return BioVITAModel(create_towers(spec, load_weights=load_weights), **kwargs)


# ---- checkpoints -------------------------------------------------------------------------


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write path through `write` on a temporary file beside it, then rename (never half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)  # a plain file's mode, not mkstemp's 0600
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_model(model: BioVITAModel, run_dir: Path, extra: dict[str, Any] | None = None) -> Path:
    """Write RUN/model.pt (state dict) and RUN/config.json (towers, scales); returns RUN."""
    from biovita_model import __version__

    run_dir = Path(run_dir)
    doc = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "towers": model.spec,
        "tower_config": model.tower_config.to_dict(),
        "logit_scale_init": model.logit_scale_init,
        "max_logit_scale": model.max_logit_scale,
        "frozen": sorted(model.frozen),
        "biovita_version": __version__,
        "extra": extra or {},
    }
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    write_atomic(run_dir / WEIGHTS_FILE, lambda p: torch.save(state, p))
    text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    write_atomic(run_dir / CONFIG_FILE, lambda p: p.write_text(text))
    return run_dir


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """RUN/config.json, checked to be our checkpoint format."""
    path = Path(run_dir) / CONFIG_FILE
    doc = json.loads(path.read_text())
    if doc.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a {CHECKPOINT_FORMAT} checkpoint")
    if int(doc.get("format_version", 0)) > CHECKPOINT_VERSION:
        raise ValueError(f"{path}: format_version {doc['format_version']} is newer than this code")
    return doc


def load_model(run_dir: Path, *, map_location: str | torch.device = "cpu") -> BioVITAModel:
    """Rebuild a BioVITAModel saved by save_model (architecture from config.json, then weights)."""
    run_dir = Path(run_dir)
    doc = read_run_config(run_dir)
    towers = towers_from_config(doc["tower_config"], spec=doc["towers"])
    model = BioVITAModel(
        towers,
        logit_scale_init=float(doc.get("logit_scale_init", 1 / 0.07)),
        max_logit_scale=float(doc.get("max_logit_scale", 100.0)),
    )
    state = torch.load(run_dir / WEIGHTS_FILE, map_location=map_location, weights_only=True)
    model.load_state_dict(state, strict=True)
    frozen = set(doc.get("frozen", []))
    if frozen:
        model.freeze(image="image" in frozen, text="text" in frozen, audio="audio" in frozen)
    return model
