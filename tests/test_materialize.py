"""materialize on the tiny sample world, checked against its ground truth (World.expected)."""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import soundfile as sf
from PIL import Image
from rich.console import Console

from biovita_data.app.stages import run_build
from biovita_data.core import environ, layout
from biovita_data.crawl.fetch import fetch, settings_from_env
from biovita_data.crawl.http import HttpClient
from biovita_data.media import MaterializeSettings, materialize
from biovita_data.media.audio import store_audio
from biovita_data.media.image import store_image
from biovita_data.media.records import ItemFailure
from biovita_data.media.settings import WorkItem
from biovita_data.sample.faults import FaultPlan
from biovita_data.sample.server import SampleServer
from biovita_data.sample.world import World

QUIET = Console(quiet=True)
TAXA = ["Aves", "Amphibia", "Mammalia", "Insecta"]
# Small shards (several per modality: duplicates cross shards) and 10 s segments (the tiny
# world's kept recordings last 2-20 s, so some are cut and some are not).
SETTINGS = {"workers": 2, "shard_size": 8, "segment_seconds": 10.0, "throttle": False}


def _settings(**kw) -> MaterializeSettings:
    return MaterializeSettings(**{**SETTINGS, **kw})


def _client() -> HttpClient:
    return HttpClient(throttle=False, retries=2, backoff_s=0.01)


@pytest.fixture(scope="module")
def server(tiny_world: World) -> Iterator[SampleServer]:
    srv = SampleServer(tiny_world, port=0).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def built(server: SampleServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """OUT with both APIs crawled from the tiny world, then align and split (no media yet); the
    server's environment stays set for the module's tests and is restored after them."""
    out = tmp_path_factory.mktemp("built")
    with environ.scoped(server.environment):
        settings = settings_from_env(
            taxa=TAXA, sources=["xeno-canto", "inaturalist"], throttle=False
        )
        fetch(settings, out, console=QUIET)
        run_build(out, {"align": {"throttle": False}}, QUIET, stages=("align", "split"))
        yield out


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, dirs_exist_ok=True)
    return dst


@pytest.fixture(scope="module")
def local_run(built: Path, tmp_path_factory: pytest.TempPathFactory):
    """`built` materialized by the local engine (the reference for every other run)."""
    out = _copy(built, tmp_path_factory.mktemp("local"))
    return out, materialize(out, _settings(), console=QUIET, http=_client())


def _media_files(out: Path) -> dict[str, bytes]:
    """Every file under OUT/media and the failures table, by relative path."""
    paths = [*sorted((out / "media").rglob("*.parquet")), out / "manifests" / "failures.parquet"]
    return {str(p.relative_to(out)): p.read_bytes() for p in paths}


def _manifest(out: Path, modality: str) -> pl.DataFrame:
    return pl.read_parquet(layout.media_manifest_path(out, modality))


def _shards(out: Path, modality: str) -> pl.DataFrame:
    return pl.read_parquet(sorted(layout.media_dir(out, modality).glob("shard-?????.parquet")))


def _truth(world: World) -> dict[tuple[str, str, str], str]:
    return {(e.modality, e.source, str(e.record_id)): e.media for e in world.expected()}


