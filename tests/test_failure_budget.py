"""A run that keeps nothing says so: failure budgets, a dead media host given up in seconds (the
per-host circuit breaker), no bench drawn from nothing, no empty publish, no silent no-ops."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import polars as pl
import pytest
from rich.console import Console
from typer.testing import CliRunner

from biovita_data.app.cli import app
from biovita_data.app.stages import run_build
from biovita_data.core import environ, layout
from biovita_data.core.budget import EXIT_OVER_BUDGET, BudgetExceeded, over_budget
from biovita_data.crawl.fetch import fetch, settings_from_env
from biovita_data.crawl.http import FetchError, HostUnreachable, HttpClient
from biovita_data.media import MaterializeSettings, materialize
from biovita_data.sample.faults import FaultPlan
from biovita_data.sample.server import SampleServer
from biovita_data.sample.world import World

QUIET = Console(quiet=True)
runner = CliRunner()
TAXA = ["Aves", "Amphibia", "Mammalia", "Insecta"]
SETTINGS = {"workers": 2, "shard_size": 8, "throttle": False, "download_threads": 4}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def built(tiny_world: World, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """OUT crawled from a sample server that is stopped afterwards (align, split and bench done):
    the manifests' media URLs point at a host that no longer answers. Returns (OUT, its port)."""
    out = tmp_path_factory.mktemp("dead-host")
    server = SampleServer(tiny_world, port=0).start()
    try:
        with environ.scoped(server.environment):  # restored afterwards
            settings = settings_from_env(
                taxa=TAXA, sources=["xeno-canto", "inaturalist"], throttle=False
            )
            fetch(settings, out, console=QUIET)
            stages = ("align", "split", "bench")
            run_build(out, {"align": {"throttle": False}}, QUIET, stages=stages)
    finally:
        server.stop()
    return out, int(server.root.rsplit(":", 1)[1])


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _failures(out: Path) -> pl.DataFrame:
    return pl.read_parquet(layout.failures_path(out)).filter(pl.col("stage") == "materialize")


def _records(out: Path, modality: str) -> int:
    manifest = pl.read_parquet(layout.media_manifest_path(out, modality))
    return manifest.unique(["source", "record_id"]).height


def _bench_files(out: Path) -> dict[str, bytes]:
    root = out / "bench"
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


