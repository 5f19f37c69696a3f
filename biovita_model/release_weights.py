"""The original BioVITA release's weights: `clap_weights.pth` + an open_clip (BioCLIP 2) folder.

`clap_weights.pth` holds `clap_audio`, a transformers `ClapModel` state dict (its audio_model.* and
audio_projection.* keys go into `ClapAudioModelWithProjection`; the CLAP text tower is dropped),
and `audio_adapter`, the bias-free linear from the audio projection (512) to the open_clip
towers' embedding width (a state dict with `weight`, or the tensor). Short clips are padded with
silence (`short_clip = pad`), as the release's feature extractor does.
The image and text towers come from an open_clip `ViT-L-14` folder (`open_clip_config.json` +
weights). Either may be named by Hub repo id instead (`hf-hub:ORG/NAME[@REVISION]`, a bare
`ORG/NAME` when no such path exists): downloaded with huggingface_hub, the resolved commit kept.
Our own checkpoint format is `save_model` / `load_model` (see biovita_model.model).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from biovita_model.model import BioVITAModel, load_model, save_model
from biovita_model.towers import HF_HUB, LOCAL_DIR, create_towers, load_clap_audio, parse_hub_id

CLAP_WEIGHTS_FILE = "clap_weights.pth"
OFFICIAL_SHORT_CLIP = "pad"  # the release's extractor pads clips under 10 s with silence

__all__ = ["adapter_weight", "import_official", "load_model", "save_model"]


def adapter_weight(entry: Any) -> torch.Tensor:
    """The adapter's (out, in) weight from a tensor, {"weight": ...} or a one-weight state dict."""
    if isinstance(entry, torch.Tensor):
        return entry
    if isinstance(entry, Mapping):
        if "weight" in entry:
            return entry["weight"]
        found = [v for k, v in entry.items() if k.endswith("weight") and v.ndim == 2]
        if len(found) == 1 and not any(k.endswith("bias") for k in entry):
            return found[0]
    raise ValueError("audio_adapter: expected a weight tensor or a bias-free nn.Linear state dict")


def is_hub_id(value: str | Path) -> bool:
    """`hf-hub:ORG/NAME[@REV]`, or `ORG/NAME[@REV]` that is no existing path."""
    text = str(value)
    if text.startswith(HF_HUB):
        return True
    if Path(text).expanduser().exists() or text.startswith(("/", ".", "~")):
        return False
    try:
        parse_hub_id(text)
    except ValueError:
        return False
    return True


def clap_weights_file(value: str | Path) -> tuple[Path, dict[str, Any]]:
    """(local file, origin) of --clap-weights: a file, or a repo id holding clap_weights.pth."""
    if not is_hub_id(value):
        return Path(value), {"path": str(value)}
    from huggingface_hub import hf_hub_download

    repo_id, revision = parse_hub_id(str(value))
    path = Path(hf_hub_download(repo_id, CLAP_WEIGHTS_FILE, revision=revision))
    commit = path.parent.name  # the cache's snapshots/<commit>/FILE
    origin = {"repo_id": repo_id, "revision": revision, "commit": commit}
    return path, {**origin, "filename": CLAP_WEIGHTS_FILE}


def open_clip_spec(value: str | Path) -> str:
    """The tower spec of --open-clip: a folder (local-dir:) or a Hub repo id (hf-hub:)."""
    if is_hub_id(value):
        text = str(value)
        return text if text.startswith(HF_HUB) else f"{HF_HUB}{text}"
    return f"{LOCAL_DIR}{value}"


def import_official(
    clap_weights: str | Path, open_clip_dir: str | Path, *, audio: str = "htsat-unfused"
) -> BioVITAModel:
    """A BioVITAModel with the release's audio tower + adapter and an open_clip folder's towers.

    Each may be a Hub repo id (see the module doc). `audio` names the HTS-AT config (in
    biovita_model/configs/) the CLAP weights fit; the release uses `htsat-unfused`. Weights from
    the Hub are recorded with their resolved commits in `model.tower_config.origin`.
    """
    clap_path, clap_origin = clap_weights_file(clap_weights)
    ckpt = torch.load(clap_path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, Mapping) or not {"clap_audio", "audio_adapter"} <= set(ckpt):
        raise ValueError(f"{clap_weights}: expected the keys 'clap_audio' and 'audio_adapter'")
    spec = open_clip_spec(open_clip_dir)
    model = BioVITAModel(create_towers(spec, audio=audio, clap_dir=False))
    if "repo_id" in clap_origin:  # the run's config.json keeps it (tower_config.origin)
        model.tower_config.origin["clap_weights"] = clap_origin
    load_clap_audio(model.audio, ckpt["clap_audio"])
    weight = adapter_weight(ckpt["audio_adapter"])
    if tuple(weight.shape) != tuple(model.audio_adapter.weight.shape):
        raise ValueError(
            f"{clap_weights}: audio_adapter weight {tuple(weight.shape)}, the model needs "
            f"{tuple(model.audio_adapter.weight.shape)} (embed dim x audio projection dim)"
        )
    with torch.no_grad():
        model.audio_adapter.weight.copy_(weight)
    model.set_short_clip(OFFICIAL_SHORT_CLIP)
    return model
