"""The bench stage (BioVITA-Bench) on small synthetic manifests: layout, rules, determinism."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
from collections import Counter
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
from rich.console import Console

from biovita_data.core import layout
from biovita_data.core.schemas import MEDIA, SPECIES
from biovita_data.core.tables import write_table
from biovita_data.curate.bench import (
    LEVELS,
    SUBSETS,
    TASK_BY_CODE,
    TASK_COLUMNS,
    TASKS,
    build_bench,
    index_csv_path,
    index_parquet_path,
    print_summary,
    read_official,
    task_csv_path,
    tasks_parquet_path,
)
from biovita_data.curate.release import bench_diff, snapshot_release

# ---- a synthetic world ------------------------------------------------------------------------


def make_world(
    out: Path,
    *,
    classes: int = 3,
    families: int = 2,
    genera: int = 2,
    species: int = 3,
    n_test: int = 3,
    n_train: int = 2,
    n_unseen: int = 3,
    unseen_every: int = 4,
    no_images: tuple[int, ...] = (),
    extra_images: dict[int, int] | None = None,
) -> Path:
    """Manifests for classes x families x genera x species; every `unseen_every`-th species is
    unseen. Species with index in `no_images` have no photos; `extra_images` adds test photos."""
    extra_images = extra_images or {}
    sp_rows, media_rows = [], {"audio": [], "image": []}
    i = 0
    for c in range(classes):
        klass = f"Class{c}"
        for f in range(families):
            family = f"Fam{c}x{f}idae"
            for g in range(genera):
                genus = f"Gen{c}x{f}x{g}"
                for s in range(species):
                    sid = 1000 + i
                    name = f"{genus} sp{s}"
                    unseen = i % unseen_every == unseen_every - 1
                    sp_rows.append(
                        {
                            "species_id": sid,
                            "scientific_name": name,
                            "common_name": f'Common, "bird" {i}',
                            "kingdom": "Animalia",
                            "class": klass,
                            "order": f"Ord{c}",
                            "family": family,
                            "genus": genus,
                            "species": name,
                            "split_group": "unseen" if unseen else "seen",
                        }
                    )
                    for modality in ("audio", "image"):
                        if modality == "image" and i in no_images:
                            continue
                        if unseen:
                            splits = ["unseen"] * n_unseen
                        else:
                            more = extra_images.get(i, 0) if modality == "image" else 0
                            splits = ["test"] * (n_test + more) + ["train"] * n_train
                        for j, split in enumerate(splits):
                            source = ("xeno-canto", "inaturalist")[j % 2]
                            media_rows[modality].append(
                                {
                                    "source": source,
                                    "record_id": f"{modality[0]}{sid}-{j:03d}",
                                    "modality": modality,
                                    "species_id": sid,
                                    "scientific_name": name,
                                    "match_kind": "exact",
                                    "file_format": ("mp3", "m4a")[j % 2]
                                    if modality == "audio"
                                    else "jpeg",
                                    "split": split,
                                }
                            )
                    i += 1
    # rows in a shuffled-looking order: the bench must not depend on it
    write_table(pa.Table.from_pylist(sp_rows[::-1], schema=SPECIES), layout.species_path(out))
    for modality, rows in media_rows.items():
        table = pa.Table.from_pylist(rows[::-1], schema=MEDIA)
        write_table(table, layout.media_manifest_path(out, modality))
    return out


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """36 species (9 unseen) in 12 genera, 6 families, 3 classes, built with the defaults."""
    out = make_world(tmp_path_factory.mktemp("small"), no_images=(5,), extra_images={0: 40, 1: 120})
    build_bench(out)
    return out


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """144 species (108 seen) in 4 classes: more than 100 species-level candidates."""
    out = make_world(
        tmp_path_factory.mktemp("large"), classes=4, families=3, genera=3, species=4, n_test=2
    )
    build_bench(out)
    return out


def _tasks(out: Path, subset: str) -> pl.DataFrame:
    return pl.read_parquet(tasks_parquet_path(layout.bench_dir(out, subset)))


def _index(out: Path, subset: str, modality: str) -> pl.DataFrame:
    return pl.read_parquet(index_parquet_path(layout.bench_dir(out, subset), modality))


def _species(out: Path) -> pl.DataFrame:
    return pl.read_parquet(layout.species_path(out))


def _taxon_of(out: Path, subset: str, modality: str, level: str) -> dict[int, str]:
    """id -> the item's taxon name at `level`."""
    idx = _index(out, subset, modality)
    if modality == "text":
        return dict(zip(idx["id"], idx[level], strict=True))
    sp = _species(out).select("species_id", level)
    joined = idx.join(sp, on="species_id", how="left").sort("id")
    return dict(zip(joined["id"], joined[level], strict=True))


