"""dedup: fingerprints, planted copies of the sample world found, near misses not merged."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from biovita_data.app.cli import app
from biovita_data.app.stages import run_build
from biovita_data.core import environ, layout
from biovita_data.crawl.fetch import fetch, settings_from_env
from biovita_data.crawl.http import HttpClient
from biovita_data.media import MaterializeSettings, dedup, materialize
from biovita_data.media import fingerprint as fp
from biovita_data.sample import duplicates as plants
from biovita_data.sample.server import SampleServer
from biovita_data.sample.world import World

QUIET = Console(quiet=True)


@pytest.fixture(scope="module")
def dup_world() -> World:
    return World("tiny", duplicates=True)


def test_default_world_is_unchanged_by_the_option(tiny_world: World) -> None:
    plain = World("tiny")
    assert plain.planted == [] and len(plain.recordings) == len(tiny_world.recordings)
    assert not any(r.flaw == "copy" for r in plain.recordings)


def test_planted_copies_have_ground_truth(dup_world: World, tiny_world: World) -> None:
    kinds = pl.Series([p.kind for p in dup_world.planted]).value_counts()
    counts = dict(kinds.iter_rows())
    assert counts.get("near", 0) >= 5 and counts.get("exact", 0) >= 1
    assert counts.get("negative", 0) == 2 * plants.NEGATIVES["tiny"]
    assert len(dup_world.recordings) == len(tiny_world.recordings) + len(dup_world.planted)
    first = next(p for p in dup_world.planted if p.kind == "exact")
    copy = dup_world.audio_bytes(first.source, first.record_id)
    orig = dup_world.audio_bytes(first.original_source, first.original_id)
    assert copy != orig  # another container ...
    a, b = fp.decode_audio(copy), fp.decode_audio(orig)
    assert fp.audio_fingerprint(*a).exact == fp.audio_fingerprint(*b).exact  # ... same PCM


def _fingerprint(data: bytes) -> fp.Fingerprint:
    return fp.audio_fingerprint(*fp.decode_audio(data))


def test_near_copies_match_and_other_recordings_do_not(dup_world: World) -> None:
    near = [p for p in dup_world.planted if p.kind == "near"][:4]
    prints = {}
    for p in near:
        prints[p] = (
            _fingerprint(dup_world.audio_bytes(p.original_source, p.original_id)),
            _fingerprint(dup_world.audio_bytes(p.source, p.record_id)),
        )
    for a, b in prints.values():
        _, matched, _ = fp.match_landmarks(a.hashes, a.times, b.hashes, b.times)
        assert matched >= dedup.NEAR_MATCHES
    originals = [a for a, _ in prints.values()]
    copies = [b for _, b in prints.values()]
    for i, a in enumerate(originals):
        for j, b in enumerate(copies):
            if i != j:
                _, matched, _ = fp.match_landmarks(a.hashes, a.times, b.hashes, b.times)
                assert matched < dedup.NEAR_MATCHES


def test_bad_inputs_get_a_reason_not_a_crash() -> None:
    rate = 22050
    short = np.sin(np.arange(rate // 4) / 5).astype(np.float32)[:, None]
    assert "too short" in fp.audio_fingerprint(short, rate).none
    clipped = np.sign(np.sin(np.arange(rate * 3) / 7)).astype(np.float32)[:, None]
    assert "clipped" in fp.audio_fingerprint(clipped, rate).none
    silent = np.zeros((rate * 3, 2), np.float32)
    got = fp.audio_fingerprint(silent, rate)
    assert got.none and "structure" in got.none and len(got.exact) == 32
    tiny = fp.image_fingerprint(Image.new("RGB", (1, 1)))
    assert "too small" in tiny.none
    flat = fp.image_fingerprint(Image.new("RGB", (200, 200), (40, 90, 30)))
    assert flat.none and flat.pdq is None
    again = fp.unpack(flat.pack())
    assert again.none == flat.none and again.exact == flat.exact
    # a stream longer than its header said is never held whole (materialize cuts it instead)
    printer = fp.AudioPrinter(rate, max_frames=rate)
    for _ in range(3):
        printer.add(np.zeros((rate // 2, 2), np.float32))
    assert printer.blocks == [] and fp.packed(printer.finish) is None


def test_photo_copies_are_close_in_pdq_and_other_photos_are_not(tiny_world: World) -> None:
    photos = [p for p in tiny_world.photos if p.flaw is None][:16]
    prints = [fp.image_fingerprint(Image.open(io.BytesIO(tiny_world.photo_bytes(p.id))))
              for p in photos]  # fmt: skip
    rng = np.random.default_rng(3)
    from biovita_data.media.dedup import PDQ_THRESHOLD

    kept = [(p, f) for p, f in zip(photos, prints, strict=True) if f.pdq]
    assert len(kept) >= 10
    photos, prints = [p for p, _ in kept], [f for _, f in kept]
    for p, f in kept:
        edit = plants.draw_photo_edit(rng, exact=False)
        copy = plants.edit_photo(tiny_world.photo_bytes(p.id), edit)
        g = fp.image_fingerprint(Image.open(io.BytesIO(copy)))
        assert fp.pdq_distance(f.pdq, g.pdq) <= PDQ_THRESHOLD, edit
    for i, a in enumerate(prints):
        for b in prints[i + 1 :]:
            assert fp.pdq_distance(a.pdq, b.pdq) > PDQ_THRESHOLD


@pytest.fixture(scope="module")
def deduped(dup_world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The tiny world with duplicates: Xeno-canto crawled, aligned, materialized, `dedup` run."""
    server = SampleServer(dup_world, port=0).start()
    out = tmp_path_factory.mktemp("dedup")
    try:
        with environ.scoped(server.environment):  # restored once the module is done
            settings = settings_from_env(
                taxa=["Aves", "Amphibia"], sources=["xeno-canto"], throttle=False
            )
            fetch(settings, out, console=QUIET)
            align = {"align": {"throttle": False, "min_images": 0}}
            run_build(out, align, QUIET, stages=("align",))
            ms = MaterializeSettings(
                workers=2, shard_size=50, throttle=False, modalities=("audio",)
            )
            materialize(out, ms, console=QUIET, http=HttpClient(throttle=False, retries=2))
            result = CliRunner().invoke(app, ["dedup", "--out", str(out)])
            assert result.exit_code == 0, result.output
            assert "duplicate groups" in result.output
            yield out
    finally:
        server.stop()


