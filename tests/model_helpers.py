"""Shared builders of the model tests: tiny open_clip folders, a tiny CLAP, a synthetic world."""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import torch
from transformers import ClapConfig, ClapModel, ClapTextConfig

from biovita_data.sample.published_folder import AudioSpec, write_synthetic_folder
from biovita_model.towers import create_towers, read_config

N_SPECIES = 8  # the last two unseen


def open_clip_folder(path: Path, seed: int = 0, preprocess: bool = True) -> torch.nn.Module:
    """A tiny open_clip model folder, as BioCLIP 2 ships (config + open_clip_pytorch_model.bin);
    without `preprocess`, its config has no preprocess_cfg (open_clip's defaults apply)."""
    torch.manual_seed(seed)
    clip = create_towers("tiny").clip
    model_cfg = open_clip.get_model_config(read_config("tiny")["open_clip"]["name"])
    path.mkdir(parents=True, exist_ok=True)
    doc: dict = {"model_cfg": model_cfg}
    if preprocess:
        doc["preprocess_cfg"] = {"mean": [0.5] * 3, "std": [0.25] * 3}
    (path / "open_clip_config.json").write_text(json.dumps(doc))
    torch.save(clip.state_dict(), path / "open_clip_pytorch_model.bin")
    return clip.eval()


def tiny_clap(seed: int = 0) -> ClapModel:
    """A tiny transformers ClapModel whose audio half is the tiny HTS-AT."""
    torch.manual_seed(seed)
    text = ClapTextConfig(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=40,
    )
    cfg = ClapConfig(
        text_config=text.to_dict(), audio_config=read_config("tiny")["audio"], projection_dim=64
    )
    model = ClapModel(cfg).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        model.audio_model.audio_encoder.batch_norm.running_mean.uniform_(-20, 0)
        model.audio_model.audio_encoder.batch_norm.running_var.uniform_(50, 150)
    return model


def synthetic_world(folder: Path, n_species: int = N_SPECIES, n_unseen: int = 2) -> Path:
    """A small published folder: 3 train + 1 test clip per seen species (2 s WAV, 16 kHz)."""
    specs = []
    for k in range(n_species - n_unseen):
        specs += [AudioSpec(k, "train", 2.0 + 0.5 * j, 16000, 1, "wav", 0.2) for j in range(3)]
        specs.append(AudioSpec(k, "test", 2.5, 16000, 1, "wav", onset_s=0.4))
    for k in range(n_species - n_unseen, n_species):
        specs += [AudioSpec(k, "unseen", 2.0, 16000, 1, "wav", onset_s=0.3) for _ in range(2)]
    return write_synthetic_folder(
        folder,
        specs,
        n_species=n_species,
        n_unseen=n_unseen,
        images_per_species={"train": 2, "test": 1, "unseen": 2},
        image_size=(40, 36),
    )