def test_every_kept_record_has_verified_files(local_run, tiny_world: World) -> None:
    out, result = local_run
    truth = _truth(tiny_world)
    for modality in ("audio", "image"):
        manifest = _manifest(out, modality)
        index = pl.read_parquet(layout.media_index_path(out, modality)).filter(pl.col("kept"))
        files = _shards(out, modality).join(
            index.select("source", "record_id", "segment"), on=["source", "record_id", "segment"]
        )
        keep = {
            (r["source"], r["record_id"]): r
            for r in manifest.iter_rows(named=True)
            if truth[(modality, r["source"], r["record_id"])] == "keep"
        }
        assert set(zip(files["source"], files["record_id"], strict=True)) == set(keep)
        assert result.by_modality(modality).kept == len(keep)
        for f in files.iter_rows(named=True):
            data = f["bytes"]
            assert hashlib.sha256(data).hexdigest() == f["sha256"]
            assert f["path"].startswith(f"{modality}/{f['source']}/{f['record_id']}")
            if modality == "image":
                im = Image.open(io.BytesIO(data))
                im.load()
                assert im.format == "JPEG" and im.mode == "RGB"
                assert min(im.size) <= 512 and im.size == (f["width"], f["height"])
                photo = tiny_world.photo_by_id[int(f["record_id"])]
                assert im.size == _expected_size(photo.width, photo.height, 512)
                continue
            info = sf.info(io.BytesIO(data))
            samples, rate = sf.read(io.BytesIO(data), dtype="float32")
            assert rate == f["sample_rate"] and info.channels == f["channels"]
            assert len(samples) / rate == pytest.approx(f["duration_s"], abs=1e-6)
            assert f["duration_s"] <= SETTINGS["segment_seconds"] + 1e-6
            assert info.format == f["file_format"].upper()
        _check_audio_records(files, keep, tiny_world) if modality == "audio" else None


def _expected_size(width: int, height: int, size: int) -> tuple[int, int]:
    short = min(width, height)
    if short <= size:
        return width, height
    k = size / short
    return (size, round(height * k)) if width <= height else (round(width * k), size)


def _check_audio_records(files: pl.DataFrame, keep: dict, world: World) -> None:
    segmented = kept_original = 0
    for (source, rid), group in files.group_by(["source", "record_id"]):
        rows = group.sort("segment").to_dicts()
        rec = world.recording_by_id[(source, int(rid))]
        total = sum(r["duration_s"] for r in rows)
        assert total == pytest.approx(rec.duration_s, abs=0.06)  # AAC frames round a little
        assert [r["segment"] for r in rows] == list(range(len(rows)))
        assert {r["n_segments"] for r in rows} == {len(rows)}
        assert len(rows) == math.ceil(total / SETTINGS["segment_seconds"] - 1e-9)
        offsets = np.cumsum([0.0] + [r["duration_s"] for r in rows[:-1]])
        assert [r["offset_s"] for r in rows] == pytest.approx(list(offsets), abs=1e-6)
        assert {r["sample_rate"] for r in rows} == {rec.sample_rate}
        assert {r["channels"] for r in rows} == {rec.channels}
        if len(rows) > 1 or rec.fmt == "m4a":  # M4A and cut recordings become FLAC
            segmented += len(rows) > 1
            assert all(r["file_format"] == "flac" and r["transcoded"] for r in rows)
            assert all(r["path"].endswith(".flac") for r in rows)
        else:  # kept as downloaded, byte for byte
            kept_original += 1
            (row,) = rows
            assert row["file_format"] == rec.fmt and not row["transcoded"]
            assert row["bytes"] == world.audio_bytes(source, int(rid))
            assert row["path"] == layout.media_file_path("audio", source, rid, rec.fmt)
        assert {r["source_sha256"] for r in rows} == {
            hashlib.sha256(world.audio_bytes(source, int(rid))).hexdigest()
        }
    assert segmented >= 3 and kept_original >= 10
    assert any(world.recording_by_id[k[0], int(k[1])].fmt == "m4a" for k in keep)