def _files(root: Path) -> dict[str, bytes]:
    bench = root / "bench"
    return {
        p.relative_to(bench).as_posix(): p.read_bytes() for p in bench.rglob("*") if p.is_file()
    }


# ---- layout -----------------------------------------------------------------------------------


def test_official_layout_files_and_columns(small: Path) -> None:
    for subset in SUBSETS:
        bench = layout.bench_dir(small, subset)
        names = {p.relative_to(bench).as_posix() for p in bench.rglob("*") if p.is_file()}
        expected = {
            f"{level}/test_{q}_to_{t}.csv"
            for level in LEVELS
            for q, t in [
                ("audio", "image"),
                ("image", "audio"),
                ("audio", "text"),
                ("text", "audio"),
                ("image", "text"),
                ("text", "image"),
            ]
        }
        expected |= {
            f"ids/{m}_index.{ext}" for m in ("audio", "image", "text") for ext in ("csv", "parquet")
        }
        expected |= {"tasks.parquet", "bench.json"}
        assert names == expected
        for level in LEVELS:
            for task in TASKS:
                with task_csv_path(bench, level, task).open(newline="") as f:
                    rows = list(csv.reader(f))
                assert tuple(rows[0]) == TASK_COLUMNS
                assert len(rows) > 1
                for row in rows[1:]:
                    rec = dict(zip(TASK_COLUMNS, row, strict=True))
                    assert rec["task"] == task.code and rec["taxon_level"] == level
                    int(rec["query_payload_id"])
                    taxa = json.loads(rec["candidates_taxa"])
                    ids = json.loads(rec["candidates_target_ids"])
                    assert len(taxa) == len(ids)
                    assert all(isinstance(x, int) for group in ids for x in group)
        heads = {
            m: index_csv_path(bench, m).read_text().splitlines()[0]
            for m in ("audio", "image", "text")
        }
        assert heads == {
            "audio": "id,file_path",
            "image": "id,file_path",
            "text": "id,species,genus,family,class,common_name",
        }


def test_indexes_sorted_and_paths(small: Path) -> None:
    for subset in SUBSETS:
        for modality in ("audio", "image"):
            idx = _index(small, subset, modality)
            assert idx["id"].to_list() == list(range(idx.height))
            assert idx.select("source", "record_id").equals(
                idx.select("source", "record_id").sort("source", "record_id")
            )
            for row in idx.iter_rows(named=True):
                ext = (
                    "jpg"
                    if modality == "image"
                    else ("mp3" if row["record_id"].endswith(("0", "2", "4", "6", "8")) else "flac")
                )
                assert row["file_path"] == f"{modality}/{row['source']}/{row['record_id']}.{ext}"
        text = _index(small, subset, "text")
        sp = _species(small).filter(pl.col("split_group") == subset).sort("scientific_name")
        assert text["species"].to_list() == sp["scientific_name"].to_list()
        assert text["id"].to_list() == list(range(text.height))


# ---- rules ------------------------------------------------------------------------------------


def test_no_leakage(small: Path) -> None:
    sp = _species(small)
    group = dict(zip(sp["species_id"], sp["split_group"], strict=True))
    media = {m: pl.read_parquet(layout.media_manifest_path(small, m)) for m in ("audio", "image")}
    for subset in SUBSETS:
        for modality in ("audio", "image"):
            idx = _index(small, subset, modality)
            assert {group[s] for s in idx["species_id"]} == {subset}
            joined = idx.join(media[modality], on=["source", "record_id"], how="left")
            expected_split = "test" if subset == "seen" else "unseen"
            assert set(joined["split"]) == {expected_split}
            # every test item of the subset's species is in the pool
            pool = media[modality].filter(
                pl.col("species_id").is_in([s for s, g in group.items() if g == subset])
            )
            if subset == "seen":
                pool = pool.filter(pl.col("split") == "test")
            assert idx.height == pool.height
        text = _index(small, subset, "text")
        assert {group[s] for s in text["species_id"]} == {subset}


