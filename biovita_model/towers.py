"""The three towers: HTS-AT audio (transformers) and open_clip image + text, from a spec string.

Specs:

- `tiny`: `configs/tiny.json`, an open_clip config registered as `BioVITA-tiny`
  (`configs/open_clip/`) and a small HTS-AT; random weights.
- `local-dir:PATH`: an open_clip model folder (`open_clip_config.json` + weights, as
  `hf-hub:imageomics/bioclip-2` ships) and, optionally, `PATH/clap/`: a transformers CLAP folder
  (`config.json` + `model.safetensors` or `pytorch_model.bin`, e.g. laion/clap-htsat-unfused).
  Without `clap/` the audio tower is the HTS-AT unfused architecture of
  `configs/htsat-unfused.json`, randomly initialised. The front end always comes from that file.

Nothing is ever downloaded. Every tower set resolves to a JSON-able `TowerConfig`, which a run's
checkpoint stores so that it can be rebuilt without the original folders.
"""

from __future__ import annotations

import copy
import json
import logging
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import open_clip
import torch
from torch import nn
from transformers import ClapAudioConfig, ClapAudioModelWithProjection, ClapConfig

from biovita_model.audio_frontend import FrontendConfig, check_frontend

CONFIG_DIR = Path(__file__).parent / "configs"
OPEN_CLIP_CONFIG_DIR = CONFIG_DIR / "open_clip"
LOCAL_DIR = "local-dir:"
OPEN_CLIP_WEIGHTS = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
)
CLAP_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
CLAP_AUDIO_PREFIXES = ("audio_model.", "audio_projection.")
# Buffers that a checkpoint may leave out: rebuilt from the config or harmless.
_DERIVED_BUFFERS = ("relative_position_index", "num_batches_tracked")

Tokenizer = Callable[..., torch.Tensor]
log = logging.getLogger(__name__)
_registered = False


def register_open_clip_configs() -> None:
    """Register this package's open_clip model configs (`BioVITA-tiny`) once."""
    global _registered
    if not _registered:
        open_clip.add_model_config(OPEN_CLIP_CONFIG_DIR)
        _registered = True


def read_config(name: str) -> dict[str, Any]:
    """A tower config JSON shipped in `biovita_model/configs/` (by stem)."""
    path = CONFIG_DIR / f"{name}.json"
    if not path.is_file():
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.json"))
        raise ValueError(f"no tower config {name!r} (known: {known})")
    return json.loads(path.read_text())