def test_dead_media_host_fails_the_run_fast_and_a_rerun_resumes(
    built: tuple[Path, int], tiny_world: World, tmp_path: Path
) -> None:
    src, port = built
    out = _copy(src, tmp_path / "out")
    bench = _bench_files(out)
    host = f"127.0.0.1:{port}"
    args = ["materialize", "--out", str(out), "--workers", "2", "--shard-size", "8",
            "--no-throttle", "--download-threads", "4"]  # fmt: skip
    dead = runner.invoke(app, args)
    assert dead.exit_code == EXIT_OVER_BUDGET, dead.output
    errors = [line for line in dead.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "host_unreachable" in errors[0] and host in errors[0] and "--max-failed" in errors[0]
    assert f"host {host} unreachable" in dead.output  # the summary names the host
    fails = _failures(out)
    records = sum(_records(out, m) for m in ("audio", "image"))
    assert fails.height == records and set(fails["reason"]) == {"host_unreachable"}
    assert fails["detail"].str.contains(host).all()
    assert _bench_files(out) == bench  # not drawn again from an empty set

    # publish of this empty build refuses, naming the config and the step to rerun
    pub = runner.invoke(app, ["publish", "--out", str(out), "--repo-id", "me/x", "--folder-only"])
    assert pub.exit_code != 0
    assert "config 'audio' has 0 rows: rerun materialize" in pub.output
    assert not layout.hf_dir(out).exists()

    # the host is back: the same command resumes (the shards of the dead run are done again)
    with SampleServer(tiny_world, port=port):
        again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "host_unreachable" not in set(_failures(out)["reason"])
    for m in ("audio", "image"):
        index = pl.read_parquet(layout.media_index_path(out, m))
        assert index["kept"].sum() > 0
    assert "bench: drawn again" in again.output


def test_the_breaker_gives_a_dead_host_up_after_a_few_connections(
    built: tuple[Path, int], tmp_path: Path
) -> None:
    """Every record fails as host_unreachable, yet the workers made only a few requests: each
    worker's threads share one breaker (HOST_FAILURES in a row), not 7 attempts per record."""
    src, _ = built
    out = _copy(src, tmp_path / "out")
    http = HttpClient(throttle=False, retries=6, backoff_s=0.01)
    settings = MaterializeSettings(**SETTINGS, modalities=("audio",))
    with pytest.raises(BudgetExceeded, match=r"audio: (\d+) of \1 items failed"):
        materialize(out, settings, console=QUIET, http=http)
    records = _records(out, "audio")
    assert _failures(out).height == records > 20
    # 2 workers x (5 failures to open + 2 threads that may be mid-request) at most
    assert http.stats["requests"] <= 2 * (http.host_failures + 2) < records
    # --max-failed 1.0 keeps today's behaviour: the run ends normally, its failures recorded
    result = materialize(
        out, MaterializeSettings(**SETTINGS, modalities=("audio",), max_failed=1.0), console=QUIET
    )
    assert result.by_modality("audio").kept == 0


def test_breaker_counts_connection_failures_only() -> None:
    port = _free_port()  # nothing listens here
    http = HttpClient(throttle=False, retries=1, backoff_s=0.0, host_failures=3)
    url = f"http://127.0.0.1:{port}/x.mp3"
    with pytest.raises(FetchError, match="giving up after 1 retries: connection refused for http"):
        http.get(url)  # 2 connection failures: below the threshold
    with pytest.raises(HostUnreachable, match=f"127.0.0.1:{port} unreachable.*connection refused"):
        http.get(url)  # the third opens the breaker
    before = http.stats["requests"]
    with pytest.raises(HostUnreachable, match="not requested"):
        http.get(f"http://127.0.0.1:{port}/other.jpg")
    assert http.stats["requests"] == before  # given up: no request at all


def test_5xx_and_retry_after_keep_their_backoff_and_never_open_the_breaker(
    tiny_world: World,
) -> None:
    failing = FaultPlan(rate=1.0, max_consecutive=99, kinds=("503",), retry_after=0)
    http = HttpClient(throttle=False, retries=4, backoff_s=0.0, host_failures=2)
    with SampleServer(tiny_world, faults=failing) as down:
        for _ in range(2):
            with pytest.raises(FetchError, match="HTTP 503") as exc:
                http.get(f"{down.root}/xeno-canto/api/3/recordings?query=x")
            assert not isinstance(exc.value, HostUnreachable)
    assert http.stats["retries"] == 8 and not http.unreachable


def test_over_budget_ignores_policy_exclusions() -> None:
    assert over_budget("x", 10, {"duplicate": 9, "http_error": 1}, 0.5) is None
    line = over_budget("x", 10, {"http_error": 4, "host_unreachable": 2}, 0.5, {"h:80": 6})
    assert line == (
        "x: 6 of 10 items failed (60% > --max-failed 0.5): http_error 4, host_unreachable 2; "
        "hosts: h:80 6"
    )
    assert over_budget("x", 10, {"http_error": 10}, 1.0) is None


def test_bench_before_split_and_unknown_licence_codes_are_refused(
    built: tuple[Path, int], tmp_path: Path
) -> None:
    out = _copy(built[0], tmp_path / "out")
    species = pl.read_parquet(layout.species_path(out))
    species.with_columns(pl.lit(None, pl.String).alias("split_group")).write_parquet(
        layout.species_path(out)
    )
    result = runner.invoke(app, ["bench", "--out", str(out)])
    assert result.exit_code == 2
    assert "no split yet" in result.output and "biovita-data split" in result.output

    for cmd in (
        ["fetch", "--taxa", "Aves", "--out", str(tmp_path / "f")],
        ["import-dwca", str(tmp_path / "none.zip"), "--out", str(tmp_path / "f")],
    ):
        bad = runner.invoke(app, [*cmd, "--licenses", "cc0,cc-by-4"])
        assert bad.exit_code == 2
        line = bad.output.strip()
        assert line.startswith("error: --licenses: unknown licence code(s) cc-by-4")
        assert "cc-by-nc-sa" in line and "cc-by-4.0" in line and "\n" not in line
    assert not (tmp_path / "f").exists()


def test_max_failed_is_checked() -> None:
    with pytest.raises(ValueError, match=r"--max-failed must be a share within 0\.\.1"):
        MaterializeSettings(max_failed=1.5)
    bad = runner.invoke(app, ["materialize", "--out", "x", "--max-failed", "2"])
    assert bad.exit_code == 2 and "--max-failed must be a share" in bad.output


# ----------------------------------------------------------------------------- Ray + S3
@pytest.fixture
def s3_media(moto_s3: str) -> str:
    """A media root on the loopback S3 endpoint (tests/conftest.py)."""
    return "s3://media/dead"


def test_ray_engine_with_an_object_store_fails_on_a_dead_host_and_resumes(
    built: tuple[Path, int], tiny_world: World, s3_media: str, tmp_path: Path
) -> None:
    ray = pytest.importorskip("ray", reason="ray[data] is not installed (the distributed extra)")
    import s3fs

    src, port = built
    out = _copy(src, tmp_path / "out")
    settings = MaterializeSettings(
        **{**SETTINGS, "shard_size": 50}, engine="ray", media_root=s3_media, modalities=("audio",)
    )
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        http = HttpClient(throttle=False, backoff_s=0.01)
        with pytest.raises(BudgetExceeded, match=f"audio: .*host_unreachable.*127.0.0.1:{port}"):
            materialize(out, settings, console=QUIET, http=http)
        assert set(_failures(out)["reason"]) == {"host_unreachable"}
        fs = s3fs.S3FileSystem()
        fs.invalidate_cache()
        written = fs.find("media/dead/audio")  # the dead run's shards and failures stay
        assert any("/shard-" in p for p in written) and any("/failures-" in p for p in written)
        with SampleServer(tiny_world, port=port):
            result = materialize(out, settings, console=QUIET, http=HttpClient(throttle=False))
    finally:
        ray.shutdown()
    assert result.by_modality("audio").shards_reused == 0  # every shard was done again
    assert result.by_modality("audio").kept > 0
    assert "host_unreachable" not in set(_failures(out)["reason"])
    assert not list((out / "media").rglob("shard-*.parquet"))  # all of it in the bucket


def test_a_pipeline_keeps_the_budgets_of_fetch_and_import_tol(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`run PIPELINE` stops with exit 3 and one line when a source's fetch or the TreeOfLife-200M
    import fails more than its section's `max_failed` (policy exclusions aside), as the
    commands' --max-failed do; within the budget it goes on."""
    import biovita_data.crawl.fetch as fetch_module
    from biovita_data.app.stages import run_tol
    from biovita_data.crawl.sources.base import SourceResult

    crawled = [SourceResult("xeno-canto", kept=2, dropped={"malformed": 6, "restricted": 2})]
    monkeypatch.setattr(fetch_module, "fetch", lambda *a, **k: crawled)
    pipeline = tmp_path / "p.toml"
    pipeline.write_text('[fetch]\ntaxa = ["Aves"]\nmax_failed = 0.5\n')
    result = CliRunner().invoke(app, ["run", str(pipeline), "--out", str(tmp_path / "out")])
    assert result.exit_code == EXIT_OVER_BUDGET, result.output
    assert "fetch xeno-canto: 6 of 10 items failed (60% > --max-failed 0.5): malformed 6" in (
        result.output
    )
    assert not (tmp_path / "out" / "manifests").exists()  # stopped before align
    pipeline.with_name("q.toml").write_text('[fetch]\ntaxa = ["Aves"]\nmax_failed = 2\n')
    bad = CliRunner().invoke(app, ["run", str(pipeline.with_name("q.toml")), "--out", "x"])
    assert bad.exit_code == 2 and "--max-failed must be a share" in bad.output

    # import-tol: of 6 drawn rows 3 fail (an unknown licence, no provenance, a bad URL); a
    # licence not allowed is a policy exclusion, counted among the items but not as failed
    cat = pl.DataFrame({
        "uuid": [f"u{i}" for i in range(6)],
        "source_url": [f"https://img.example.org/p/{i}.jpeg" for i in range(5)] + ["ftp://x"],
        "scientific_name": ["Turdus merula"] * 6, "genus": ["Turdus"] * 6,
    })  # fmt: skip
    licences = ["cc-by", "whatever 4.0", "cc-by-nd", "cc0", "cc-by"]
    prov = pl.DataFrame({"uuid": ["u0", "u1", "u2", "u3", "u5"], "license": licences})
    cat.write_parquet(tmp_path / "c.parquet")
    prov.write_parquet(tmp_path / "p.parquet")
    tol = {"catalog": str(tmp_path / "c.parquet"), "provenance": str(tmp_path / "p.parquet"),
           "taxa": ["Turdus"]}  # fmt: skip
    with pytest.raises(BudgetExceeded, match=r"import-tol: 3 of 6 items failed \(50% > --max-f"):
        run_tol(tmp_path / "tol", {**tol, "max_failed": 0.4}, QUIET)
    assert run_tol(tmp_path / "tol", {**tol, "max_failed": 0.5}, QUIET).kept == 2