def test_candidates_correct_once_and_counts(small: Path, large: Path) -> None:
    for out in (small, large):
        for subset in SUBSETS:
            tasks = _tasks(out, subset)
            for row in tasks.iter_rows(named=True):
                cands = row["candidates_taxa"]
                assert cands.count(row["correct_taxon"]) == 1
                assert len(set(cands)) == len(cands)
                assert len(cands) == len(row["candidates_target_ids"])
    # small world: fewer than 100 taxa, so all available; large world: 100 at species level
    small_seen = _tasks(small, "seen")
    n_seen = _species(small).filter(pl.col("split_group") == "seen").height
    a2t = small_seen.filter((pl.col("task") == "A2T") & (pl.col("taxon_level") == "species"))
    assert set(a2t["candidates_taxa"].list.len()) == {n_seen}
    large_seen = _tasks(large, "seen")
    for level, n in (("species", 100), ("genus", 36), ("family", 12)):
        sel = large_seen.filter(pl.col("taxon_level") == level)
        assert set(sel["candidates_taxa"].list.len()) == {n}, level
    large_unseen = _tasks(large, "unseen").filter(pl.col("taxon_level") == "species")
    assert set(large_unseen["candidates_taxa"].list.len()) == {36}


def test_targets_exist_and_belong_to_candidate(small: Path, large: Path) -> None:
    for out in (small, large):
        for subset in SUBSETS:
            tasks = _tasks(out, subset)
            for level in LEVELS:
                taxon_of = {m: _taxon_of(out, subset, m, level) for m in ("audio", "image", "text")}
                for code in ("A2I", "I2A", "A2T", "T2A", "I2T", "T2I"):
                    task = TASK_BY_CODE[code]
                    rows = tasks.filter((pl.col("task") == code) & (pl.col("taxon_level") == level))
                    assert rows.height
                    for row in rows.iter_rows(named=True):
                        q = row["query_payload_id"]
                        assert taxon_of[task.query][q] == row["correct_taxon"]
                        for name, ids in zip(
                            row["candidates_taxa"], row["candidates_target_ids"], strict=True
                        ):
                            assert ids, name
                            assert ids == sorted(set(ids))
                            for i in ids:
                                assert taxon_of[task.target][i] == name


def test_levels_use_genus_and_family_names(small: Path) -> None:
    sp = _species(small)
    tasks = _tasks(small, "seen")
    for level in LEVELS:
        names = set(sp[level])
        sel = tasks.filter(pl.col("taxon_level") == level)
        assert set(sel["correct_taxon"]) <= names
        assert set(sel["candidates_taxa"].explode()) <= names
    genus = tasks.filter(pl.col("taxon_level") == "genus")
    assert set(genus["correct_taxon"]) == set(sp.filter(pl.col("split_group") == "seen")["genus"])
    # taxon_class = the class of the correct taxon
    klass = dict(zip(sp["family"], sp["class"], strict=True))
    fam = tasks.filter(pl.col("taxon_level") == "family")
    assert all(klass[t] == c for t, c in zip(fam["correct_taxon"], fam["taxon_class"], strict=True))


def test_text_candidates_text_equals_name(small: Path) -> None:
    off = read_official(layout.bench_dir(small, "seen"))
    text = off.text_index
    for level in LEVELS:
        for code in ("A2T", "I2T"):
            rows = off.task(level, code)
            for row in rows.iter_rows(named=True):
                for name, ids in zip(
                    row["candidates_taxa"], row["candidates_target_ids"], strict=True
                ):
                    assert len(ids) == 1
                    assert text[ids[0], level] == name
        # text queries: one per taxon
        t2a = off.task(level, "T2A")
        assert t2a["correct_taxon"].is_unique().all()
        assert [text[i, level] for i in t2a["query_payload_id"]] == t2a["correct_taxon"].to_list()


