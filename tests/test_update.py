"""`update`: a tiny build at epoch 0, updated to epoch 1, against the world's ground truth."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from rich.console import Console
from typer.testing import CliRunner

from biovita_data.app.cli import app
from biovita_data.app.stages import run_build
from biovita_data.core import layout
from biovita_data.crawl import update as upd
from biovita_data.crawl.fetch import fetch, settings_from_env
from biovita_data.crawl.update import update
from biovita_data.sample.server import DEFAULT_XC_KEY, SampleServer
from biovita_data.sample.world import World

QUIET = Console(quiet=True)
TAXA = ["Aves", "Amphibia", "Mammalia", "Insecta"]
SOURCES = ["xeno-canto", "inaturalist"]
BUILD = {
    "align": {"throttle": False},
    "materialize": {"workers": 1, "shard_size": 8, "segment_seconds": 10.0, "throttle": False},
    "publish": {"repo_id": "biovita/update-test", "folder_only": True},
}
runner = CliRunner()


@pytest.fixture(scope="module")
def world1() -> World:
    return World("tiny", 0, epoch=1)


@pytest.fixture(scope="module")
def env() -> Iterator[pytest.MonkeyPatch]:
    mp = pytest.MonkeyPatch()
    mp.setenv("XENO_CANTO_API_KEY", DEFAULT_XC_KEY)
    mp.setenv("BIOVITA_ALLOW_LOOPBACK", "1")
    yield mp
    mp.undo()


def serve(world: World, mp: pytest.MonkeyPatch) -> SampleServer:
    server = SampleServer(world).start()
    for k, v in server.urls.items():
        mp.setenv(k, v)
    return server


def settings():
    return settings_from_env(taxa=TAXA, sources=SOURCES, throttle=False, backoff_s=0.01)


def build(out: Path) -> None:
    run_build(out, BUILD, QUIET, stages=("align", "split", "bench", "materialize", "publish"))


@pytest.fixture(scope="module")
def epochs(tiny_world: World, world1: World, env: pytest.MonkeyPatch, tmp_path_factory) -> dict:
    """OUT built at epoch 0; a copy updated to epoch 1 and rebuilt; the servers' request logs."""
    old = tmp_path_factory.mktemp("epoch0")
    server = serve(tiny_world, env)
    try:
        fetch(settings(), old, console=QUIET)
        build(old)
    finally:
        server.stop()
    new = tmp_path_factory.mktemp("epoch1")
    shutil.copytree(old, new, dirs_exist_ok=True)
    server = serve(world1, env)
    try:
        update(new, console=QUIET, settings=settings())
        updated = len(server.log)
        build(new)
        log = list(server.log)
    finally:
        server.stop()
    return {"old": old, "new": new, "update_log": log[:updated], "build_log": log[updated:]}


def raw(out: Path) -> dict[tuple, tuple]:
    rows = {}
    for s in SOURCES:
        df = pl.read_parquet(layout.raw_records_path(out, s))
        for r in df.iter_rows(named=True):
            key = (r["source"], r["modality"], r["record_id"])
            rows[key] = (r["license"], r["raw_scientific_name"], r["latitude"], r["longitude"])
    return rows


def canon(out: Path, source: str) -> pl.DataFrame:
    """A source's raw rows with URLs reduced to their paths (each server has its own port)."""
    df = pl.read_parquet(layout.raw_records_path(out, source))
    urls = [
        c for c in ("media_url", "thumbnail_url", "page_url", "sonogram_url") if c in df.columns
    ]
    return df.with_columns(pl.col(urls).str.replace(r"^https?://127\.0\.0\.1:\d+", ""))