def test_failures_are_the_ground_truth_and_nothing_disappears(local_run, tiny_world) -> None:
    out, result = local_run
    truth = _truth(tiny_world)
    failures = pl.read_parquet(out / "manifests" / "failures.parquet").filter(
        pl.col("stage") == "materialize"
    )
    got = {(r["modality"], r["source"], r["record_id"]): r["reason"] for r in failures.to_dicts()}
    assert len(got) == len(failures)  # one row per failed record
    want = {}
    for modality in ("audio", "image"):
        manifest = _manifest(out, modality)
        index = pl.read_parquet(layout.media_index_path(out, modality))
        kept = set(index.filter(pl.col("kept")).select("source", "record_id").iter_rows())
        for source, rid in manifest.select("source", "record_id").iter_rows():
            key = (modality, source, rid)
            if truth[key] != "keep":
                want[key] = truth[key]
            # every record is either kept or has exactly one failure row
            assert ((source, rid) in kept) != (key in got)
    assert got == want
    assert set(want.values()) == {"undecodable", "silent", "duplicate", "decompression_bomb"}
    dup = next(k for k, v in got.items() if v == "duplicate")
    original = tiny_world.recording_by_id[(dup[1], int(dup[2]))].duplicate_of
    row = (
        pl.read_parquet(layout.media_index_path(out, "audio"))
        .filter(pl.col("record_id") == dup[2])
        .row(0, named=True)
    )
    assert not row["kept"] and row["duplicate_of"] == str(original)
    assert result.by_modality("audio").failed == {"duplicate": 1, "silent": 1, "undecodable": 1}


def test_http_failures_after_retries_become_failure_rows(
    built: Path, server: SampleServer, tiny_world: World, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    manifest = _manifest(built, "audio").head(4)
    urls = manifest["media_url"].to_list()
    failing = FaultPlan(rate=1.0, max_consecutive=99, kinds=("503",), retry_after=0)
    with SampleServer(tiny_world, faults=failing) as down:
        urls[0] = f"{server.root}/inaturalist-static/sounds/1.mp3"  # 404: not retried
        urls[1] = "http://127.0.0.1:9/unreachable.mp3"  # connection refused, retried
        urls[2] = urls[2].replace(server.root, down.root)  # 503 every time, retried
        path = layout.media_manifest_path(out, "audio")
        path.parent.mkdir(parents=True)
        manifest.with_columns(pl.Series("media_url", urls)).write_parquet(path)
        http = _client()
        settings = _settings(modalities=("audio",), max_failed=1.0)  # 3 of 4 fail: accepted
        result = materialize(out, settings, console=QUIET, http=http)
    failures = pl.read_parquet(out / "manifests" / "failures.parquet").sort("record_id")
    detail = dict(zip(failures["record_id"], failures["detail"], strict=True))
    rids = manifest["record_id"].to_list()
    assert set(failures["reason"]) == {"http_error"} and set(detail) == set(rids[:3])
    assert detail[rids[0]].startswith("status 404:")
    assert "giving up after 2 retries: connection refused for" in detail[rids[1]]
    assert detail[rids[2]].startswith("status 503: giving up after 2 retries")
    assert result.by_modality("audio").kept == 1 and http.stats["retries"] == 4


# A run throttled to 6 downloads/s per host (shared by its workers), so it is killed mid-way.
_KILLED_RUN = """
import json, sys
from pathlib import Path
from rich.console import Console
from biovita_data.crawl.http import HostPolicy, HttpClient
from biovita_data.media import MaterializeSettings, materialize

if __name__ == "__main__":
    slow = {name: HostPolicy(per_second=6.0) for name in ("xeno-canto", "inat-static")}
    settings = MaterializeSettings(**json.loads(sys.argv[2]))
    materialize(Path(sys.argv[1]), settings, console=Console(quiet=True), http=HttpClient(slow))
"""


def test_a_killed_run_resumes_without_redoing_finished_shards(
    built: Path, local_run, tmp_path: Path
) -> None:
    out = _copy(built, tmp_path / "out")
    script = tmp_path / "run.py"
    script.write_text(_KILLED_RUN)
    first = layout.media_shard_path(out, "audio", 0)
    args = [sys.executable, str(script), str(out), json.dumps(SETTINGS)]
    proc = subprocess.Popen(args, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the run, its forkserver and its workers
        proc.wait()
    assert first.exists() and proc.returncode == -signal.SIGKILL
    finished = list(first.parent.glob("shard-?????.parquet"))  # done: failures written first
    finished += [p.with_name(p.name.replace("shard-", "failures-")) for p in finished]
    done = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in finished}
    assert not layout.media_index_path(out, "audio").exists()  # killed before the final pass

    result = materialize(out, _settings(), console=QUIET, http=_client())
    assert result.by_modality("audio").shards_reused >= 1
    for p, (mtime, data) in done.items():
        assert (p.stat().st_mtime_ns, p.read_bytes()) == (mtime, data)
    assert not list((out / "media").rglob(".*.tmp"))
    assert _media_files(out) == _media_files(local_run[0])


def test_rerun_does_nothing_and_writes_the_same_bytes(local_run) -> None:
    out, _ = local_run
    files = [p for p in (out / "media").rglob("*") if p.is_file()]
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files}
    failures = out / "manifests" / "failures.parquet"
    stamp = (failures.stat().st_mtime_ns, failures.read_bytes())
    http = _client()
    result = materialize(out, _settings(), console=QUIET, http=http)
    assert http.stats["requests"] == 0
    assert all(m.shards_reused == m.shards for m in result.modalities)
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files}
    parquet = {p: v for p, v in before.items() if p.suffix == ".parquet"}
    assert {p: after[p] for p in parquet} == parquet  # untouched: same mtime, same bytes
    assert {p: v[1] for p, v in after.items()} == {p: v[1] for p, v in before.items()}
    assert (failures.stat().st_mtime_ns, failures.read_bytes()) == stamp