def test_group_caps(tmp_path: Path, small: Path) -> None:
    # defaults: species 1 has 123 test photos -> 95; family groups of many species -> <= 95 / 28
    tasks = _tasks(small, "seen")
    sizes = tasks.select(
        "task", pl.col("candidates_target_ids").list.eval(pl.element().list.len()).alias("n")
    ).explode("n")
    assert sizes.filter(pl.col("task").is_in(["A2I", "T2I"]))["n"].max() == 95
    assert sizes.filter(pl.col("task").is_in(["I2A", "T2A"]))["n"].max() <= 28
    assert sizes.filter(pl.col("task").is_in(["A2T", "I2T"]))["n"].max() == 1
    out = make_world(tmp_path)
    build_bench(out, max_images=2, max_clips=1)
    for subset in SUBSETS:
        t = _tasks(out, subset)
        n = t.select(
            "task", pl.col("candidates_target_ids").list.eval(pl.element().list.len()).alias("n")
        ).explode("n")
        assert n.filter(pl.col("task").is_in(["A2I", "T2I"]))["n"].max() == 2
        assert n.filter(pl.col("task").is_in(["I2A", "T2A"]))["n"].max() == 1
        # a group is fixed per taxon within a task
        for level in LEVELS:
            sel = t.filter((pl.col("task") == "A2I") & (pl.col("taxon_level") == level))
            seen: dict[str, list[int]] = {}
            for row in sel.iter_rows(named=True):
                for name, ids in zip(
                    row["candidates_taxa"], row["candidates_target_ids"], strict=True
                ):
                    assert seen.setdefault(name, ids) == ids


def test_query_never_in_own_group(small: Path) -> None:
    for subset in SUBSETS:
        paths = {m: _index(small, subset, m)["file_path"].to_list() for m in ("audio", "image")}
        paths["text"] = [f"text:{i}" for i in range(_index(small, subset, "text").height)]
        for row in _tasks(small, subset).iter_rows(named=True):
            task = TASK_BY_CODE[row["task"]]
            q = paths[task.query][row["query_payload_id"]]
            for ids in row["candidates_target_ids"]:
                assert q not in {paths[task.target][i] for i in ids}


def test_skipped_queries_counted(small: Path) -> None:
    # species 5 (seen) has no photos: its audio queries are skipped in A2I at species level only
    doc = json.loads((layout.bench_dir(small, "seen") / "bench.json").read_text())
    a2i = doc["tasks"]["species"]["A2I"]
    assert a2i["skipped"] == 3 and doc["tasks"]["genus"]["A2I"]["skipped"] == 0
    assert doc["tasks"]["species"]["A2T"]["skipped"] == 0
    assert doc["tasks"]["species"]["T2I"]["skipped"] == 1
    sp5 = _species(small).filter(pl.col("species_id") == 1005)["scientific_name"][0]
    sel = _tasks(small, "seen").filter(
        (pl.col("task") == "A2I") & (pl.col("taxon_level") == "species")
    )
    assert sp5 not in set(sel["correct_taxon"]) and sp5 not in set(sel["candidates_taxa"].explode())
    for level in LEVELS:
        for code, st in doc["tasks"][level].items():
            task = TASK_BY_CODE[code]
            pool = doc["pool"][task.query] if task.query != "text" else None
            if pool is not None:
                assert st["queries"] + st["skipped"] + st["capped"] == pool
            # the defaults use every usable query but for photos past 25 of one taxon
            if task.query == "image" and task.target == "audio":
                per_taxon = Counter(_taxon_of(small, "seen", "image", level).values())
                assert st["capped"] == sum(max(0, n - 25) for n in per_taxon.values()) > 0
            elif task.query != "image":
                assert st["capped"] == 0


def test_query_caps(tmp_path: Path) -> None:
    out = make_world(tmp_path, n_test=6)
    build_bench(out, max_queries_per_taxon=2)
    tasks = _tasks(out, "seen")
    per = tasks.group_by("task", "taxon_level", "correct_taxon").len()
    assert per["len"].max() == 2
    build_bench(out, max_queries_per_task=7)
    tasks = _tasks(out, "seen")
    counts = tasks.group_by("task", "taxon_level").len()
    assert set(counts["len"]) == {7, 6}  # 6 families: T2A and T2I at family level have 6 texts
    assert counts.filter(pl.col("len") == 6)["taxon_level"].to_list() == ["family"] * 2
    # the per-task cap spreads queries over taxa (one per taxon first)
    a2i = tasks.filter((pl.col("task") == "A2I") & (pl.col("taxon_level") == "species"))
    assert a2i["correct_taxon"].is_unique().all()
    doc = json.loads((layout.bench_dir(out, "seen") / "bench.json").read_text())
    assert doc["tasks"]["species"]["A2I"]["capped"] == 27 * 6 - 7
    assert doc["settings"]["max_queries_per_task"] == 7


