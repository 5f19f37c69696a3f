"""The three towers: HTS-AT audio (transformers) and open_clip image + text, from a spec string.

Specs:

- `tiny`: `configs/tiny.json`, an open_clip config registered as `BioVITA-tiny`
  (`configs/open_clip/`) and a small HTS-AT; random weights.
- `local-dir:PATH`: an open_clip model folder (`open_clip_config.json` + weights, as
  `hf-hub:imageomics/bioclip-2` ships) and, optionally, `PATH/clap/`: a transformers CLAP folder
  (`config.json` + `model.safetensors` or `pytorch_model.bin`, e.g. laion/clap-htsat-unfused).
  Without `clap/` the audio tower is the HTS-AT unfused architecture of
  `configs/htsat-unfused.json`, randomly initialised. The front end always comes from that file.
- `hf-hub:ORG/NAME[@REVISION]`: the same open_clip folder from the Hugging Face Hub (open_clip's
  own naming), downloaded with `huggingface_hub` into its cache (`HF_ENDPOINT`, `HF_HUB_OFFLINE`,
  `HF_TOKEN`, `HF_HOME` apply); `@REVISION` pins a branch, tag or commit.

The audio tower may come from elsewhere (`audio_tower`): a CLAP folder (`local-dir:PATH`) or a
CLAP model repo (`ORG/NAME[@REVISION]`, e.g. `laion/clap-htsat-unfused`). Every tower set resolves
to a JSON-able `TowerConfig`, which a run's checkpoint stores so that it can be rebuilt without
the original folders; `Towers.sources` says which weights file each tower came from (a path, or
a repo id with its resolved commit), so that a run can reference frozen towers instead of copying
them.
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
HF_HUB = "hf-hub:"
OPEN_CLIP_WEIGHTS = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
)
CLAP_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
# what a hub download fetches besides one weights file: configs and tokenizer files
HUB_SMALL_FILES = ("*.json", "*.txt", "*.model")
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
    origin: dict[str, Any] = field(default_factory=dict)  # where each tower's weights came from

    def to_dict(self) -> dict[str, Any]:
        """As a JSON-ready dict."""
        return {
            "name": self.name,
            "embed_dim": self.embed_dim,
            "open_clip": self.open_clip,
            "audio": self.audio,
            "frontend": self.frontend,
            "tokenizer_dir": self.tokenizer_dir,
            "origin": self.origin,
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
            origin=copy.deepcopy(dict(d.get("origin") or {})),
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
    # the weights loaded, per tower ("open_clip", "audio"): {"path": FILE} plus, from the Hub,
    # {"repo_id", "revision", "commit", "filename"}
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)

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


class AbsentTower(nn.Module):
    """Stands for a tower this process did not build the weights of (Stage 1's image tower)."""

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Never: the tower was left out on purpose."""
        raise RuntimeError("this tower was not loaded (Stage 1 leaves the image tower out)")

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Nothing to checkpoint."""


def _open_clip_weights(path: Path) -> Path:
    found = next((path / n for n in OPEN_CLIP_WEIGHTS if (path / n).is_file()), None)
    if found is None:
        raise FileNotFoundError(f"{path}: no open_clip weights (one of {list(OPEN_CLIP_WEIGHTS)})")
    return found


def _preprocess_cfg(model: nn.Module) -> dict[str, Any]:
    cfg = open_clip.get_model_preprocess_cfg(model)
    return json.loads(json.dumps(cfg))


def load_open_clip_weights(clip: nn.Module, path: Path) -> None:
    """An open_clip weights file into `clip` (its image tower skipped when it is absent)."""
    skip = isinstance(getattr(clip, "visual", None), AbsentTower)
    result = open_clip.load_checkpoint(clip, str(path), strict=False)
    missing = [k for k in result.missing_keys if not k.endswith(_DERIVED_BUFFERS)]
    unexpected = [k for k in result.unexpected_keys if not (skip and k.startswith("visual."))]
    if missing or unexpected:
        raise ValueError(
            f"{path}: open_clip weights do not fit the model: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )


def parse_hub_id(text: str) -> tuple[str, str | None]:
    """`[hf-hub:]ORG/NAME[@REVISION]` -> (repo id, revision or None)."""
    raw = text[len(HF_HUB) :] if text.startswith(HF_HUB) else text
    repo_id, _, revision = raw.partition("@")
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"{text!r}: a Hub model is named ORG/NAME (optionally @REVISION)")
    return repo_id, revision or None


def hub_snapshot(
    repo_id: str, revision: str | None, weights: tuple[str, ...]
) -> tuple[Path, dict[str, Any]]:
    """A model repo's configs + tokenizer and its first weights file of `weights`, through the
    huggingface_hub cache; (snapshot folder, source record with the resolved commit)."""
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import EntryNotFoundError

    folder = Path(
        snapshot_download(repo_id, revision=revision, allow_patterns=list(HUB_SMALL_FILES))
    )
    commit = folder.name  # the cache's snapshots/<commit>/
    for name in weights:
        try:
            path = hf_hub_download(repo_id, name, revision=commit)
        except EntryNotFoundError:
            continue
        record = {"repo_id": repo_id, "revision": revision, "commit": commit, "filename": name}
        return folder, {"path": str(path), **record}
    raise FileNotFoundError(f"{repo_id}@{commit}: no weights file (one of {list(weights)})")


def hub_file(source: Mapping[str, Any]) -> Path:
    """The weights file of a Hub source record, at its resolved commit (from the cache if there)."""
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(source["repo_id"], source["filename"], revision=source["commit"]))


