"""The materialize stage: download, verify, convert, hash and store every recording and photo."""

from biovita_data.media.settings import MaterializeSettings
from biovita_data.media.stage import MaterializeResult, ModalityResult, materialize

__all__ = ["MaterializeResult", "MaterializeSettings", "ModalityResult", "materialize"]