@dataclass
class TowerConfig:
    """Everything needed to rebuild the towers' architecture (no weights), as JSON data."""

    name: str
    embed_dim: int
    open_clip: dict[str, Any]  # {"model_cfg": ..., "preprocess_cfg": ...}
    audio: dict[str, Any]  # ClapAudioConfig keyword arguments
    frontend: dict[str, Any]  # FrontendConfig fields
    tokenizer_dir: str | None = None  # an HF tokenizer's folder, when open_clip uses one

    def to_dict(self) -> dict[str, Any]:
        """As a JSON-ready dict."""
        return {
            "name": self.name,
            "embed_dim": self.embed_dim,
            "open_clip": self.open_clip,
            "audio": self.audio,
            "frontend": self.frontend,
            "tokenizer_dir": self.tokenizer_dir,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TowerConfig:
        """From `to_dict`'s output."""
        return cls(
            name=d["name"],
            embed_dim=int(d["embed_dim"]),
            open_clip=copy.deepcopy(dict(d["open_clip"])),
            audio=copy.deepcopy(dict(d["audio"])),
            frontend=copy.deepcopy(dict(d["frontend"])),
            tokenizer_dir=d.get("tokenizer_dir"),
        )


@dataclass
class Towers:
    """The built towers: open_clip model (image + text), tokenizer, HTS-AT audio model."""

    spec: str
    config: TowerConfig
    clip: nn.Module
    tokenizer: Tokenizer
    audio: ClapAudioModelWithProjection
    frontend: FrontendConfig
    sources: dict[str, str] = field(default_factory=dict)  # what weights were loaded from

    @property
    def embed_dim(self) -> int:
        """Width of the shared embedding space."""
        return self.config.embed_dim

    @property
    def audio_dim(self) -> int:
        """Width of the audio tower's projection (the adapter's input)."""
        return int(self.audio.config.projection_dim)

    @property
    def preprocess_cfg(self) -> dict[str, Any]:
        """open_clip's image preprocessing config (size, mean, std, interpolation, ...)."""
        return dict(self.config.open_clip["preprocess_cfg"])


def _audio_kwargs(cfg: ClapAudioConfig) -> dict[str, Any]:
    """The architecture-defining keys of a ClapAudioConfig, JSON-ready."""
    keys = set(read_config("htsat-unfused")["audio"]) | {"initializer_factor"}
    d = cfg.to_dict()
    out = {k: d[k] for k in sorted(keys) if k in d}
    return json.loads(json.dumps(out))


def clap_audio_config(d: Mapping[str, Any]) -> ClapAudioConfig:
    """A ClapAudioConfig from keyword arguments; fused models are refused."""
    cfg = ClapAudioConfig(**dict(d))
    if cfg.enable_fusion:
        raise ValueError("fused CLAP audio models are not supported (use an unfused HTS-AT)")
    return cfg


def clap_audio_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The `ClapAudioModelWithProjection` part of a `ClapModel` state dict.

    ClapModel and ClapAudioModelWithProjection name the audio parts alike (`audio_model.*`,
    `audio_projection.*`), so the mapping keeps those keys and drops the text tower and the logit
    scales; a `module.` (DDP) or `clap.` prefix is removed first.
    """
    out = {}
    for key, value in state.items():
        k = key
        for prefix in ("module.", "clap."):
            if k.startswith(prefix):
                k = k[len(prefix) :]
        if k.startswith(CLAP_AUDIO_PREFIXES):
            out[k] = value
    if not out:
        raise ValueError("no audio_model.* / audio_projection.* keys: not a CLAP state dict")
    return out


def load_clap_audio(model: ClapAudioModelWithProjection, state: Mapping[str, torch.Tensor]) -> None:
    """Load a ClapModel (or audio-only) state dict into the audio tower; strict on weights."""
    result = model.load_state_dict(clap_audio_state_dict(state), strict=False)
    missing = [k for k in result.missing_keys if not k.endswith(_DERIVED_BUFFERS)]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"CLAP audio weights do not fit the audio tower: missing {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected {result.unexpected_keys[:5]}"
        )


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors or a torch file (weights only, on CPU)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return state


def _clap_folder(path: Path) -> tuple[ClapAudioConfig, Path | None]:
    """The audio config and weights file of a transformers CLAP folder."""
    raw = json.loads((path / "config.json").read_text())
    if raw.get("model_type") == "clap":
        audio = ClapConfig.from_dict(raw).audio_config
    elif raw.get("model_type") == "clap_audio_model":
        audio = ClapAudioConfig.from_dict(raw)
    else:
        raise ValueError(
            f"{path}/config.json: not a CLAP config (model_type {raw.get('model_type')})"
        )
    if audio.enable_fusion:
        raise ValueError(f"{path}: fused CLAP models are not supported (use an unfused HTS-AT)")
    weights = next((path / n for n in CLAP_WEIGHTS if (path / n).is_file()), None)
    return audio, weights


class _NoWeightsNotice(logging.Filter):
    """Drops open_clip's "no weights loaded" warnings: here the weights come later, on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not msg.startswith(("No pretrained weights loaded", "Local config loaded, but no"))


def _create_clip(name: str, tokenizer_name: str | None = None) -> tuple[nn.Module, Tokenizer]:
    """An open_clip model (architecture only) and tokenizer by name or `local-dir:`, offline."""
    root, notice = logging.getLogger(), _NoWeightsNotice()
    root.addFilter(notice)
    try:
        model = open_clip.create_model(
            name, load_weights=False, pretrained_image=False, pretrained_text=False
        )
    finally:
        root.removeFilter(notice)
    return model, open_clip.get_tokenizer(tokenizer_name or name)


def _clip_from_cfg(
    open_clip_cfg: Mapping[str, Any], tokenizer_dir: str | None
) -> tuple[nn.Module, Tokenizer]:
    """An open_clip model (random weights) and tokenizer from a stored model_cfg, offline."""
    tok = f"{LOCAL_DIR}{tokenizer_dir}" if tokenizer_dir else None
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "open_clip_config.json").write_text(json.dumps(dict(open_clip_cfg)))
        return _create_clip(f"{LOCAL_DIR}{tmp}", tok)


def _open_clip_weights(path: Path) -> Path:
    found = next((path / n for n in OPEN_CLIP_WEIGHTS if (path / n).is_file()), None)
    if found is None:
        raise FileNotFoundError(f"{path}: no open_clip weights (one of {list(OPEN_CLIP_WEIGHTS)})")
    return found


def _preprocess_cfg(model: nn.Module) -> dict[str, Any]:
    cfg = open_clip.get_model_preprocess_cfg(model)
    return json.loads(json.dumps(cfg))