def test_read_official_round_trips(small: Path) -> None:
    for subset in SUBSETS:
        bench = layout.bench_dir(small, subset)
        off = read_official(bench)
        assert off.tasks.equals(_tasks(small, subset))
        assert off.tasks.schema == _tasks(small, subset).schema
        for m, cols in (("audio", ["id", "file_path"]), ("image", ["id", "file_path"])):
            assert off.index(m).equals(_index(small, subset, m).select(cols))
        text_cols = ["id", "species", "genus", "family", "class", "common_name"]
        assert off.text_index.equals(_index(small, subset, "text").select(text_cols))


def _corrupt(src: Path, dst: Path, edit) -> Path:
    import shutil

    shutil.copytree(src, dst)
    path = task_csv_path(dst, "genus", "I2A")
    text = path.read_text()
    path.write_text(edit(text))
    return path


@pytest.mark.parametrize(
    "edit",
    [
        lambda t: t.replace("taxon_class", "klass", 1),
        lambda t: t.replace("[[", "[(", 1),
        lambda t: t.replace("],[", "],", 1),
        lambda t: "\n".join([t.splitlines()[0], t.splitlines()[1].replace("I2A", "A2I", 1)]),
    ],
    ids=["columns", "json", "lengths", "task"],
)
def test_read_official_rejects_malformed(small: Path, tmp_path: Path, edit) -> None:
    path = _corrupt(layout.bench_dir(small, "seen"), tmp_path / "b", edit)
    with pytest.raises(ValueError, match=re.escape(str(path))):
        read_official(tmp_path / "b")


def test_read_official_keeps_extra_columns(small: Path, tmp_path: Path) -> None:
    """The released bench's query_id (task files) and taxon columns (index files) are kept after
    the layout's columns, in any column order, with a note; a missing column still fails."""
    import shutil

    src = layout.bench_dir(small, "seen")
    dst = tmp_path / "b"
    shutil.copytree(src, dst)
    task_path = task_csv_path(dst, "species", "A2I")
    tasks = pl.read_csv(task_path)
    tasks = tasks.with_columns(pl.format("q{}", pl.int_range(pl.len())).alias("query_id"))
    tasks.select("query_id", *reversed(TASK_COLUMNS)).write_csv(task_path)
    audio_path = index_csv_path(dst, "audio")
    pl.read_csv(audio_path).with_columns(pl.lit("Aves").alias("class")).write_csv(audio_path)
    off = read_official(dst)
    plain = read_official(src)
    assert off.tasks.columns == [*TASK_COLUMNS, "query_id"]
    assert off.tasks.select(TASK_COLUMNS).equals(plain.tasks)
    a2i = off.task("species", "A2I")
    assert a2i["query_id"].to_list() == [f"q{i}" for i in range(a2i.height)]
    assert off.tasks.filter(pl.col("task") != "A2I")["query_id"].null_count() > 0
    assert off.audio_index.columns == ["id", "file_path", "class"]
    assert off.audio_index.select("id", "file_path").equals(plain.audio_index)
    assert set(off.audio_index["class"]) == {"Aves"}
    assert len(off.notes) == 2 and not plain.notes
    assert str(task_path) in off.notes[1] and "query_id" in off.notes[1]
    assert str(audio_path) in off.notes[0] and "'class'" in off.notes[0]
    tasks.drop("correct_taxon").write_csv(task_path)
    want = re.escape(str(task_path)) + r": missing column\(s\) \['correct_taxon'\]"
    with pytest.raises(ValueError, match=want):
        read_official(dst)


def test_deterministic_bytes_and_seed(tmp_path: Path) -> None:
    a = make_world(tmp_path / "a", classes=2)
    b = make_world(tmp_path / "b", classes=2)
    build_bench(a)
    build_bench(b)
    fa, fb = _files(a), _files(b)
    assert fa.keys() == fb.keys() and len(fa) == 2 * 26
    assert all(fa[k] == fb[k] for k in fa)
    build_bench(b)  # a rebuild in place writes the same bytes
    assert _files(b) == fa
    build_bench(b, seed=1)
    fc = _files(b)
    changed = {k for k in fa if fa[k] != fc[k]}
    assert "seen/species/test_audio_to_text.csv" in changed
    assert "seen/ids/audio_index.csv" not in changed
    s0 = _tasks(a, "seen").filter(pl.col("taxon_level") == "species")
    s1 = _tasks(b, "seen").filter(pl.col("taxon_level") == "species")
    assert s0["query_payload_id"].equals(s1["query_payload_id"])
    assert not s0["candidates_taxa"].equals(s1["candidates_taxa"])