def _audio_tower(spec: str, load_weights: bool) -> tuple[Path, Path | None, dict[str, Any]]:
    """(CLAP folder, weights file or None, source record) of an audio tower spec."""
    if spec.startswith(LOCAL_DIR):
        folder = Path(spec[len(LOCAL_DIR) :]).expanduser()
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{folder}: no config.json (a transformers CLAP folder)")
        _, weights = _clap_folder(folder)
        return folder, weights, {"path": str(weights)} if weights else {}
    repo_id, revision = parse_hub_id(spec)
    if not load_weights:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=["config.json"]))
        return folder, None, {}
    folder, source = hub_snapshot(repo_id, revision, CLAP_WEIGHTS)
    return folder, Path(source["path"]), source


def _tiny(skip_image: bool) -> Towers:
    raw = read_config("tiny")
    name = raw["open_clip"]["name"]
    register_open_clip_configs()
    clip, tokenizer = _create_clip(name)
    oc = {"model_cfg": open_clip.get_model_config(name), "preprocess_cfg": _preprocess_cfg(clip)}
    if skip_image:
        clip.visual = AbsentTower()
    audio_cfg = clap_audio_config(raw["audio"])
    cfg = TowerConfig(
        name="tiny",
        embed_dim=int(raw["embed_dim"]),
        open_clip=oc,
        audio=_audio_kwargs(audio_cfg),
        frontend=dict(raw["frontend"]),
    )
    return _finish("tiny", cfg, clip, tokenizer, ClapAudioModelWithProjection(audio_cfg), {})


def _local_dir(
    spec: str,
    path: Path,
    load_weights: bool,
    audio_name: str | None,
    use_clap: bool,
    *,
    source: dict[str, Any] | None = None,
    audio_tower: str | None = None,
    skip_image: bool = False,
) -> Towers:
    if not (path / "open_clip_config.json").is_file():
        raise FileNotFoundError(f"{path}: no open_clip_config.json (an open_clip model folder)")
    clip, tokenizer = _create_clip(f"{LOCAL_DIR}{path}")
    preprocess = _preprocess_cfg(clip)
    if skip_image:
        clip.visual = AbsentTower()
    sources: dict[str, dict[str, Any]] = {}
    if load_weights:
        weights = Path(source["path"]) if source else _open_clip_weights(path)
        load_open_clip_weights(clip, weights)
        sources["open_clip"] = source or {"path": str(weights)}
    model_cfg = json.loads((path / "open_clip_config.json").read_text())["model_cfg"]
    hf_tok = "hf_tokenizer_name" in model_cfg.get("text_cfg", {})
    base = read_config(audio_name or "htsat-unfused")
    clap_dir, clap_weights, clap_source = path / "clap", None, {}
    if audio_tower is not None:
        clap_dir, clap_weights, clap_source = _audio_tower(audio_tower, load_weights)
    if (use_clap or audio_tower is not None) and (clap_dir / "config.json").is_file():
        audio_cfg, found = _clap_folder(clap_dir)
        clap_weights = clap_weights or found
        audio = ClapAudioModelWithProjection(audio_cfg)
        if load_weights:
            if clap_weights is None:
                raise FileNotFoundError(f"{clap_dir}: no weights (one of {list(CLAP_WEIGHTS)})")
            load_clap_audio(audio, read_state_dict(clap_weights))
            sources["audio"] = clap_source or {"path": str(clap_weights)}
    else:
        audio_cfg = clap_audio_config(base["audio"])
        audio = ClapAudioModelWithProjection(audio_cfg)
        log.info("%s: HTS-AT audio tower %r from random weights", path, base["name"])
    origin = {
        k: {f: v for f, v in src.items() if f != "path"}
        for k, src in sources.items()
        if "repo_id" in src
    }
    cfg = TowerConfig(
        name=spec,
        embed_dim=int(model_cfg["embed_dim"]),
        open_clip={"model_cfg": model_cfg, "preprocess_cfg": preprocess},
        audio=_audio_kwargs(audio_cfg),
        frontend=dict(base["frontend"]),
        tokenizer_dir=str(path) if hf_tok else None,
        origin=origin,
    )
    return _finish(spec, cfg, clip, tokenizer, audio, sources)


