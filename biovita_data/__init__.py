"""BioVITA data: sources -> manifests -> media -> Hugging Face dataset -> training loader."""

__version__ = "0.1.0"