def test_distractors_drawn_from_many_taxa(large: Path) -> None:
    # 108 seen species, 100 candidates: each query leaves out 8 different ones
    sel = _tasks(large, "seen").filter(
        (pl.col("task") == "A2T") & (pl.col("taxon_level") == "species")
    )
    firsts = sel["candidates_taxa"].list.first()
    assert firsts.n_unique() > 10  # order is shuffled
    pairs = zip(sel["candidates_taxa"].to_list(), sel["correct_taxon"].to_list(), strict=True)
    where = [c.index(t) for c, t in pairs]
    assert len(set(where)) > 10  # the correct taxon is anywhere
    left_out = {frozenset(c) for c in sel["candidates_taxa"].to_list()}
    assert len(left_out) > 10


def test_empty_unseen_subset(tmp_path: Path) -> None:
    out = make_world(tmp_path, classes=1, unseen_every=1000)
    result = build_bench(out)
    assert all(s.queries == 0 for s in result.tasks if s.subset == "unseen")
    bench = layout.bench_dir(out, "unseen")
    assert task_csv_path(bench, "species", "A2I").read_text() == ",".join(TASK_COLUMNS) + "\n"
    assert _tasks(out, "unseen").height == 0
    assert _index(out, "unseen", "text").height == 0
    off = read_official(bench)
    assert off.tasks.height == 0 and off.tasks.schema == _tasks(out, "unseen").schema


def test_summary_and_result(small: Path) -> None:
    result = build_bench(small)
    assert len(result.tasks) == 36
    st = result.stats("seen", "species", "A2T")
    assert st.queries > 0 and st.mean_candidates == 27
    console = Console(record=True, width=200, file=io.StringIO())
    print_summary(result, console)
    text = console.export_text()
    assert "A2I" in text and "unseen" in text and "family" in text


def test_missing_manifests(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"species\.parquet"):
        build_bench(tmp_path)
    make_world(tmp_path)
    with pytest.raises(ValueError, match="candidates"):
        build_bench(tmp_path, candidates=0)


# ---- bench media as files ---------------------------------------------------------------------


def _write_media(out: Path, modality: str, shards: list[list[dict]]) -> None:
    """Media shards + index.parquet as materialize leaves them (only the columns that matter
    filled with care: source, record_id, segment, path, bytes, sha256)."""
    import hashlib

    import pyarrow.parquet as pq

    from biovita_data.core.schemas import MEDIA_FILE
    from biovita_data.media.index import MEDIA_INDEX

    index_rows = []
    for k, rows in enumerate(shards):
        full = []
        for r in rows:
            row = {f.name: None for f in MEDIA_FILE}
            row |= {"modality": modality, "n_segments": 1, "transcoded": False}
            row |= {"file_format": "flac" if modality == "audio" else "jpg", **r}
            row["sha256"] = hashlib.sha256(row["bytes"]).hexdigest()
            full.append(row)
            index_rows.append(
                {
                    **{c: v for c, v in row.items() if c != "bytes"},
                    "size": len(row["bytes"]),
                    "shard": k,
                    "kept": True,
                }
            )
        path = layout.media_shard_path(out, modality, k)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(full, schema=MEDIA_FILE), path)
    write_table(
        pa.Table.from_pylist(index_rows, schema=MEDIA_INDEX), layout.media_index_path(out, modality)
    )


