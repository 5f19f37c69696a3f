"""The materialize stage: download, verify, convert, hash and store every recording and photo.

The names below load on first use, so `biovita_data.media.settings` (the CLI's defaults) stays
light to import."""

from importlib import import_module
from typing import Any

_PUBLIC = {
    "MaterializeSettings": "biovita_data.media.settings",
    "MaterializeResult": "biovita_data.media.stage",
    "ModalityResult": "biovita_data.media.stage",
    "materialize": "biovita_data.media.stage",
}

__all__ = list(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'biovita_data.media' has no attribute {name!r}")