def test_raw_changes_equal_ground_truth(epochs: dict, world1: World) -> None:
    truth = world1.changes(0, 1)
    a, b = raw(epochs["old"]), raw(epochs["new"])
    assert sorted(set(b) - set(a)) == truth["added"]
    assert set(a) - set(b) == set(truth["removed"])
    assert sorted(k for k in set(a) & set(b) if a[k] != b[k]) == truth["changed"]
    removed = pl.read_parquet(layout.removed_path(epochs["new"]))
    got = {(r["source"], r["modality"], r["record_id"]): r["reason"] for r in removed.to_dicts()}
    assert got == truth["removed"]
    assert {"withdrawn", "licence"} <= set(got.values())
    assert removed["removed_at"].str.contains(r"^\d{4}-\d\d-\d\dT").all()
    # the re-identified observation's records carry the new name; the split's new species too
    for key, (_, to) in truth["reidentified"].items():
        assert b[key][1] == to
    log = truth["log"][0]
    assert log["split"] and log["lump"] and log["crossed_unseen"]
    state = json.loads(layout.update_state_path(epochs["new"]).read_text())
    assert state["status"] == "done" and state["takedown_unknown"] == []


def test_requests_scale_with_changes(epochs: dict) -> None:
    """The update: one listing per query (each fits a page) and one iNaturalist id listing."""
    record = json.loads(layout.crawl_record_path(epochs["new"]).read_text())["sources"]
    n_xc = sum(1 for p in record["xeno-canto"]["queries"].values() if not p.get("split"))
    n_inat = len(record["inaturalist"]["queries"])
    log = epochs["update_log"]
    assert len([p for p in log if "/xeno-canto/api/3/recordings" in p]) == n_xc
    inat = [p for p in log if "/inaturalist/v1/observations" in p]
    assert len(inat) == n_inat + 1 and sum("only_id=true" in p for p in inat) == 1
    assert len(log) == n_xc + n_inat + 1  # taxa by the built-in class table: no /taxa look-ups


def test_materialize_downloads_only_new_media(epochs: dict, world1: World) -> None:
    truth = world1.changes(0, 1)
    media = [p for p in epochs["build_log"] if "/download" in p or "-static/" in p]
    got = set()
    for p in media:
        m = re.search(r"/xeno-canto/(\d+)/download|/(photos|sounds)/(\d+)", p)
        got.add(m.group(1) or m.group(3))
    new_ids = {k[2] for k in truth["added"]}
    assert got and got <= new_ids  # nothing kept from epoch 0 is downloaded again
    # every shard of epoch 0 is reused as it was
    for m in ("audio", "image"):
        for shard in sorted((epochs["old"] / "media" / m).glob("shard-*.parquet")):
            assert (epochs["new"] / "media" / m / shard.name).read_bytes() == shard.read_bytes()


def test_removed_media_not_published(epochs: dict, world1: World) -> None:
    removed = {k[2] for k in world1.changes(0, 1)["removed"]}
    for m in ("audio", "image"):
        index = pl.read_parquet(layout.media_index_path(epochs["new"], m))
        assert not set(index["record_id"]) & removed
        published = pl.concat(
            [
                pl.read_parquet(f, columns=["source", "record_id"])
                for f in (epochs["new"] / "hf" / m).glob("*.parquet")
            ]
        )
        assert published.height and not set(published["record_id"]) & removed
        # the stored bytes of the removed records stay in the kept shards only
        manifest = pl.read_parquet(layout.media_manifest_path(epochs["new"], m))
        assert set(published["record_id"]) <= set(manifest["record_id"])