def _tiny() -> Towers:
    raw = read_config("tiny")
    name = raw["open_clip"]["name"]
    register_open_clip_configs()
    clip, tokenizer = _create_clip(name)
    oc = {"model_cfg": open_clip.get_model_config(name), "preprocess_cfg": _preprocess_cfg(clip)}
    audio_cfg = clap_audio_config(raw["audio"])
    cfg = TowerConfig(
        name="tiny",
        embed_dim=int(raw["embed_dim"]),
        open_clip=oc,
        audio=_audio_kwargs(audio_cfg),
        frontend=dict(raw["frontend"]),
    )
    return _finish("tiny", cfg, clip, tokenizer, ClapAudioModelWithProjection(audio_cfg), {})


def _local_dir(path: Path, load_weights: bool, audio_name: str | None, use_clap: bool) -> Towers:
    if not (path / "open_clip_config.json").is_file():
        raise FileNotFoundError(f"{path}: no open_clip_config.json (an open_clip model folder)")
    spec = f"{LOCAL_DIR}{path}"
    clip, tokenizer = _create_clip(spec)
    sources: dict[str, str] = {}
    if load_weights:
        weights = _open_clip_weights(path)
        open_clip.load_checkpoint(clip, str(weights), strict=True)
        sources["open_clip"] = str(weights)
    model_cfg = json.loads((path / "open_clip_config.json").read_text())["model_cfg"]
    hf_tok = "hf_tokenizer_name" in model_cfg.get("text_cfg", {})
    base = read_config(audio_name or "htsat-unfused")
    clap_dir = path / "clap"
    if use_clap and (clap_dir / "config.json").is_file():
        audio_cfg, clap_weights = _clap_folder(clap_dir)
        audio = ClapAudioModelWithProjection(audio_cfg)
        if load_weights:
            if clap_weights is None:
                raise FileNotFoundError(f"{clap_dir}: no weights (one of {list(CLAP_WEIGHTS)})")
            load_clap_audio(audio, read_state_dict(clap_weights))
            sources["audio"] = str(clap_weights)
    else:
        audio_cfg = clap_audio_config(base["audio"])
        audio = ClapAudioModelWithProjection(audio_cfg)
        log.info("%s: HTS-AT audio tower %r from random weights", path, base["name"])
    cfg = TowerConfig(
        name=spec,
        embed_dim=int(model_cfg["embed_dim"]),
        open_clip={"model_cfg": model_cfg, "preprocess_cfg": _preprocess_cfg(clip)},
        audio=_audio_kwargs(audio_cfg),
        frontend=dict(base["frontend"]),
        tokenizer_dir=str(path) if hf_tok else None,
    )
    return _finish(spec, cfg, clip, tokenizer, audio, sources)


def _finish(
    spec: str,
    cfg: TowerConfig,
    clip: nn.Module,
    tokenizer: Tokenizer,
    audio: ClapAudioModelWithProjection,
    sources: dict[str, str],
) -> Towers:
    frontend = FrontendConfig.from_dict(cfg.frontend)
    check_frontend(frontend, int(audio.config.spec_size), int(audio.config.num_mel_bins))
    return Towers(spec, cfg, clip, tokenizer, audio, frontend, sources)


def create_towers(
    spec: str, *, load_weights: bool = True, audio: str | None = None, clap_dir: bool = True
) -> Towers:
    """Build the towers named by `spec` (`tiny` or `local-dir:PATH`), offline.

    With `load_weights=False` a `local-dir:` spec builds the architecture only (a checkpoint's
    weights are loaded on top later). For `local-dir:`, `audio` names the config in `configs/`
    (default `htsat-unfused`) that gives the front end, and the HTS-AT architecture when there is
    no `PATH/clap/` folder or `clap_dir` is False (random weights).
    """
    if spec == "tiny":
        if audio not in (None, "tiny"):
            raise ValueError("the tiny towers take no audio override")
        return _tiny()
    if spec.startswith(LOCAL_DIR):
        path = Path(spec[len(LOCAL_DIR) :]).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: not a folder")
        return _local_dir(path, load_weights, audio, clap_dir)
    raise ValueError(f"unknown tower spec {spec!r}: use 'tiny' or 'local-dir:PATH'")


def towers_from_config(cfg: TowerConfig | Mapping[str, Any], spec: str = "") -> Towers:
    """Rebuild the towers' architecture (random weights) from a stored TowerConfig."""
    if not isinstance(cfg, TowerConfig):
        cfg = TowerConfig.from_dict(cfg)
    clip, tokenizer = _clip_from_cfg(cfg.open_clip, cfg.tokenizer_dir)
    open_clip.model.set_model_preprocess_cfg(clip, dict(cfg.open_clip["preprocess_cfg"]))
    audio = ClapAudioModelWithProjection(clap_audio_config(cfg.audio))
    return _finish(spec or cfg.name, cfg, clip, tokenizer, audio, {})