def test_ray_engine_writes_the_same_shards(built: Path, local_run, tmp_path: Path) -> None:
    ray = pytest.importorskip("ray", reason="ray[data] is not installed (the distributed extra)")
    out = _copy(built, tmp_path / "out")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        result = materialize(out, _settings(engine="ray"), console=QUIET, http=_client())
    finally:
        ray.shutdown()
    assert result.engine == "ray"
    assert _media_files(out) == _media_files(local_run[0])  # byte-identical files


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="engine"):
        MaterializeSettings(engine="spark")
    with pytest.raises(ValueError, match="ray_address"):
        MaterializeSettings(ray_address="auto")
    with pytest.raises(ValueError, match="modalities"):
        MaterializeSettings(modalities=("video",))
    assert asdict(MaterializeSettings().process()) == {
        "image_size": 512,
        "segment_seconds": 60.0,
        "jpeg_quality": 90,
        "fingerprints": True,
    }


def test_fingerprints_setting_leaves_the_shard_fingerprint_alone() -> None:
    """Toggling fingerprints never redoes a finished shard (the stored bytes are the same);
    a setting that changes the bytes does."""
    from biovita_data.media.shards import fingerprint

    items = [WorkItem("audio", "xeno-canto", "1", "http://127.0.0.1/1.mp3", "mp3", "A b")]
    on = fingerprint("audio", items, MaterializeSettings(fingerprints=True).process())
    off = fingerprint("audio", items, MaterializeSettings(fingerprints=False).process())
    other = fingerprint("audio", items, MaterializeSettings(segment_seconds=30).process())
    assert on == off != other


def _png(mode: str, size: tuple[int, int], **info) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 0).save(buf, "PNG", **info)
    return buf.getvalue()


def test_images_are_rgb_jpeg_never_upscaled_and_bombs_refused() -> None:
    small = store_image(_png("RGBA", (300, 200)), 512, 90)
    im = Image.open(io.BytesIO(small.data))
    assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (300, 200)) and small.transcoded
    assert im.getpixel((0, 0)) == pytest.approx((255, 255, 255), abs=2)  # transparent -> white
    big = store_image(_png("L", (2000, 1000)), 512, 90)
    assert (big.width, big.height) == (1024, 512)
    jpeg = io.BytesIO()
    Image.new("RGB", (400, 300), (10, 200, 30)).save(jpeg, "JPEG")
    kept = store_image(jpeg.getvalue(), 512, 90)  # small RGB JPEG: the original bytes
    assert kept.data == jpeg.getvalue() and not kept.transcoded
    with pytest.raises(ItemFailure) as bomb:
        store_image(_png("1", (20_000, 5_000)), 512, 90)  # 1e8 px > MAX_IMAGE_PIXELS
    assert bomb.value.reason == "decompression_bomb"
    with pytest.raises(ItemFailure) as junk:
        store_image(b"not an image", 512, 90)
    assert junk.value.reason == "undecodable"