def test_cli_finds_the_planted_copies_and_merges_no_near_miss(
    deduped: Path, dup_world: World
) -> None:
    dups = pl.read_parquet(layout.duplicates_path(deduped))
    content = dups.filter(pl.col("kind") != "metadata")
    group_of = {(s, r): g for s, r, g in content.select("source", "record_id", "group_id").rows()}
    kept = set(pl.read_parquet(layout.media_index_path(deduped, "audio"))
               .filter(pl.col("kept")).select("source", "record_id").rows())  # fmt: skip
    copies = [p for p in dup_world.planted if p.kind != "negative"
              and p.original_source == "xeno-canto"
              and ("xeno-canto", str(p.original_id)) in kept
              and ("xeno-canto", str(p.record_id)) in kept]  # fmt: skip
    assert len(copies) >= 5
    found = [p for p in copies
             if group_of.get(("xeno-canto", str(p.record_id))) is not None
             and group_of.get(("xeno-canto", str(p.record_id)))
             == group_of.get(("xeno-canto", str(p.original_id)))]  # fmt: skip
    assert len(found) >= 0.9 * len(copies)
    kinds = dict(content.select("record_id", "kind").rows())
    for p in found:
        assert kinds[str(p.record_id)] == ("exact" if p.kind == "exact" else "near")
    truth = {("xeno-canto", str(p.record_id)): p for p in copies}
    truth |= {("xeno-canto", str(p.original_id)): p for p in copies}
    for g, members in content.group_by("group_id").agg(pl.col("record_id")).iter_rows():
        origins = {truth[("xeno-canto", r)].original_id for r in members
                   if ("xeno-canto", r) in truth}  # fmt: skip
        assert len(origins) <= 1, (g, members)  # no group joins two different recordings
    for p in dup_world.planted:
        if p.kind == "negative":
            a = group_of.get(("xeno-canto", str(p.record_id)))
            assert a is None or a != group_of.get((p.original_source, str(p.original_id)))
    meta = dups.filter(pl.col("kind") == "metadata")
    assert set(meta["kind"]) <= {"metadata"}


