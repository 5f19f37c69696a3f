"""A dataset card built from the sample world says so at the top and carries the build record."""

from __future__ import annotations

import json
from pathlib import Path

import publish_helpers as tp  # the small hand-made build of the publish tests

from biovita_data.core import layout
from biovita_data.publish import publish


def _card(out: Path) -> str:
    publish(out, tp.REPO_ID, folder_only=True)
    return (layout.hf_dir(out) / "README.md").read_text()


def test_sample_world_card_says_synthetic_at_the_top(tmp_path: Path) -> None:
    out = tp.make_build(tmp_path / "out")
    build = json.loads((out / "build.json").read_text())
    (out / "build.json").write_text(json.dumps({**build, "world": {"size": "tiny", "seed": 0}}))
    card = _card(out)
    body = card.split("---\n", 2)[2].lstrip()
    top = body.split("\n## ", 1)[0]
    assert top.startswith("# ") and "the BioVITA sample world (tiny, seed 0)" in top
    assert "Synthetic data" in top and "127.0.0.1" in top and "stop working" in top
    provenance = card.split("## Provenance", 1)[1]
    assert "Audio from Xeno-canto" not in provenance and "sample world" in provenance
    assert "no build.json was found" not in card and '"world"' in card


def test_real_build_card_credits_the_sources(tmp_path: Path) -> None:
    card = _card(tp.make_build(tmp_path / "out"))
    assert "Synthetic data" not in card
    assert "Audio from Xeno-canto" in card.split("## Provenance", 1)[1]


def test_real_build_credits_the_sources_of_its_rows() -> None:
    import polars as pl

    from biovita_data.publish.card import _origin

    records = {
        "audio": pl.DataFrame({"source": ["gbif", "xeno-canto", "gbif", "inaturalist"]}),
        "image": pl.DataFrame({"source": ["treeoflife-200m"]}),
    }
    text = _origin(records)
    assert text.startswith("Audio from Xeno-canto (API v3), iNaturalist (API v1) and GBIF")
    assert "photos from TreeOfLife-200M" in text
    assert _origin({"audio": pl.DataFrame({"source": ["xeno-canto"]})}) == (
        "Audio from Xeno-canto (API v3)"
    )
