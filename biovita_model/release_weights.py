"""The original BioVITA release's weights: `clap_weights.pth` + an open_clip (BioCLIP 2) folder.

`clap_weights.pth` holds `clap_audio`, a transformers `ClapModel` state dict (its audio_model.* and
audio_projection.* keys go into `ClapAudioModelWithProjection`; the CLAP text tower is dropped),
and `audio_adapter`, the bias-free 512 -> 768 linear (a state dict with `weight`, or the tensor).
The image and text towers come from an open_clip `ViT-L-14` folder (`open_clip_config.json` +
weights). Our own checkpoint format is `save_model` / `load_model` (see biovita_model.model).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from biovita_model.model import BioVITAModel, load_model, save_model
from biovita_model.towers import LOCAL_DIR, create_towers, load_clap_audio

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


def import_official(
    clap_weights: Path, open_clip_dir: Path, *, audio: str = "htsat-unfused"
) -> BioVITAModel:
    """A BioVITAModel with the release's audio tower + adapter and an open_clip folder's towers.

    `audio` names the HTS-AT config (in biovita_model/configs/) the CLAP weights fit; the
    release uses `htsat-unfused`.
    """
    clap_weights, open_clip_dir = Path(clap_weights), Path(open_clip_dir)
    ckpt = torch.load(clap_weights, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, Mapping) or not {"clap_audio", "audio_adapter"} <= set(ckpt):
        raise ValueError(f"{clap_weights}: expected the keys 'clap_audio' and 'audio_adapter'")
    model = BioVITAModel(create_towers(f"{LOCAL_DIR}{open_clip_dir}", audio=audio, clap_dir=False))
    load_clap_audio(model.audio, ckpt["clap_audio"])
    weight = adapter_weight(ckpt["audio_adapter"])
    if tuple(weight.shape) != tuple(model.audio_adapter.weight.shape):
        raise ValueError(
            f"{clap_weights}: audio_adapter weight {tuple(weight.shape)}, the model needs "
            f"{tuple(model.audio_adapter.weight.shape)} (embed dim x audio projection dim)"
        )
    with torch.no_grad():
        model.audio_adapter.weight.copy_(weight)
    return model
