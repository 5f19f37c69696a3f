"""The dataset card: README.md with the Hub's YAML front matter, counts, licences, figures, the
trait vocabulary, the benchmark, provenance and citations. No clock is read: same inputs, same
text."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import yaml

from biovita_data.core.vocab import TRAIT_CATEGORIES
from biovita_data.curate.bench.csv_layout import LEVELS, TASKS
from biovita_data.curate.traits.coverage import coverage_summary
from biovita_data.publish.configs import ConfigResult
from biovita_data.publish.features import CONFIGS, SPLITS, columns
from biovita_data.publish.licensing import card_license, license_url
from biovita_data.publish.plots import per_class, per_species, plot_long_tail, plot_per_class

TASK_CATEGORIES = [
    "audio-classification",
    "image-classification",
    "zero-shot-classification",
    "zero-shot-image-classification",
    "feature-extraction",
]
TAGS = [
    "biology",
    "biodiversity",
    "ecology",
    "bioacoustics",
    "animals",
    "species",
    "taxonomy",
    "traits",
    "multimodal",
    "audio",
    "image",
    "retrieval",
    "biovita",
]
_SIZES = [
    (10**k, name)
    for k, name in zip(
        range(3, 10),
        ("n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M", "10M<n<100M", "100M<n<1B"),
        strict=True,
    )
]
BIOVITA_BIBTEX = """@inproceedings{shinoda2026biovita,
  title         = {{BioVITA}: Biological Dataset, Model, and Benchmark for Visual-Textual-Acoustic Alignment},
  author        = {Shinoda, Risa and Shiohara, Kaede and Inoue, Nakamasa and Saito, Kuniaki and Santo, Hiroaki and Okura, Fumio},
  booktitle     = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year          = {2026},
  eprint        = {2603.23883},
  archivePrefix = {arXiv}
}"""  # noqa: E501


@dataclass
class CardInputs:
    """Everything the card reports."""

    repo_id: str
    media: str
    species: pl.DataFrame  # with label
    records: dict[str, pl.DataFrame]  # modality -> split, source, record_id, species_id, ...
    results: dict[str, ConfigResult]  # config -> rows and files per split
    bench_tasks: dict[str, pl.DataFrame]  # bench split -> task, taxon_level (one row per query)
    bench_settings: dict[str, dict] = field(default_factory=dict)  # bench split -> bench.json
    build: dict = field(default_factory=dict)
    stats: dict | None = None
    changelog: str | None = None  # markdown from `release diff` against the previous release
    gbif_downloads: list[dict] = field(default_factory=list)  # OUT/raw/gbif/citation.json
    # dedup's exact copies, published once: modality, source, record_id, copy_of
    copies: pl.DataFrame | None = None


def size_category(n: int) -> str:
    for limit, name in _SIZES:
        if n < limit:
            return name
    return "n>1T"


def _fmt(n: float) -> str:
    return f"{n:,.0f}" if float(n).is_integer() else f"{n:,.1f}"


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    for row in rows:
        cells = [_fmt(c) if isinstance(c, int | float) else str(c) for c in row]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def front_matter(inp: CardInputs, license_code: str, pretty_name: str) -> dict:
    """The YAML metadata the Hub reads: configs and their files, licence, tasks, size, tags."""
    configs = []
    for config in CONFIGS:
        splits = [s for s in SPLITS[config] if inp.results[config].files.get(s)]
        if not splits:  # nothing to load: a config without files would not load at all
            continue
        entry: dict = {"config_name": config}
        if config == "audio":
            entry["default"] = True
        entry["data_files"] = [{"split": s, "path": f"{config}/{s}-*.parquet"} for s in splits]
        configs.append(entry)
    media_rows = sum(sum(inp.results[m].rows.values()) for m in ("audio", "image"))
    meta: dict = {"pretty_name": pretty_name, "license": license_code}
    if license_code == "other":
        meta["license_name"] = "per-item-creative-commons"
        meta["license_link"] = "LICENSE.md"
    meta.update(
        {
            "language": ["en"],
            "task_categories": TASK_CATEGORIES,
            "size_categories": [size_category(media_rows)],
            "tags": TAGS,
            "configs": configs,
        }
    )
    return meta


def _counts_section(inp: CardInputs) -> str:
    rows = []
    for config in CONFIGS:
        res = inp.results[config]
        for split in SPLITS[config]:
            rows.append(
                [f"`{config}`", f"`{split}`", res.rows.get(split, 0), len(res.files.get(split, []))]
            )
    media_rows = []
    for modality, label in (("audio", "recordings"), ("image", "photos")):
        recs = inp.records[modality]
        for split in SPLITS[modality]:
            part = recs.filter(pl.col("split") == split)
            seconds = part["duration_s"].fill_null(0).sum()
            hours = f"{seconds / 3600:,.2f}" if modality == "audio" else ""
            media_rows.append(
                [
                    label,
                    split,
                    part.height,
                    int(part["files"].sum() or 0),
                    part["species_id"].n_unique(),
                    hours,
                ]
            )
    empty = [f"`{c}/{s}`" for c in CONFIGS for s in SPLITS[c] if not inp.results[c].rows.get(s)]
    note = (
        f"Splits without rows in this build, and so not declared: {', '.join(empty)}."
        if empty
        else ""
    )
    n_seen = inp.species.filter(pl.col("split_group") == "seen").height
    n_unseen = inp.species.filter(pl.col("split_group") == "unseen").height
    return "\n\n".join(
        [
            "## Counts",
            f"{inp.species.height:,} species ({n_seen:,} seen, {n_unseen:,} unseen), "
            f"{inp.records['audio'].height:,} recordings and {inp.records['image'].height:,} "
            "photos.",
            _table(["config", "split", "rows", "Parquet shards"], rows)
            + (f"\n\n{note}" if note else ""),
            _table(
                ["modality", "split", "records", "rows (files)", "species", "hours"], media_rows
            ),
            "A recording longer than the segment limit is stored as several rows (`segment` "
            "0..`n_segments`-1) that share `source` and `record_id`."
            if inp.media == "embed"
            else "This release holds metadata and URLs only (`media: urls`): fetch each item "
            "from `media_url`, under its own licence.",
        ]
    )


def _license_section(inp: CardInputs, license_code: str) -> str:
    counts: dict[str | None, dict[str, int]] = {}
    for modality, recs in inp.records.items():
        for code, n in recs.group_by("license").len().iter_rows():
            counts.setdefault(code, {})[modality] = n
    total = sum(sum(v.values()) for v in counts.values()) or 1
    rows = []
    for code in sorted(counts, key=lambda c: (-sum(counts[c].values()), c or "")):
        url = license_url(code)
        name = f"[`{code}`]({url})" if url else f"`{code or 'unknown'}`"
        audio, image = counts[code].get("audio", 0), counts[code].get("image", 0)
        rows.append([name, audio, image, f"{100 * (audio + image) / total:.1f} %"])
    summary = (
        f"The card's licence is `{license_code}`: every item is available under it or under a "
        "less restrictive licence it covers."
        if license_code != "other"
        else "The card's licence is `other`: the items carry different Creative Commons licences "
        "that no single one of them covers (for example share-alike next to non-commercial "
        "terms), so each item is under its own licence."
    )
    return "\n\n".join(
        [
            "## Licences",
            summary + " Every row carries its `license` and `attribution` (recordist or "
            "observer) and links its `page_url` at the source; re-users must honour each item's "
            "licence and credit its author. The table counts records (recordings, photos).",
            _table(["licence", "recordings", "photos", "share"], rows),
        ]
    )


def license_md(inp: CardInputs, license_code: str) -> str:
    """LICENSE.md: what `license: other` means for this dataset."""
    text = (
        "This dataset is a collection of items under their own Creative Commons licences (card "
        f"licence: `{license_code}`). Each row of the `audio` and `image` configs names its "
        "licence in `license`, its author in `attribution` and its origin in `media_url` and "
        "`page_url`. Re-use each item under its own licence and credit its author; "
        "non-commercial (`-nc-`) items may not be used commercially and share-alike (`-sa-`) "
        "items require adaptations to be shared alike."
    )
    derived = (
        "The metadata (taxonomy, trait labels, benchmark) is derived from the sources named in "
        "README.md, under their terms."
    )
    breakdown = _license_section(inp, license_code).split("\n\n", 1)[1]
    return "\n\n".join(["# Licences of this dataset", text, derived, breakdown]) + "\n"


def _figures_section(inp: CardInputs, folder: Path) -> str:
    counts = per_species(inp.species, inp.records)
    plot_per_class(counts, folder / "assets" / "per_class.png")
    plot_long_tail(counts, folder / "assets" / "long_tail.png")
    classes = per_class(counts)
    rows = [[c, s, a, i] for c, s, a, i in classes.iter_rows()]
    audio = counts["audio"].sort(descending=True)
    top = max(1, audio.len() // 10)
    share = audio[:top].sum() / max(1, audio.sum())
    return "\n\n".join(
        [
            "## Taxonomic coverage",
            _table(["class", "species", "recordings", "photos"], rows),
            "![species, recordings and photos per class](assets/per_class.png)",
            f"Records per species follow a long tail: the top 10 % of species hold "
            f"{100 * share:.1f} % of the recordings.",
            "![records per species, species sorted by count](assets/long_tail.png)",
        ]
    )


def _traits_section(inp: CardInputs) -> str:
    rows = []
    n = max(1, inp.species.height)
    for category, labels in TRAIT_CATEGORIES.items():
        for label in labels:
            col = f"trait_{category}_{label}"
            known = inp.species[col].is_not_null().sum()
            ones = (inp.species[col] == 1).sum()
            prov = inp.species[col.replace("trait_", "provenance_", 1)].drop_nulls().unique()
            rows.append(
                [
                    category,
                    label,
                    f"`{col}`",
                    f"{100 * known / n:.1f} %",
                    ones,
                    ", ".join(sorted(prov.to_list())) or "-",
                ]
            )
    return "\n\n".join(
        [
            "## The 34 trait labels",
            "Each species (config `species`) has 34 binary ecological labels in eight "
            "categories, one `int8` column each: 1, 0, or null where no table speaks about it "
            "(nothing is guessed as 0). `provenance_<category>_<label>` names the trait table the "
            "value came from (AVONET, EltonTraits 1.0, AmphiBIO or a plain CSV).",
            _table(
                ["category", "label", "column", "species known", "species with 1", "from"], rows
            ),
            _trait_coverage_by_class(inp),
        ]
    )


def _trait_coverage_by_class(inp: CardInputs) -> str:
    """Species with any trait label per class, the tables used, and the classes left out."""
    cov = coverage_summary(inp.species)
    rows = [
        [r["class"], r["species"], r["with_labels"], f"{100 * r['share']:.1f} %",
         ", ".join(r["tables"]) or "-"]
        for r in cov["per_class"]
    ]  # fmt: skip
    parts = [
        "Trait coverage per class (species with at least one known label):",
        _table(["class", "species", "with labels", "share", "tables"], rows),
    ]
    if cov["uncovered_classes"]:
        parts.append(
            f"No trait table covers {', '.join(cov['uncovered_classes'])} in this build: their "
            "labels are all unknown."
        )
    if cov["no_public_table"]:
        parts.append(
            "The public tables (AVONET and EltonTraits for birds, EltonTraits for mammals, "
            f"AmphiBIO for amphibians) do not cover {', '.join(cov['no_public_table'])}; labels "
            "there come only from a user-supplied CSV, if any."
        )
    return "\n\n".join(parts)


def _bench_settings(inp: CardInputs) -> list[str]:
    lines = []
    for split, doc in inp.bench_settings.items():
        st = doc.get("settings", {})
        if st:
            lines.append(
                f"- `{split}`: {st.get('candidates')} candidate taxa per query, groups of at most "
                f"{st.get('max_images')} images / {st.get('max_clips')} clips / "
                f"{st.get('max_texts')} text, at most {st.get('max_queries_per_taxon')} queries "
                f"per taxon and {st.get('max_queries_per_task')} per task, seed {st.get('seed')}; "
                f"pool: {json.dumps(doc.get('pool', {}), sort_keys=True)}"
            )
    return ["Settings (from each subset's `bench.json`):\n\n" + "\n".join(lines)] if lines else []


def _bench_section(inp: CardInputs) -> str:
    header = ["split", "level", *[t.code for t in TASKS], "all"]
    rows = []
    for split, tasks in inp.bench_tasks.items():
        grouped = tasks.group_by("task", "taxon_level").len()
        counts = {(t, lv): n for t, lv, n in grouped.iter_rows()}
        for level in LEVELS:
            per = [counts.get((t.code, level), 0) for t in TASKS]
            rows.append([f"`{split}`", level, *per, sum(per)])
    return "\n\n".join(
        [
            "## BioVITA-Bench (config `bench`)",
            "Cross-modal retrieval in 6 directions (A2T, T2A, A2I, I2A, I2T, T2I) at 3 taxonomic "
            "levels (species, genus, family). Split `test` is the seen bench (held-out items of "
            "training species), split `unseen` the bench of species held out entirely. Each "
            "query (`query_payload_id`, an id in the query modality's index) has up to 100 "
            "candidate taxa (`candidates_taxa`): the correct one (`correct_taxon`) and seeded "
            "distractors; each candidate is a group of target items (`candidates_target_ids`: up "
            "to 95 images, 28 clips or 1 text) that scores the maximum cosine similarity over its "
            "group. Top-k: the correct taxon ranks in the top k. The columns are those of the "
            "original benchmark's CSV files, lists as JSON text.",
            _table(header, rows),
            *_bench_settings(inp),
            "The id indexes are in `bench_ids/{seen,unseen}/` (`audio_index.csv` and "
            "`image_index.csv`: `id`, `file_path` = the item's path once materialized; "
            "`text_index.csv`: `id`, `species`, `genus`, `family`, `class`, `common_name`; the "
            "`.parquet` twins add `source`, `record_id` and `species_id`, which join the `audio` "
            "and `image` configs).",
        ]
    )


_PROVENANCE = (
    ("tool", "built with"),
    ("snapshot", "snapshot"),
    ("sources", "sources"),
    ("taxa", "taxa"),
    ("queries", "queries"),
    ("world", "sample world"),
    ("release", "release (tag, and the previous release it follows)"),
    ("citations", "source citations"),
)


def _plain(value: object) -> str:
    if isinstance(value, list):
        return ", ".join(map(str, value))
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return str(value)


# What each source is, for the provenance sentence (in the order the sentence names them).
_SOURCE_NAMES = {
    "xeno-canto": "Xeno-canto (API v3)",
    "inaturalist": "iNaturalist (API v1)",
    "inat-open-data": "the iNaturalist Open Data bucket",
    "gbif": "GBIF (occurrence API v1 or a Darwin Core Archive download; the Animal Sound Archive "
    "by default)",
    "treeoflife-200m": "TreeOfLife-200M (catalog + provenance, a seeded draw per species)",
    "official": "the original BioVITA release's metadata table",
}


def _origin(records: dict[str, pl.DataFrame]) -> str:
    """`Audio from X and Y, photos from Z`: the sources of the published rows."""
    parts = []
    for modality, word in (("audio", "Audio"), ("image", "photos")):
        frame = records.get(modality)
        if frame is None or "source" not in frame.columns or not frame.height:
            continue
        present = set(frame["source"].unique().to_list())
        names = [_SOURCE_NAMES[s] for s in _SOURCE_NAMES if s in present]
        names += sorted(present - set(_SOURCE_NAMES))
        parts.append(
            f"{word} from "
            + (", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0])
        )
    return ", ".join(parts) or "No media"


def _duplicates_section(inp: CardInputs) -> str | None:
    """What dedup found per source pair, and the exact copies published once (credited here)."""
    found = (inp.stats or {}).get("duplicates")
    copies = inp.copies
    if not found and (copies is None or not copies.height):
        return None
    parts = [
        "## Duplicates",
        "The same recording or photo can reach the corpus through two sources (Xeno-canto and "
        "iNaturalist are themselves GBIF datasets; recordists post to both). `biovita-data dedup` "
        "finds copies by content (exact: the same decoded audio or pixels; near: re-encoded, "
        "trimmed, resampled or resized) and keeps each group on one side of the split, so no "
        "test item has a copy in train.",
    ]
    if found:
        rows = [[r["modality"], r["kind"], r["sources"], r["groups"]] for r in found]
        parts.append(_table(["modality", "kind", "sources", "groups"], rows))
    if copies is not None and copies.height:
        kept = copies.with_columns(kept_source=pl.col("copy_of").str.split(":").list.first())
        per = kept.group_by("modality", "source", "kept_source").len().sort(pl.all())
        parts.append(
            f"{copies.height} exact copies are published once, as the member they copy; their "
            "own sources are credited here (copy -> published as):"
        )
        rows = [[m, s, k, n] for m, s, k, n in per.iter_rows()]
        parts.append(_table(["modality", "copy from", "published from", "copies"], rows))
        lines = [
            f"- {m}: {s} {r} = {c.replace(':', ' ', 1)}"
            for m, s, r, c in copies.select("modality", "source", "record_id", "copy_of")
            .sort(pl.all())
            .head(200)
            .iter_rows()
        ]
        parts.append(
            "<details><summary>the copies</summary>\n\n" + "\n".join(lines) + "\n\n</details>"
        )
    return "\n\n".join(parts)


def _provenance_section(inp: CardInputs) -> str:
    build = inp.build
    bullets = []
    for key, label in _PROVENANCE:
        if key in build:
            bullets.append(f"- {label}: {_plain(build[key])}")
    body = "\n".join(bullets) or "- no build.json was found"
    if inp.stats is not None:
        body += "\n- corpus statistics (`biovita-data stats`): `stats.json` in this repository"
    origin = (
        "The embedded sample world's synthetic recordings and photos, crawled from its loopback "
        "server with the same client code as the real sources"
        if "world" in build
        else _origin(inp.records)
    )
    parts = [
        "## Provenance",
        f"{origin}; names aligned to one taxonomic backbone; traits mapped from trait tables. "
        "Built with the `biovita` toolkit (`biovita-data publish`).",
        body,
    ]
    if build:
        dump = json.dumps(build, indent=2, sort_keys=True, ensure_ascii=False, default=str)
        parts.append(
            f"<details><summary>build.json</summary>\n\n```json\n{dump}\n```\n\n</details>"
        )
    return "\n\n".join(parts)


def _citation_section(inp: CardInputs, pretty_name: str) -> str:
    namespace, name = inp.repo_id.split("/", 1)
    snapshot = str(inp.build.get("snapshot", ""))
    year = snapshot[:4] if snapshot[:4].isdigit() else "2026"
    key = "".join(ch for ch in f"{namespace}{year}{name}".lower() if ch.isalnum())
    note = f"Built with {inp.build.get('tool', 'biovita')}"
    if snapshot:
        note += f", sources snapshot {snapshot}"
    dataset = "\n".join(
        [
            f"@misc{{{key},",
            f"  title        = {{{{{pretty_name}}}: a tri-modal biodiversity corpus}},",
            f"  author       = {{{namespace}}},",
            f"  year         = {{{year}}},",
            f"  howpublished = {{\\url{{https://huggingface.co/datasets/{inp.repo_id}}}}},",
            f"  note         = {{{note}}}",
            "}",
        ]
    )
    credits = [
        f"- {d.get('citation') or d['file']}"
        + (f" (DOI [{d['doi']}](https://doi.org/{d['doi']}))" if d.get("doi") else "")
        for d in inp.gbif_downloads
    ]
    gbif = ["GBIF downloads this corpus imported (`import-dwca`):", "\n".join(credits)]
    return "\n\n".join(
        [
            "## Citation",
            "The BioVITA work this corpus follows:",
            f"```bibtex\n{BIOVITA_BIBTEX}\n```",
            "This dataset:",
            f"```bibtex\n{dataset}\n```",
            *(gbif if credits else []),
        ]
    )


def _usage_section(inp: CardInputs) -> str:
    audio_cols = ", ".join(f"`{c}`" for c, _ in columns("audio", inp.media))
    image_cols = ", ".join(f"`{c}`" for c, _ in columns("image", inp.media))
    code = f"""```python
from datasets import load_dataset

audio = load_dataset("{inp.repo_id}", "audio", split="train")  # the default config
image = load_dataset("{inp.repo_id}", "image", split="train")
species = load_dataset("{inp.repo_id}", "species", split="train")  # lineage + 34 traits
bench = load_dataset("{inp.repo_id}", "bench", split="test")  # or "unseen"
label_names = audio.features["label"].names  # scientific names, in species_id order
```"""
    return "\n\n".join(
        [
            "## Configs and columns",
            "Plain Parquet, no loading script. Splits `train`, `test` and `unseen` for `audio` "
            "and `image` (held-out species are only in `unseen`); `species` has one split "
            "`train`; `bench` has `test` (seen species) and `unseen`. `label` is a `ClassLabel` "
            "over the species' scientific names (the `species` config's row order) and is the "
            "same in every config.",
            f"- `audio`: {audio_cols}",
            f"- `image`: {image_cols}",
            "- `species`: `label`, `species_id`, `scientific_name`, `common_name`, the lineage "
            "(`kingdom` ... `genus`, `species`), `backbone`, `inat_taxon_id`, `source_names`, "
            "`sources`, `n_audio`, `n_image`, `n_image_available`, the 34 `trait_*` and 34 "
            "`provenance_*` columns, `split_group` (`seen` or `unseen`)",
            "- `bench`: `task`, `taxon_level`, `query_payload_id`, `candidates_taxa`, "
            "`candidates_target_ids`, `correct_taxon`, `taxon_class`",
            code,
        ]
    )


def _sample_world_notice(build: dict, pretty_name: str) -> str | None:
    """The top of a card built from the embedded sample world (build.json names its `world`)."""
    world = build.get("world")
    if not isinstance(world, dict):
        return None
    return (
        f"# {pretty_name}: the BioVITA sample world ({world.get('size', '?')}, "
        f"seed {world.get('seed', '?')})\n\n"
        "> **Synthetic data.** Everything here was generated by the `biovita` toolkit's sample "
        "world (`biovita-data demo`): made-up species of a generated taxonomy with synthesised "
        "sounds and pictures, served on 127.0.0.1 for the length of the demo. Nothing comes from "
        "Xeno-canto, iNaturalist or GBIF, and no real observer is credited. The `media_url` and "
        "`page_url` columns point at that loopback server and stop working when the demo ends; "
        "the embedded media bytes are the data. Use it to try the pipeline, the loader and the "
        "model code, not to study animals."
    )


def write_card(folder: Path, inp: CardInputs, pretty_name: str = "BioVITA") -> str:
    """Write README.md (+ LICENSE.md and the figures under assets/); returns the card licence."""
    codes = [c for recs in inp.records.values() for c in recs["license"].to_list()]
    license_code = card_license(codes)
    meta = yaml.safe_dump(
        front_matter(inp, license_code, pretty_name), sort_keys=False, allow_unicode=True
    )
    intro = (
        f"# {pretty_name}\n\nA tri-modal biodiversity corpus in the manner of BioVITA: animal "
        "sounds, animal photos, and taxonomic text with 34 ecological trait labels per species, "
        "paired at the species level (different individuals), with the BioVITA-Bench retrieval "
        "benchmark. Built reproducibly from public sources by the `biovita` toolkit."
    )
    sections = [
        _sample_world_notice(inp.build, pretty_name) or intro,
        _usage_section(inp),
        _counts_section(inp),
        _license_section(inp, license_code),
        _figures_section(inp, folder),
        _traits_section(inp),
        _bench_section(inp),
        _duplicates_section(inp),
        _provenance_section(inp),
        _citation_section(inp, pretty_name),
    ]
    sections = [s for s in sections if s]
    if inp.changelog:
        sections.insert(-2, inp.changelog)
    (folder / "README.md").write_text(f"---\n{meta}---\n\n" + "\n\n".join(sections) + "\n")
    if license_code == "other":
        (folder / "LICENSE.md").write_text(license_md(inp, license_code))
    return license_code
