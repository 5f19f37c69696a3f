"""BioVITAModel: HTS-AT audio + adapter aligned to open_clip image and text towers; checkpoints.

Checkpoint format (a run folder `RUN/`):

- `RUN/config.json`: `{"format": "biovita-model", "format_version": 1, "towers": <spec>,
  "tower_config": <TowerConfig.to_dict()>, "logit_scale_init": ..., "max_logit_scale": ...,
  "frozen": [...], "biovita_version": ..., "extra": {...}}`. The tower config holds the open_clip
  model_cfg + preprocess_cfg, the HTS-AT config and the front end, so the architecture is rebuilt
  without the folders it first came from.
- `RUN/model.pt`: `torch.save` of the model's state dict (keys `clip.*`, `audio.*`,
  `audio_adapter.weight`, `log_logit_scales.<pair>`) less the towers that config.json
  `"references"` (format 2): a tower loaded from a weights file (a folder's, or a Hub repo's at
  its resolved commit) and never trained since is not copied, only named
  (`{"image": {"path", "size", "mtime_ns", "sha256"} or {"repo_id", "commit", "filename", ...}}`),
  and `load_model` reads it back from there (checking the file's hash). Read back with
  `weights_only=True`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from biovita_data.core.tables import atomic_path
from biovita_model.audio_frontend import AudioFrontend, Crop
from biovita_model.towers import (
    AbsentTower,
    TowerConfig,
    Towers,
    create_towers,
    hub_file,
    load_clap_audio,
    load_open_clip_weights,
    read_state_dict,
    towers_from_config,
)

PAIRS = ("audio_text", "audio_image", "image_text")
PARTS = ("audio", "image", "text")
CHECKPOINT_FORMAT = "biovita-model"
CHECKPOINT_VERSION = 2
# which weights source holds each tower: open_clip's file both image and text, CLAP's the audio
PART_SOURCE = {"image": "open_clip", "text": "open_clip", "audio": "audio"}
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
        # towers whose weights are still those of a file (not trained since): saved by reference
        self.references: dict[str, dict[str, Any]] = {
            part: dict(towers.sources[src])
            for part, src in PART_SOURCE.items()
            if src in towers.sources
        }
        absent = isinstance(getattr(self.clip, "visual", None), AbsentTower)
        if absent and "image" not in self.references:
            raise ValueError("the image tower can only be left out when it comes from a file")

    # ---- encoders ------------------------------------------------------------------------

    @property
    def embed_dim(self) -> int:
        """Width of the shared space."""
        return self.tower_config.embed_dim

    @property
    def device(self) -> torch.device:
        """Where the parameters are."""
        return self.audio_adapter.weight.device

    @property
    def short_clip(self) -> str:
        """How the front end fills a clip shorter than its window (pad, repeat or repeatpad)."""
        return self.frontend.cfg.short_clip

    def set_short_clip(self, short_clip: str) -> None:
        """Fill short clips by `short_clip` from now on (kept in the run's config.json)."""
        self.frontend.cfg = replace(self.frontend.cfg, short_clip=short_clip)
        self.tower_config.frontend["short_clip"] = short_clip

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

    def forget_trained_references(self) -> None:
        """Towers about to train are saved in full from now on (their file no longer holds them)."""
        for part in list(self.references):
            if any(p.requires_grad for p in self.part_parameters(part)):
                del self.references[part]

    def stored_state_dict(self) -> dict[str, torch.Tensor]:
        """The state dict less the referenced towers' keys (what model.pt holds), on CPU."""
        return {
            k: v.detach().cpu()
            for k, v in self.state_dict().items()
            if part_of_key(k) not in self.references
        }

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters with requires_grad."""
        return [p for p in self.parameters() if p.requires_grad]

    def image_transforms(
        self, **kwargs: Any
    ) -> tuple[Callable[[Any], torch.Tensor], Callable[[Any], torch.Tensor]]:
        """(train, eval) image transforms for this model's image tower (see image_transforms)."""
        return image_transforms(dict(self.tower_config.open_clip["preprocess_cfg"]), **kwargs)


def part_of_key(key: str) -> str | None:
    """The tower a state-dict key belongs to (`image`, `text`, `audio`); None: adapter, scales."""
    if key.startswith("clip.visual."):
        return "image"
    if key.startswith("clip."):
        return "text"
    if key.startswith("audio."):
        return "audio"
    return None


def create_model(
    spec: str,
    *,
    load_weights: bool = True,
    audio_tower: str | None = None,
    audio: str | None = None,
    skip_image: bool = False,
    **kwargs: Any,
) -> BioVITAModel:
    """Towers from `spec` (`tiny`, `local-dir:PATH`, `hf-hub:ORG/NAME`) in a BioVITAModel."""
    towers = create_towers(
        spec,
        load_weights=load_weights,
        audio_tower=audio_tower,
        audio=audio,
        skip_image=skip_image,
    )
    return BioVITAModel(towers, **kwargs)


# ---- checkpoints -------------------------------------------------------------------------


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write path through `write` on a temporary file beside it, then rename (never half a file)."""
    with atomic_path(path) as tmp:
        write(tmp)


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, read in 8 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()


def _pin(source: dict[str, Any]) -> dict[str, Any]:
    """A reference that names its file exactly: a Hub commit, or a local file's size and hash
    (hashed once per file version: kept while size and mtime stay)."""
    if "repo_id" in source:
        return {k: v for k, v in source.items() if k != "path"}
    path = Path(source["path"]).resolve()
    st = path.stat()
    if source.get("size") != st.st_size or source.get("mtime_ns") != st.st_mtime_ns:
        source.update(size=st.st_size, mtime_ns=st.st_mtime_ns, sha256=file_sha256(path))
    return {**source, "path": str(path)}


def reference_file(source: dict[str, Any]) -> Path:
    """The weights file of a reference, checked to be the one referenced."""
    if "repo_id" in source:
        return hub_file(source)
    path = Path(source["path"])
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the referenced tower weights are gone")
    st = path.stat()
    same_stat = (st.st_size, st.st_mtime_ns) == (source.get("size"), source.get("mtime_ns"))
    if not same_stat and (
        st.st_size != source.get("size") or file_sha256(path) != source.get("sha256")
    ):
        raise ValueError(f"{path}: the referenced tower weights changed since the run")
    return path


def save_model(
    model: BioVITAModel,
    run_dir: Path,
    extra: dict[str, Any] | None = None,
    *,
    embed_towers: bool = False,
) -> Path:
    """Write RUN/model.pt (the state dict less referenced towers) and RUN/config.json;
    `embed_towers` copies every tower into model.pt (a run that stands alone)."""
    from biovita_model import __version__

    run_dir = Path(run_dir)
    if embed_towers:
        if isinstance(getattr(model.clip, "visual", None), AbsentTower):
            raise ValueError("the image tower was left out: it cannot be embedded")
        model.references.clear()
    references = {part: _pin(src) for part, src in model.references.items()}
    doc = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "towers": model.spec,
        "tower_config": model.tower_config.to_dict(),
        "logit_scale_init": model.logit_scale_init,
        "max_logit_scale": model.max_logit_scale,
        "frozen": sorted(model.frozen),
        "references": references,
        "biovita_version": __version__,
        "extra": extra or {},
    }
    state = model.stored_state_dict()
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


def _load_references(model: BioVITAModel, references: dict[str, dict[str, Any]]) -> set[str]:
    """Load each referenced file once into the model; the parts it covered."""
    done: dict[str, Path] = {}
    for part, source in references.items():
        if part == "image" and isinstance(getattr(model.clip, "visual", None), AbsentTower):
            continue
        kind = PART_SOURCE[part]
        if kind in done:
            continue
        path = reference_file(source)
        if kind == "open_clip":
            load_open_clip_weights(model.clip, path)
        else:
            load_clap_audio(model.audio, read_state_dict(path))
        done[kind] = path
    return set(references)


def load_model(
    run_dir: Path, *, map_location: str | torch.device = "cpu", skip_image: bool = False
) -> BioVITAModel:
    """Rebuild a BioVITAModel saved by save_model: architecture from config.json, the
    referenced towers from their files, then model.pt. `skip_image` leaves a referenced image
    tower out (an AbsentTower: Stage 1 never uses it)."""
    run_dir = Path(run_dir)
    doc = read_run_config(run_dir)
    references = dict(doc.get("references") or {})
    skip_image = skip_image and "image" in references
    towers = towers_from_config(doc["tower_config"], spec=doc["towers"], skip_image=skip_image)
    towers.sources = {PART_SOURCE[p]: dict(src) for p, src in references.items()}
    model = BioVITAModel(
        towers,
        logit_scale_init=float(doc.get("logit_scale_init", 1 / 0.07)),
        max_logit_scale=float(doc.get("max_logit_scale", 100.0)),
    )
    covered = _load_references(model, references)
    state = torch.load(run_dir / WEIGHTS_FILE, map_location=map_location, weights_only=True)
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if part_of_key(k) not in covered]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{run_dir}/{WEIGHTS_FILE} does not fit its config: missing {missing[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    frozen = set(doc.get("frozen", []))
    if frozen:
        model.freeze(image="image" in frozen, text="text" in frozen, audio="audio" in frozen)
    return model