def test_stats_count_groups_per_source_pair(deduped: Path) -> None:
    from biovita_data.curate.stats import duplicates_per_source_pair

    rows = duplicates_per_source_pair(deduped)
    dups = pl.read_parquet(layout.duplicates_path(deduped))
    assert sum(r["groups"] for r in rows) == dups["group_id"].n_unique()
    content = [r for r in rows if r["kind"] != "metadata"]
    assert content and all(r["sources"] == "xeno-canto" for r in content)
    notes = pl.read_parquet(layout.failures_path(deduped)).filter(pl.col("stage") == "dedup")
    assert set(notes["reason"]) <= {"no_fingerprint", "exact_copy"}


def test_exact_copies_are_published_once_and_never_drawn(deduped: Path, tmp_path: Path) -> None:
    """Each exact class keeps its first member; the others (`copy_of`) are neither bench items
    nor published rows, and the card credits their sources; no bench query has a copy in train."""
    import shutil

    from biovita_data.publish import publish

    out = tmp_path / "out"
    shutil.copytree(deduped, out)
    dups = pl.read_parquet(layout.duplicates_path(out))
    exact = dups.filter(pl.col("kind") == "exact")
    copies = exact.filter(pl.col("copy_of").is_not_null())
    assert copies.height >= 1
    members = set(zip(exact["source"], exact["record_id"], strict=True))
    for group, copy_of in copies.select("group_id", "copy_of").rows():
        source, record = copy_of.split(":", 1)
        assert (source, record) in members  # the published member is one of the class ...
        mine = exact.filter(pl.col("group_id") == group)
        keeper = mine.filter((pl.col("source") == source) & (pl.col("record_id") == record))
        assert keeper["copy_of"].to_list() == [None]  # ... and is no copy itself
    withheld = set(zip(copies["source"], copies["record_id"], strict=True))
    notes = pl.read_parquet(layout.failures_path(out)).filter(pl.col("reason") == "exact_copy")
    assert set(zip(notes["source"], notes["record_id"], strict=True)) == withheld
    assert set(notes["stage"]) == {"dedup"}

    run_build(out, {"split": {}, "bench": {"candidates": 5}}, QUIET, stages=("split", "bench"))
    audio = pl.read_parquet(layout.media_manifest_path(out, "audio"))
    side = dict(zip(audio["record_id"], audio["split"], strict=True))
    content = dups.filter(pl.col("kind") != "metadata")
    drawn = set()
    for subset in ("seen", "unseen"):
        index = pl.read_csv(layout.bench_dir(out, subset) / "ids" / "audio_index.csv")
        for path in index["file_path"]:
            _, source, name = path.split("/")
            drawn.add((source, name.rsplit(".", 1)[0]))
    assert drawn and not drawn & withheld
    for _, records in content.group_by("group_id").agg("record_id").iter_rows():
        assert len({side[r] for r in records}) == 1  # a group sits on one side
        if any(("xeno-canto", r) in drawn and side[r] != "train" for r in records):
            assert all(side[r] != "train" for r in records)  # no query's copy in train

    result = publish(out, "biovita/dups", folder_only=True, allow_empty=True, console=QUIET)
    assert result.skipped["audio"]["exact_copy"] == len(withheld)
    rows = pl.read_parquet(list((out / "hf" / "audio").glob("*.parquet")), columns=["record_id"])
    published = set(rows["record_id"])
    assert not {r for _, r in withheld} & published
    assert {c.split(":", 1)[1] for c in copies["copy_of"]} <= published
    card = (out / "hf" / "README.md").read_text()
    assert "## Duplicates" in card and "exact copies are published once" in card
    for source, record in withheld:
        assert f"{source} {record} = " in card