def test_export_media_writes_every_indexed_medium(small: Path, tmp_path: Path) -> None:
    import shutil

    from typer.testing import CliRunner

    from biovita_data.app.cli import app
    from biovita_data.media.export import bench_media, export_bench_media

    out, dest = tmp_path / "out", tmp_path / "files"
    shutil.copytree(small / "bench", out / "bench")
    items = bench_media(out)
    assert set(items["subset"]) == set(SUBSETS) and set(items["modality"]) == {"audio", "image"}
    csv_only = tmp_path / "csv_only"
    shutil.copytree(small / "bench", csv_only / "bench")
    for p in (csv_only / "bench").rglob("*.parquet"):
        p.unlink()  # the official layout: the index CSVs have only id, file_path
    assert bench_media(csv_only).equals(items)
    media = items.unique(["modality", "source", "record_id"], maintain_order=True)
    content = {}  # (modality, source, record_id) -> the bytes exported (segment 0)
    shards: dict[str, list[list[dict]]] = {"audio": [[], []], "image": [[], []]}
    left_out = None
    for i, r in enumerate(media.iter_rows(named=True)):
        m, key = r["modality"], (r["modality"], r["source"], r["record_id"])
        base = {"source": r["source"], "record_id": r["record_id"]}
        data = f"{m}:{r['source']}:{r['record_id']}".encode()
        if m == "image" and left_out is None:
            left_out = r  # materialize could not keep it
            continue
        if m == "audio" and not content:  # a segmented recording: <id>_s000.flac, _s001.flac
            stem = r["file_path"].rsplit(".", 1)[0]
            shards[m][1] += [
                {
                    **base,
                    "segment": s,
                    "n_segments": 2,
                    "path": f"{stem}_s{s:03d}.flac",
                    "bytes": data + f"#s{s}".encode(),
                }
                for s in (1, 0)
            ]
            content[key] = data + b"#s0"
            continue
        shards[m][i % 2].append({**base, "segment": 0, "path": r["file_path"], "bytes": data})
        content[key] = data
    for m, rows in shards.items():
        _write_media(out, m, rows)

    result = export_bench_media(out, dest)
    assert result.written == len(content) and result.unchanged == 0
    assert (
        result.missing.height
        == items.filter(
            (pl.col("modality") == "image") & (pl.col("record_id") == left_out["record_id"])
        ).height
    )
    assert set(result.missing["file_path"]) == {left_out["file_path"]}
    for r in items.iter_rows(named=True):
        key = (r["modality"], r["source"], r["record_id"])
        path = dest / r["file_path"]
        assert path.read_bytes() == content[key] if key in content else not path.exists()
    assert sum(1 for p in dest.rglob("*") if p.is_file()) == len(content)

    # a re-run rewrites only what differs
    changed = dest / items.filter(pl.col("modality") == "audio")["file_path"][-1]
    changed.write_bytes(b"stale")
    again = export_bench_media(out, dest)
    assert (again.written, again.unchanged) == (1, len(content) - 1)
    assert changed.read_bytes() != b"stale"

    # the CLI names what is missing and fails; complete shards export cleanly
    runner = CliRunner()
    bad = runner.invoke(app, ["bench", "export-media", str(out), "--to", str(dest)])
    assert bad.exit_code == 2 and left_out["record_id"] in bad.output
    shards["image"].append([
        {"source": left_out["source"], "record_id": left_out["record_id"], "segment": 0,
         "path": left_out["file_path"], "bytes": b"late"}
    ])  # fmt: skip
    _write_media(out, "image", shards["image"])
    ok = runner.invoke(app, ["bench", "export-media", str(out), "--to", str(dest)])
    assert ok.exit_code == 0, ok.output
    assert (dest / left_out["file_path"]).read_bytes() == b"late"
    assert f"{len(content) + 1} files" in ok.output


def test_export_media_needs_a_bench_and_media(tmp_path: Path) -> None:
    from biovita_data.media.export import export_bench_media

    with pytest.raises(FileNotFoundError, match="bench id indexes"):
        export_bench_media(tmp_path, tmp_path / "files")


def _by_identity(out: Path, subset: str) -> dict[tuple, tuple]:
    """Each task row keyed by (level, task, the query's identity), with its candidate taxa in
    order and each candidate's target items by identity (pool ids shift when items come or go)."""
    who = {
        m: [f"{s}:{r}" for s, r in _index(out, subset, m).select("source", "record_id").rows()]
        for m in ("audio", "image")
    }
    who["text"] = _index(out, subset, "text")["species"].to_list()
    rows = {}
    for row in _tasks(out, subset).iter_rows(named=True):
        task = TASK_BY_CODE[row["task"]]
        key = (row["taxon_level"], row["task"], who[task.query][row["query_payload_id"]])
        groups = tuple(frozenset(who[task.target][i] for i in ids)
                       for ids in row["candidates_target_ids"])  # fmt: skip
        rows[key] = (tuple(row["candidates_taxa"]), groups)
    return rows