def test_long_audio_is_cut_into_equal_flac_segments_while_streaming() -> None:
    rate = 8000
    t = np.arange(int(125.5 * rate)) / rate
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[:, None]
    buf = io.BytesIO()
    sf.write(buf, tone, rate, format="WAV", subtype="PCM_24")
    files = store_audio(buf.getvalue(), 60.0)
    assert len(files) == 3 and all(f.file_format == "flac" and f.transcoded for f in files)
    assert [f.offset_s for f in files] == pytest.approx([0.0, 125.5 / 3, 2 * 125.5 / 3], abs=1e-3)
    back = np.concatenate([sf.read(io.BytesIO(f.data), dtype="float32")[0] for f in files])
    assert len(back) == len(tone) and np.abs(back - tone[:, 0]).max() < 1e-5  # 24-bit FLAC
    assert sf.info(io.BytesIO(files[0].data)).subtype == "PCM_24"
    for fmt in ("WAV", "FLAC"):  # cut short at the source: decodes in part, then fails
        whole = io.BytesIO()
        sf.write(whole, tone[: 5 * rate], rate, format=fmt, subtype="PCM_16")
        with pytest.raises(ItemFailure) as cut:
            store_audio(whole.getvalue()[: len(whole.getvalue()) // 2], 60.0)
        assert cut.value.reason == "undecodable"


def test_materialize_redraws_the_bench_from_stored_media(built: Path, tmp_path: Path) -> None:
    """A bench drawn before the media holds records that materialize could not keep; the
    materialize stage draws it again (same settings), from the kept records only."""
    out = _copy(built, tmp_path / "out")
    run_build(out, {"bench": {"seed": 3}}, QUIET, stages=("bench",))

    def bench_records(modality: str) -> set[tuple[str, str]]:
        ids = set()
        for subset in ("seen", "unseen"):
            index = pl.read_csv(layout.bench_dir(out, subset) / "ids" / f"{modality}_index.csv")
            for path in index["file_path"]:
                _, source, name = path.split("/")
                ids.add((source, name.rsplit(".", 1)[0]))
        return ids

    before = bench_records("audio")
    doomed = set(sorted(before)[:2])  # two drawn recordings whose media is gone (HTTP 404)
    manifest = layout.media_manifest_path(out, "audio")
    df = pl.read_parquet(manifest)
    hit = pl.struct("source", "record_id").is_in([dict(source=s, record_id=r) for s, r in doomed])
    gone = pl.col("media_url").str.replace(r"/[^/?]+(\?.*)?$", "/withdrawn-by-author.mp3")
    df.with_columns(pl.when(hit).then(gone).otherwise(pl.col("media_url"))).write_parquet(manifest)
    run_build(out, {"materialize": SETTINGS}, QUIET, stages=("materialize",))
    stored = pl.read_parquet(layout.media_index_path(out, "audio")).filter(pl.col("kept"))
    kept = set(zip(stored["source"], stored["record_id"], strict=True))
    failed = pl.read_parquet(out / "manifests" / "failures.parquet").filter(
        pl.col("stage") == "materialize"
    )
    lost = set(zip(failed["source"], failed["record_id"], strict=True))
    assert doomed <= lost
    after = bench_records("audio")
    assert after and after <= kept and not after & lost
    settings = json.loads((layout.bench_dir(out, "seen") / "bench.json").read_text())["settings"]
    assert settings["seed"] == 3  # drawn again with the recorded settings


# ----------------------------------------------------------------------------- scale out
# A real 2-node Ray cluster (ray.cluster_utils.Cluster, one CPU each) writing to a real S3 API
# (moto's server on 127.0.0.1, reached through s3fs): the workers write the shards, the driver
# only gets small reports.
@pytest.fixture(scope="module")
def cluster(moto_s3: str):
    """A head node and a worker node, one CPU each; started after AWS_* is in the environment
    (each node's workers read their credentials and endpoint from it, as on a real cluster)."""
    ray = pytest.importorskip("ray", reason="ray[data] is not installed (the distributed extra)")
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    c.add_node(num_cpus=1)
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False, logging_level="ERROR")
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


def _s3_files(prefix: str) -> dict[str, bytes]:
    import s3fs

    fs = s3fs.S3FileSystem()
    fs.invalidate_cache()
    return {p.split("/", 2)[2]: fs.cat_file(p) for p in fs.find(prefix) if p.endswith(".parquet")}


def test_ray_cluster_workers_write_shards_to_s3(built: Path, local_run, cluster, tmp_path) -> None:
    import ray

    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    out = _copy(built, tmp_path / "out")
    settings = _settings(engine="ray", media_root="s3://media/run")
    result = materialize(out, settings, console=QUIET, http=_client())
    assert result.media_root == "s3://media/run"
    assert result.nodes == 2  # both nodes did shards
    assert not list((out / "media").rglob("shard-*.parquet"))  # nothing written locally
    stored = _s3_files("media/run")
    ref = local_run[0] / "media"
    expected = {
        str(p.relative_to(ref)): p.read_bytes()
        for p in sorted(ref.rglob("*-?????.parquet"))  # shards and their failures
    }
    assert stored == expected  # byte-identical to the local engine's shards
    media_bytes = sum(len(v) for k, v in stored.items() if "/shard-" in k)
    assert 0 < result.driver_bytes < 0.01 * media_bytes  # the driver never saw the media
    for name in ("audio/index.parquet", "image/index.parquet"):
        assert (out / "media" / name).read_bytes() == (ref / name).read_bytes()
    failures = "manifests/failures.parquet"
    assert (out / failures).read_bytes() == (local_run[0] / failures).read_bytes()

    # a re-run finds every shard finished in S3 (OUT/media/store.json names the bucket) ...
    again = materialize(out, _settings(engine="ray"), console=QUIET, http=_client())
    assert all(m.shards_reused == m.shards for m in again.modalities)
    assert again.driver_bytes == 0
    # ... and redoes only a shard whose final object is missing, to the same bytes
    import s3fs

    s3fs.S3FileSystem().rm("media/run/audio/shard-00001.parquet")
    redo = materialize(out, _settings(engine="ray"), console=QUIET, http=_client())
    assert redo.by_modality("audio").shards_reused == redo.by_modality("audio").shards - 1
    assert _s3_files("media/run") == expected
    from biovita_data.publish.configs import load_species, write_media_embed

    def published(build: Path, folder: Path) -> dict[str, bytes]:
        species = load_species(build)
        names = species["scientific_name"].to_list()
        for modality in ("audio", "image"):
            write_media_embed(build, folder, modality, species, names, 2**20)
        return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*.parquet")}

    remote = published(out, tmp_path / "hf-s3")  # reads the shards from s3://media/run
    assert remote and remote == published(local_run[0], tmp_path / "hf-local")


def test_silence_check_reads_steps_until_loud_and_skips_nan_steps() -> None:
    """The peak is taken PEAK_STEP frames at a time: a sound late in a long block still counts,
    a step with NaN adds nothing (a recording NaN throughout fails as silent)."""
    from biovita_data.media.audio import PEAK_STEP, SILENCE_PEAK, _peak

    block = np.zeros((3 * PEAK_STEP, 2), np.float32)
    assert _peak(block, 0.0) == 0.0
    block[-1, 1] = -0.25  # the last frame of the last step
    assert _peak(block, 0.0) == 0.25
    block[0, 0] = np.nan  # the first step holds NaN: the later steps still count
    assert _peak(block, 0.0) == 0.25
    assert not _peak(np.full((PEAK_STEP, 1), np.nan, np.float32), 0.0) >= SILENCE_PEAK
    assert _peak(block, 0.5) == 0.5  # loud already: nothing read
