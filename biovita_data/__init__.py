"""BioVITA data: sources -> manifests -> media -> Hugging Face dataset -> training loader.

The stages are importable from the top level, loaded on first use (so `import biovita_data`
stays light)::

    from biovita_data import FetchSettings, fetch, align, build_bench, materialize, publish

Packages by layer (each imports only the ones above it in this list): `core` (paths, schemas,
tables, vocabularies), `crawl` (sources, HTTP, fetch), `curate` (align, traits, split, bench,
stats), `media`, `publish`, `loader`, `sample` (the embedded sample world), `app` (CLI, pipeline
files, demo).
"""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "FetchSettings": "biovita_data.crawl.fetch",
    "fetch": "biovita_data.crawl.fetch",
    "AlignSettings": "biovita_data.curate.settings",
    "SplitSettings": "biovita_data.curate.settings",
    "align": "biovita_data.curate.align",
    "run_traits": "biovita_data.curate.traits",
    "split": "biovita_data.curate.split",
    "BenchSettings": "biovita_data.curate.bench",
    "build_bench": "biovita_data.curate.bench",
    "read_official": "biovita_data.curate.bench",
    "stats": "biovita_data.curate.stats",
    "MaterializeSettings": "biovita_data.media",
    "materialize": "biovita_data.media",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'biovita_data' has no attribute {name!r}")
