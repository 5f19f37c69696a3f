"""Training loader over a published BioVITA dataset (docs/design.md, "Loader"); needs torch.

    from torch.utils.data import DataLoader
    from biovita_data.loader import BioVITADataset, collate, species_sampler

    ds = BioVITADataset.from_pretrained("OUT/hf", split="train", seed=0)
    sampler = species_sampler(ds, max_audio_per_species=50)
    loader = DataLoader(ds, batch_size=64, sampler=sampler, num_workers=8, collate_fn=collate)
    for epoch in range(10):
        sampler.set_epoch(epoch)
        for batch in loader:
            ...  # batch["audio"] (64, 480000), batch["image"], batch["text"], batch["traits"]

`biovita_data` itself never imports torch; only this package does.
"""

from biovita_data.loader.audio import TARGET_RATE, Clip, decode_clip, decode_whole, onset_index
from biovita_data.loader.dataset import BioVITADataset, collate, decode_image, item_rng
from biovita_data.loader.prompts import TEMPLATES, species_prompts, taxonomic_name
from biovita_data.loader.sampler import (
    SpeciesSampler,
    cap_per_label,
    draw_epoch,
    species_sampler,
)
from biovita_data.loader.species import SpeciesTable, read_species

__all__ = [
    "TARGET_RATE",
    "TEMPLATES",
    "BioVITADataset",
    "Clip",
    "SpeciesSampler",
    "SpeciesTable",
    "cap_per_label",
    "collate",
    "decode_clip",
    "decode_image",
    "decode_whole",
    "draw_epoch",
    "item_rng",
    "onset_index",
    "read_species",
    "species_prompts",
    "species_sampler",
    "taxonomic_name",
]
