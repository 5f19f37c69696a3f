"""Publish the corpus as a plain-Parquet Hugging Face dataset: audio, image, species, bench.

`publish(out, "ns/name")` writes OUT/hf and uploads it (HfApi, or `git_remote`); see
docs/design.md, "The published dataset".
"""

from biovita_data.publish.features import CONFIGS, SPLITS
from biovita_data.publish.stage import MEDIA_MODES, PublishResult, build_folder, publish
from biovita_data.publish.upload import PublishError

__all__ = [
    "CONFIGS",
    "MEDIA_MODES",
    "SPLITS",
    "PublishError",
    "PublishResult",
    "build_folder",
    "publish",
]