def test_no_change_update_makes_only_the_requests_it_must(
    epochs: dict, world1: World, env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    shutil.copytree(epochs["new"], out)
    before = {s: canon(out, s) for s in SOURCES}
    removed = layout.removed_path(out).read_bytes()
    server = serve(world1, env)
    try:
        result = runner.invoke(app, ["update", str(out), "--no-throttle"])
        log = list(server.log)
    finally:
        server.stop()
    assert result.exit_code == 0, result.output
    record = json.loads(layout.crawl_record_path(out).read_text())["sources"]
    n_queries = sum(len(record[s]["queries"]) for s in SOURCES)
    assert len(log) == n_queries + 1  # + iNaturalist's one id listing
    # the same rows (records listed again carry this server's port in their URLs)
    assert all(canon(out, s).equals(before[s]) for s in SOURCES)
    assert layout.removed_path(out).read_bytes() == removed
    summary = json.loads(layout.update_state_path(out).read_text())
    assert all(not v["added"] and not v["changed"] and not v["removed"]
               for v in summary["sources"].values())  # fmt: skip


def test_takedown_list(epochs: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(epochs["new"], out)
    xc = pl.read_parquet(layout.raw_records_path(out, "xeno-canto"))["record_id"][0]
    photo = pl.read_parquet(layout.raw_records_path(out, "inaturalist")).filter(
        pl.col("modality") == "image"
    )["record_id"][0]
    ids = tmp_path / "ids.txt"
    ids.write_text(f"# rights holder asked\nxeno-canto:{xc}\n{photo}  # face in the photo\n999\n")
    result = runner.invoke(app, ["update", str(out), "--exclude", str(ids), "--no-crawl"])
    assert result.exit_code == 0, result.output
    assert "999" in result.output and "not a record" in result.output
    removed = pl.read_parquet(layout.removed_path(out)).filter(pl.col("reason") == "takedown")
    assert dict(zip(removed["record_id"], removed["detail"], strict=True)) == {
        xc: "rights holder asked",
        photo: "face in the photo",
    }
    for s, rid in (("xeno-canto", xc), ("inaturalist", photo)):
        assert rid not in set(pl.read_parquet(layout.raw_records_path(out, s))["record_id"])
    kept = layout.takedown_path(out).read_text()
    assert f"xeno-canto:{xc}  # rights holder asked" in kept and "999" in kept
    assert json.loads(layout.update_state_path(out).read_text())["takedown_unknown"] == ["999"]
    bad = tmp_path / "bad.txt"
    bad.write_text("nosuch:12\n")
    result = runner.invoke(app, ["update", str(out), "--exclude", str(bad), "--no-crawl"])
    assert result.exit_code != 0 and "unknown source 'nosuch'" in result.output


def test_takedown_survives_a_crawl(
    epochs: dict, world1: World, env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    shutil.copytree(epochs["new"], out)
    xc = pl.read_parquet(layout.raw_records_path(out, "xeno-canto"))["record_id"][-1]
    (ids := tmp_path / "ids.txt").write_text(f"{xc}\n")
    server = serve(world1, env)
    try:
        update(out, exclude=ids, console=QUIET, settings=settings(), relist=True)
        update(out, console=QUIET, settings=settings(), relist=True)  # listed again: stays out
    finally:
        server.stop()
    assert xc not in set(pl.read_parquet(layout.raw_records_path(out, "xeno-canto"))["record_id"])


def test_unfinished_states_refused_or_resumed(
    epochs: dict, tiny_world: World, world1: World, env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # a fetch that stopped halfway: refused with the reason
    half = tmp_path / "half"
    shutil.copytree(epochs["old"], half)
    (layout.raw_dir(half, "xeno-canto") / "state.json").write_text("{}")
    result = runner.invoke(app, ["update", str(half)])
    assert result.exit_code != 0 and "unfinished fetch" in result.output
    none = tmp_path / "none"
    result = runner.invoke(app, ["update", str(none)])
    assert result.exit_code != 0 and "holds no crawl" in result.output
    # an update killed after its first source: the rerun ends where an unbroken one does
    out = tmp_path / "out"
    shutil.copytree(epochs["old"], out)
    real = upd.merge
    calls = []

    def dies(*args, **kw):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args, **kw)

    server = serve(world1, env)
    try:
        env.setattr(upd, "merge", dies)
        with pytest.raises(KeyboardInterrupt):
            update(out, console=QUIET, settings=settings())
        env.setattr(upd, "merge", real)
        assert json.loads(layout.update_state_path(out).read_text())["status"] == "running"
        summary = update(out, console=QUIET, settings=settings())
    finally:
        server.stop()
    assert summary["resumed"] is True
    assert raw(out) == raw(epochs["new"])

    def removed(o: Path) -> pl.DataFrame:
        return pl.read_parquet(layout.removed_path(o)).drop("removed_at")

    assert removed(out).equals(removed(epochs["new"]))


def test_release_diff_equals_ground_truth(epochs: dict, world1: World) -> None:
    """`release diff` of the two builds: its withdrawn / licence removals are the world's, of
    the items the old build held; no surviving item moved split save for species changes."""
    from biovita_data.curate.release import diff

    truth = world1.changes(0, 1)
    old = set()
    for m in ("audio", "image"):
        df = pl.read_parquet(layout.media_manifest_path(epochs["old"], m))
        old |= set(zip(df["source"], df["record_id"], strict=True))
    expected: dict[str, int] = {}
    for (source, _, rid), reason in truth["removed"].items():
        if (source, rid) in old:
            expected[reason] = expected.get(reason, 0) + 1
    result = diff(epochs["old"], epochs["new"])
    by_reason = result["removed"]["by_reason"]
    assert {r: by_reason.get(r, 0) for r in expected} == expected
    assert "takedown" not in by_reason
    assert result["moved_split"]["other"] == 0
    assert result["added"]["total"] > 0 and result["changed"]["total"] > 0
    # the bench asks again what it still can, with the same candidates where no taxon it
    # shows came or went (a split, a lump and a species turning unseen change the taxa of many
    # lists in this tiny world: 127 of 228 and 94 of 146 rows kept; positional draws kept 36 %)
    for subset, b in result["bench"].items():
        assert b["kept"] > 0 and b["same_candidates"] >= 0.5 * b["kept"], (subset, b)


def test_an_update_that_fails_too_much_exits_3_and_keeps_what_it_merged(
    epochs: dict, env: pytest.MonkeyPatch, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`update --max-failed` as `fetch --max-failed`: when more of what a source's re-crawl
    parsed failed (policy exclusions aside) than the budget allows: exit 3 and one line, with
    everything merged and written all the same."""
    import pyarrow as pa

    from biovita_data.core.schemas import FAILURE, RAW_RECORD
    from biovita_data.core.tables import read_table

    out = tmp_path / "out"
    shutil.copytree(epochs["new"], out)
    listed = read_table(layout.raw_records_path(out, "xeno-canto"), RAW_RECORD).slice(0, 1)

    def xc_delta(src, queries, raw, delta, relist) -> None:  # 1 record listed, 3 + 2 failed
        delta.rows.append(listed)
        reasons = ["malformed"] * 3 + ["license_not_allowed"] * 2
        delta.failures.append(pa.table({
            "stage": ["fetch"] * 5, "source": ["xeno-canto"] * 5, "modality": ["audio"] * 5,
            "record_id": [f"bad{i}" for i in range(5)], "name": ["Turdus merula"] * 5,
            "reason": reasons, "detail": ["test"] * 5,
        }, schema=FAILURE))  # fmt: skip

    monkeypatch.setitem(upd.DELTAS, "xeno-canto", (xc_delta, "record_id"))
    monkeypatch.setitem(upd.DELTAS, "inaturalist", (lambda *a: None, "observation_id"))
    within = runner.invoke(app, ["update", str(out), "--no-throttle"])  # 3 of 6: 50 %, not more
    assert within.exit_code == 0, within.output
    over = runner.invoke(app, ["update", str(out), "--no-throttle", "--max-failed", "0.4"])
    assert over.exit_code == 3, over.output
    assert "update xeno-canto: 3 of 6 items failed (50% > --max-failed 0.4): malformed 3" in (
        over.output
    )
    failures = pl.read_parquet(layout.failures_path(out)).filter(pl.col("stage") == "fetch")
    assert {f"bad{i}" for i in range(5)} <= set(failures["record_id"])  # merged all the same
    assert json.loads(layout.update_state_path(out).read_text())["status"] == "done"
    bad = runner.invoke(app, ["update", str(out), "--max-failed", "2"])
    assert bad.exit_code == 2 and "--max-failed must be a share" in bad.output
