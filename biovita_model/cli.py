"""`biovita-model`: train, evaluate and probe the tri-modal model (needs the `model` extra)."""

from __future__ import annotations

import importlib.metadata
from typing import Annotated

import typer

from biovita_data.cli import version_option

app = typer.Typer(
    help="Train and evaluate the BioVITA audio-image-text model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

MODEL_PACKAGES = ("torch", "torchvision", "open_clip_torch", "transformers", "torchcodec")


@app.callback()
def main(version: Annotated[bool, version_option("biovita-model")] = False) -> None:
    """BioVITA model: HTS-AT audio tower aligned to BioCLIP 2 image and text towers."""


@app.command()
def info() -> None:
    """Show which packages of the `model` extra are installed, and their versions."""
    missing = []
    for name in MODEL_PACKAGES:
        try:
            typer.echo(f"{name:16} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            typer.echo(f"{name:16} not installed")
            missing.append(name)
    if missing:
        typer.echo('install them with: pip install -e ".[model]"')