def test_landmark_search_by_genus_block_and_spilled_to_disk(
    dup_world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Copies are searched within their block (genus); the on-disk spill, written a few records
    at a time into buckets, finds exactly the pairs of the in-memory search."""
    from biovita_data.media import dedup as dd

    near = [p for p in dup_world.planted if p.kind == "near"][:3]
    rows = []
    for k, p in enumerate(near):
        for j, (src, rid) in enumerate(
            ((p.original_source, p.original_id), (p.source, p.record_id))
        ):
            f = _fingerprint(dup_world.audio_bytes(src, rid))
            marks = {"hashes": f.hashes.astype(np.int64), "times": f.times.astype(np.int64)}
            rows.append({"i": 2 * k + j, "block": f"genus{k}", "n": len(f.hashes), **marks})
    prints = pl.DataFrame(rows, schema_overrides={"hashes": pl.List(pl.Int64),
                                                  "times": pl.List(pl.Int64)})  # fmt: skip
    found = dd.audio_pairs(prints).sort("a", "b")
    assert found.select("a", "b").rows() == [(0, 1), (2, 3), (4, 5)]
    apart = prints.with_columns(block=pl.format("r{}", pl.col("i")))  # each in a genus of its own
    assert dd.audio_pairs(apart).is_empty()
    with monkeypatch.context() as m:  # a few hundred agreements at a time
        m.setattr(dd, "JOIN_AGREEMENTS", 300)
        assert dd.audio_pairs(prints).sort("a", "b").equals(found)
    monkeypatch.setattr(dd, "SPILL_RECORDS", 2)
    spill = dd._LandmarkSpill(tmp_path / "spill")
    (tmp_path / "spill").mkdir()
    for r in rows:
        spill.add(r["i"], r["block"], r["hashes"], r["times"])
    assert spill.pairs().sort("a", "b").equals(found)
    assert not (tmp_path / "spill").exists()  # removed after the search


def test_parallel_bucket_search_finds_what_one_process_does(
    dup_world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from biovita_data.media import dedup as dd

    rows = []
    for k, p in enumerate([p for p in dup_world.planted if p.kind == "near"][:4]):
        for j, (src, rid) in enumerate(
            ((p.original_source, p.original_id), (p.source, p.record_id))
        ):
            f = _fingerprint(dup_world.audio_bytes(src, rid))
            rows.append((2 * k + j, f"genus{k}", f))
    monkeypatch.setattr(dd, "PARALLEL_LANDMARKS", 0)
    found = {}
    for workers in (1, 2):
        spill = dd._LandmarkSpill(tmp_path / f"spill{workers}")
        (tmp_path / f"spill{workers}").mkdir()
        for i, block, f in rows:
            spill.add(i, block, f.hashes, f.times)
        assert len(spill.writers) + bool(spill.rows) >= 1
        found[workers] = spill.pairs(workers).sort("a", "b")
    assert found[1].select("a", "b").rows() == [(0, 1), (2, 3), (4, 5), (6, 7)]
    assert found[2].equals(found[1])
    # a corpus past 64 x 20,000 records gets more, smaller landmark files
    assert dd.spill_buckets(1_000) == 64 and dd.spill_buckets(2_000_000) == 100


def test_ray_engine_finds_what_the_local_engine_does(
    deduped: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`dedup --engine ray`: the near search's buckets as Ray tasks (their files through the
    object store) give the same duplicates.parquet as the local processes."""
    import shutil

    pytest.importorskip("ray", reason="ray[data] is not installed (the distributed extra)")
    out = tmp_path / "out"
    shutil.copytree(deduped, out)
    local = pl.read_parquet(layout.duplicates_path(deduped))
    assert local.filter(pl.col("kind") == "near").height >= 2  # the Ray search has work to show
    runner = CliRunner()
    result = runner.invoke(app, ["dedup", "--out", str(out), "--engine", "ray", "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert "duplicate groups" in result.output
    assert pl.read_parquet(layout.duplicates_path(out)).equals(local)
    assert not list(out.glob(".dedup-*"))  # the spill is removed
    for args, words in (
        (["--engine", "spark"], "engine"),
        (["--ray-address", "auto"], "ray_address needs engine='ray'"),
    ):
        bad = runner.invoke(app, ["dedup", "--out", str(out), *args])
        assert bad.exit_code != 0 and words in bad.output, bad.output
    monkeypatch.setitem(sys.modules, "ray", None)  # Ray not installed: how to get it, no traceback
    bad = runner.invoke(app, ["dedup", "--out", str(out), "--engine", "ray"])
    assert bad.exit_code == 2 and "pip install 'biovita[distributed]'" in bad.output, bad.output


def test_near_search_runs_as_many_processes_as_fit_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from biovita_data.media import dedup as dd

    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    spill = dd._LandmarkSpill(tmp_path)
    for k in range(32):  # 32 genera of 2 x 10^8 landmarks (counted, never written)
        spill.per_block[f"genus{k}"] = 2 * 10**8
        spill.per_bucket[spill.bucket(f"genus{k}")] += 2 * 10**8
    spill.landmarks = 32 * 2 * 10**8
    largest = max(spill.per_bucket.values())
    one = dd.SEARCH_BASE_BYTES + 8 * largest + 52 * 2 * 10**8  # a process, its threads aside
    per_thread = dd.JOIN_AGREEMENTS * dd.SEARCH_AGREEMENT_BYTES
    wanted = len(spill.per_bucket)
    assert spill.search_plan(16, available=10**15) == (min(16, wanted), 16 // min(16, wanted), "")
    budget = 4 * (one + 4 * per_thread) / dd.MEMORY_SHARE  # four processes of four threads
    processes, threads, note = spill.search_plan(16, available=int(budget) + 1)
    assert (processes, threads) == (4, 4)
    assert note.startswith("near search: 4 process(es) side by side, not 16: each holds about")
    processes, threads, note = spill.search_plan(16, available=1)  # not even one fits: one
    assert (processes, threads) == (1, 16) and "1 process(es)" in note
    assert spill.search_plan(1, available=1) == (1, 16, "")  # one asked: nothing to lower
    spill.landmarks = dd.PARALLEL_LANDMARKS - 1  # a small corpus is searched in this process
    assert spill.search_plan(16, available=10**15) == (1, 16, "")


def test_available_memory_within_the_cgroup_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from biovita_data.core import memory

    (tmp_path / "meminfo").write_text("MemTotal: 100 kB\nMemAvailable:    2097152 kB\n")
    (tmp_path / "self").write_text("0::/job42\n")
    (tmp_path / "cg" / "job42").mkdir(parents=True)
    (tmp_path / "cg" / "job42" / "memory.max").write_text("1073741824\n")
    (tmp_path / "cg" / "job42" / "memory.current").write_text("268435456\n")
    monkeypatch.setattr(memory, "_MEMINFO", tmp_path / "meminfo")
    monkeypatch.setattr(memory, "_SELF_CGROUP", tmp_path / "self")
    monkeypatch.setattr(memory, "_CGROUP", tmp_path / "cg")
    assert memory.available_memory() == (1 << 30) - (1 << 28)  # the job's limit, not the host
    (tmp_path / "cg" / "job42" / "memory.max").write_text("max\n")
    assert memory.available_memory() == 2 << 30  # no limit: MemAvailable


def _same_print(a: fp.Fingerprint, b: fp.Fingerprint) -> bool:
    if a.hashes is None or b.hashes is None:
        return a.exact == b.exact and a.none == b.none and a.pdq == b.pdq
    same = np.array_equal(a.hashes, b.hashes) and np.array_equal(a.times, b.times)
    return a.exact == b.exact and same


def test_materialize_stores_the_fingerprint_dedup_would_make(dup_world: World) -> None:
    """The fingerprint made from materialize's verifying decode is the one dedup makes from the
    stored file: a recording kept as it came, one cut into FLAC segments, a photo kept as is."""
    from biovita_data.media.audio import store_audio
    from biovita_data.media.dedup import _decode, fingerprint_record
    from biovita_data.media.image import store_image

    recs = [r for r in dup_world.recordings if r.flaw is None and r.duration_s >= 6][:3]
    assert recs
    for r in recs:
        data = dup_world.audio_bytes(r.source, r.id)
        (whole,) = store_audio(data, 600.0, fingerprints=True)
        assert not whole.transcoded and whole.fingerprint
        assert _same_print(fp.unpack(whole.fingerprint), _decode("audio", whole.data))
        cut = store_audio(data, 2.5, fingerprints=True)
        assert len(cut) >= 3 and all(f.transcoded and f.fingerprint for f in cut)
        stored = fingerprint_record("audio", [(f.offset_s, None, f.fingerprint) for f in cut])
        decoded = fingerprint_record("audio", [(f.offset_s, f.data, None) for f in cut])
        assert _same_print(stored, decoded) and stored.hashes is not None
        # the segments' landmarks on one time axis still match the whole recording's
        w = fp.unpack(whole.fingerprint)
        assert fp.match_landmarks(w.hashes, w.times, stored.hashes, stored.times)[1] >= 20
        assert store_audio(data, 600.0)[0].fingerprint is None  # off: none made
    photo = next(p for p in dup_world.photos if p.flaw is None)
    data = dup_world.photo_bytes(photo.id)
    kept = store_image(data, 4096, 90, fingerprints=True)
    assert not kept.transcoded
    assert _same_print(fp.unpack(kept.fingerprint), _decode("image", kept.data))
    small = store_image(data, 64, 90, fingerprints=True)
    assert small.transcoded and fp.unpack(small.fingerprint).pdq is not None


def test_dedup_reads_stored_fingerprints_and_decodes_older_shards(
    deduped: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With fingerprints in the shards dedup decodes nothing; shards written without them (an
    older build, --no-fingerprints) are decoded instead, with the same groups as a result; the
    parallel search (2 workers) finds what one process finds."""
    import shutil

    import pyarrow.parquet as pq

    from biovita_data.media import dedup as dd
    from biovita_data.media.shards import write_media_parquet

    def groups(out: Path) -> list:
        dups = pl.read_parquet(layout.duplicates_path(out)).filter(pl.col("kind") != "metadata")
        return sorted(dups.select("source", "record_id", "kind", "copy_of").rows())

    expected = groups(deduped)
    assert any(k == "near" for _, _, k, _ in expected)
    out = tmp_path / "stored"
    shutil.copytree(deduped, out)

    def no_decoding(*_args: object) -> None:
        raise AssertionError("dedup decoded a stored file")

    with monkeypatch.context() as m:
        m.setattr(dd, "_decode", no_decoding)
        dd.dedup(out, modalities=("audio",))
    assert groups(out) == expected

    older = tmp_path / "older"
    shutil.copytree(deduped, older)
    shards = sorted((older / "media" / "audio").glob("shard-*.parquet"))
    assert shards
    for k, path in enumerate(shards):  # without fingerprints, or of an older version
        table = pq.read_table(path)
        assert table["fingerprint"].null_count < table.num_rows
        if k % 2:
            stale = [None if b is None else b"BVA1" + b[4:] if b[:4] == b"BVA2" else b
                     for b in table["fingerprint"].to_pylist()]  # fmt: skip
            assert not all(map(fp.current, stale))
            i = table.schema.get_field_index("fingerprint")
            table = table.set_column(i, "fingerprint", pa.array(stale, pa.large_binary()))
        else:
            table = table.drop_columns(["fingerprint"])
        write_media_parquet(table, path)
    monkeypatch.setattr(dd, "PARALLEL_LANDMARKS", 0)
    log = io.StringIO()  # a log, not a terminal: plain progress lines
    dd.dedup(older, modalities=("audio",), workers=2, console=Console(file=log, width=200))
    assert groups(older) == expected
    lines = log.getvalue().splitlines()
    assert any(line.startswith("dedup audio: fingerprints: ") and "(100 %)" in line
               for line in lines)  # fmt: skip
    assert any(line.startswith("dedup audio: near search: ") for line in lines)
    with pytest.raises(ValueError, match="workers must be at least 1"):
        dd.dedup(older, workers=0)


def test_landmark_search_over_sorted_arrays() -> None:
    """A copy shifted by 7 frames is found with every agreement counted (a frame of jitter
    too); a hash in more than max_postings records is ignored; chunks and threads change
    nothing."""
    from biovita_data.media.landmark_search import block_pairs

    rng = np.random.default_rng(5)
    base = rng.choice(2**27, 40, replace=False).astype(np.uint32)
    times = np.sort(rng.integers(0, 2000, 40)).astype(np.int32)
    jitter = np.where(np.arange(40) % 10 == 0, 1, 0).astype(np.int32)  # 4 of 40 a frame late
    parts = [(base, times), (base[:30], times[:30] + 7 + jitter[:30])]
    parts.append((rng.integers(0, 2**27, 40).astype(np.uint32), times))  # another recording
    common = np.uint32(2**27 + 5)  # a hash in 60 records at one offset: says nothing
    parts += [(np.array([common] * 25, np.uint32), np.arange(25, dtype=np.int32))] * 60
    records = np.concatenate([np.full(len(h), k, np.int32) for k, (h, _) in enumerate(parts)])
    hashes = np.concatenate([h for h, _ in parts])
    frames = np.concatenate([t for _, t in parts])
    results = [
        block_pairs(records, hashes, frames, max_postings=50, min_matches=20, chunk=chunk,
                    threads=threads)
        for chunk, threads in ((10**6, 1), (30, 1), (30, 2))
    ]  # fmt: skip
    for a, b, matched in results:
        assert (a.tolist(), b.tolist(), matched.tolist()) == ([0], [1], [30])
    with pytest.raises(ValueError, match="at most"):
        block_pairs(np.array([0, 2**21], np.int32), hashes[:2], frames[:2], max_postings=50,
                    min_matches=20, chunk=10)  # fmt: skip