def _finish(
    spec: str,
    cfg: TowerConfig,
    clip: nn.Module,
    tokenizer: Tokenizer,
    audio: ClapAudioModelWithProjection,
    sources: dict[str, dict[str, Any]],
) -> Towers:
    frontend = FrontendConfig.from_dict(cfg.frontend)
    cfg.frontend = frontend.to_dict()  # every field named (an older `padding` as short_clip)
    check_frontend(frontend, int(audio.config.spec_size), int(audio.config.num_mel_bins))
    return Towers(spec, cfg, clip, tokenizer, audio, frontend, sources)


def create_towers(
    spec: str,
    *,
    load_weights: bool = True,
    audio: str | None = None,
    clap_dir: bool = True,
    audio_tower: str | None = None,
    skip_image: bool = False,
) -> Towers:
    """Build the towers named by `spec` (`tiny`, `local-dir:PATH` or `hf-hub:ORG/NAME[@REV]`).

    With `load_weights=False` a folder spec builds the architecture only (a checkpoint's weights
    are loaded on top later). `audio` names the config in `configs/` (default `htsat-unfused`)
    that gives the front end, and the HTS-AT architecture when there is no CLAP folder
    (`PATH/clap/`, unless `clap_dir` is False, or `audio_tower`): random weights then.
    `skip_image` leaves the image tower out (an `AbsentTower`; its weights are never read).
    """
    if spec == "tiny":
        if audio not in (None, "tiny") or audio_tower is not None:
            raise ValueError("the tiny towers take no audio override")
        return _tiny(skip_image)
    kw = {"audio_tower": audio_tower, "skip_image": skip_image}
    if spec.startswith(LOCAL_DIR):
        path = Path(spec[len(LOCAL_DIR) :]).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: not a folder")
        return _local_dir(spec, path, load_weights, audio, clap_dir, **kw)
    if spec.startswith(HF_HUB):
        repo_id, revision = parse_hub_id(spec)
        if load_weights:
            folder, source = hub_snapshot(repo_id, revision, OPEN_CLIP_WEIGHTS)
        else:
            from huggingface_hub import snapshot_download

            patterns = list(HUB_SMALL_FILES)
            folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns))
            source = None
        return _local_dir(spec, folder, load_weights, audio, clap_dir, source=source, **kw)
    raise ValueError(
        f"unknown tower spec {spec!r}: use 'tiny', 'local-dir:PATH' or 'hf-hub:ORG/NAME'"
    )


def towers_from_config(
    cfg: TowerConfig | Mapping[str, Any], spec: str = "", *, skip_image: bool = False
) -> Towers:
    """Rebuild the towers' architecture (random weights) from a stored TowerConfig."""
    if not isinstance(cfg, TowerConfig):
        cfg = TowerConfig.from_dict(cfg)
    clip, tokenizer = _clip_from_cfg(cfg.open_clip, cfg.tokenizer_dir)
    open_clip.model.set_model_preprocess_cfg(clip, dict(cfg.open_clip["preprocess_cfg"]))
    if skip_image:
        clip.visual = AbsentTower()
    audio = ClapAudioModelWithProjection(clap_audio_config(cfg.audio))
    return _finish(spec or cfg.name, cfg, clip, tokenizer, audio, {})