def test_a_rebuild_after_an_update_changes_only_what_it_touches(tmp_path: Path) -> None:
    """Bench draws by keys: withdrawing a recording and adding a photo change only the rows that
    ask or show them; a new species changes only the candidate lists it enters (one taxon in,
    one out, the order of the rest kept); everything else is asked as before."""
    out = make_world(tmp_path / "out", classes=4, families=3, genera=3, species=4, n_test=3)
    build_bench(out, candidates=10)
    before = _by_identity(out, "seen")
    shutil.copytree(out / "bench", tmp_path / "old" / "bench")
    audio = pl.read_parquet(layout.media_manifest_path(out, "audio"))
    gone = audio.filter(pl.col("split") == "test").row(0, named=True)
    images = pl.read_parquet(layout.media_manifest_path(out, "image"))
    new = {**images.filter(pl.col("split") == "test").row(5, named=True), "record_id": "new-1"}
    write_table(
        audio.filter(pl.col("record_id") != gone["record_id"]).to_arrow().cast(MEDIA),
        layout.media_manifest_path(out, "audio"),
    )
    write_table(
        pl.concat([images, pl.DataFrame([new], schema=images.schema)]).to_arrow().cast(MEDIA),
        layout.media_manifest_path(out, "image"),
    )
    build_bench(out, candidates=10)
    after = _by_identity(out, "seen")
    gone_id, new_id = f"{gone['source']}:{gone['record_id']}", f"{new['source']}:new-1"
    for level, task in {k[:2] for k in before}:
        b = {k[2] for k in before if k[:2] == (level, task)}
        a = {k[2] for k in after if k[:2] == (level, task)}
        # past 25 queries of one taxon the keys choose: the new photo may take one's place,
        # the withdrawn recording may give its place to one
        assert len(b - a - {gone_id}) <= (new_id in a) and len(a - b - {new_id}) <= (gone_id in b)
    assert any(k[2] == gone_id for k in before) and any(k[2] == new_id for k in after)
    both = before.keys() & after.keys()
    assert len(both) > 1000
    assert all(before[k][0] == after[k][0] for k in both)  # the same candidates, same order
    touched = {k for k in both if before[k][1] != after[k][1]}
    for k in touched:  # a group changed only where it held the withdrawn item or takes the new
        changed = [a ^ b for a, b in zip(before[k][1], after[k][1], strict=True) if a != b]
        assert changed and all(d <= {gone_id, new_id} for d in changed)
    assert len(touched) < 0.2 * len(both)
    # `release diff` counts the same (by identity), and keeps a tagged release's rows for it
    seen = bench_diff(tmp_path / "old", out)["seen"]
    assert seen == {"kept": len(both), "same_candidates": len(both),
                    "added": len(after.keys() - before.keys()),
                    "gone": len(before.keys() - after.keys())}  # fmt: skip
    unseen = bench_diff(tmp_path / "old", out)["unseen"]
    assert (
        unseen["kept"] == unseen["same_candidates"] > 0 and unseen["added"] == unseen["gone"] == 0
    )
    release = snapshot_release(out, "v1")
    assert (release / "bench" / "seen" / "bench_rows.parquet").is_file()

    # a new seen species with test items of every modality: only the lists it enters change
    species = pl.read_parquet(layout.species_path(out))
    first = species.filter(pl.col("split_group") == "seen").row(0, named=True)
    name = f"{first['genus']} novus"
    extra = {**first, "species_id": 9999, "scientific_name": name, "species": name}
    write_table(
        pl.concat([species, pl.DataFrame([extra], schema=species.schema)]).to_arrow().cast(SPECIES),
        layout.species_path(out),
    )
    for modality in ("audio", "image"):
        manifest = pl.read_parquet(layout.media_manifest_path(out, modality))
        template = {**manifest.row(0, named=True), "species_id": 9999, "split": "test"}
        rows = [{**template, "scientific_name": name, "record_id": f"nov-{modality}-{j}"}
                for j in range(3)]  # fmt: skip
        grown = pl.concat([manifest, pl.DataFrame(rows, schema=manifest.schema)])
        write_table(grown.to_arrow().cast(MEDIA), layout.media_manifest_path(out, modality))
    build_bench(out, candidates=10)
    grown = _by_identity(out, "seen")
    species_rows = [k for k in after if k[0] == "species" and k in grown]
    entered = 0
    for k in species_rows:
        old, now = after[k][0], grown[k][0]
        if old == now:
            continue
        entered += 1
        assert name in now and len(set(old) - set(now)) == 1  # one taxon in, one out
        assert [t for t in now if t != name] == [t for t in old if t in now]  # order kept
    assert 0 < entered < 0.3 * len(species_rows)
    since = bench_diff(release, out)["seen"]
    changed_lists = sum(after[k][0] != grown[k][0] for k in after.keys() & grown.keys())
    assert since["kept"] - since["same_candidates"] == changed_lists >= entered
    assert since["added"] == len(grown.keys() - after.keys()) > 0
