"""The card's figures (matplotlib Agg, no pyplot state): per-class counts and the long tail."""

from __future__ import annotations

from pathlib import Path

import polars as pl

MAX_CLASSES = 30
_COLORS = {"species": "#4c72b0", "audio": "#dd8452", "image": "#55a868"}


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", metadata={"Software": None})  # no version string: same bytes
    return path


def per_species(species: pl.DataFrame, records: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """One row per species: its class and its published audio and image record counts."""
    df = species.select("species_id", pl.col("class").fill_null("(unknown)"))
    for modality, recs in records.items():
        counts = recs.group_by("species_id").agg(pl.len().alias(modality))
        df = df.join(counts, on="species_id", how="left")
    return df.with_columns(pl.col(m).fill_null(0).cast(pl.Int64) for m in records)


def per_class(counts: pl.DataFrame) -> pl.DataFrame:
    """Species, recordings and photos per taxonomic class, largest first."""
    return (
        counts.group_by("class")
        .agg(species=pl.len(), audio=pl.col("audio").sum(), image=pl.col("image").sum())
        .sort(["species", "class"], descending=[True, False])
    )


def plot_per_class(counts: pl.DataFrame, path: Path) -> Path:
    """Horizontal bars: species, recordings and photos for each class (the largest 30)."""
    table = per_class(counts).head(MAX_CLASSES).reverse()
    labels = table["class"].to_list()
    fig = _figure(11, 1.2 + 0.32 * max(3, len(labels)))
    axes = fig.subplots(1, 3, sharey=True)
    for ax, col, title in zip(
        axes, ("species", "audio", "image"), ("species", "recordings", "photos"), strict=True
    ):
        values = table[col].to_list()
        ax.barh(range(len(labels)), values, color=_COLORS[col])
        ax.set_title(title)
        positive = [v for v in values if v > 0]
        if positive and max(positive) / min(positive) > 100:
            ax.set_xscale("log")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(labels)), labels)
    fig.suptitle("per taxonomic class")
    fig.tight_layout()
    return _save(fig, path)


def plot_long_tail(counts: pl.DataFrame, path: Path) -> Path:
    """Records per species, species sorted by count (log scale): the long tail."""
    fig = _figure(8, 4.5)
    ax = fig.subplots()
    for modality, label in (("audio", "recordings"), ("image", "photos")):
        values = sorted((v for v in counts[modality].to_list() if v > 0), reverse=True)
        if values:
            ax.plot(range(1, len(values) + 1), values, label=label, color=_COLORS[modality])
    ax.set_yscale("log")
    ax.set_xlabel("species rank")
    ax.set_ylabel("records per species")
    ax.set_title(f"long tail over {counts.height} species")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # a corpus without any stored record draws no line
        ax.legend()
    fig.tight_layout()
    return _save(fig, path)
