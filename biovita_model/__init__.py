"""BioVITA model: encoders, losses, training stages, evaluation and trait probes (extra `model`)."""

from biovita_data import __version__

__all__ = ["__version__"]
