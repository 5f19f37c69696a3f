"""Acceptance of issue #6 (biovita-model) on the default sample world, CPU only, fixed seeds.

    python scripts/acceptance_model.py [--world DIR] [--preset demo] [--skip-ddp]
                                       [--skip-speed]

1. the published sample world DIR/hf (built when missing: crawl + manifests + bench under the
   loopback server, then materialize and publish, the server kept up throughout);
2. pretrain-towers -> Stage 1 -> Stage 2 with tiny towers (DIR/runs/{towers,stage1,stage2}),
   each stage evaluated on DIR/bench (eval.json, eval_per_class.csv, eval.png);
3. the checks: species level seen, all six directions >= 5 x chance (Stage 1 and Stage 2), and
   Stage 2 at issue 16's targets (A2I/I2A >= 30 %, A2T/T2A/I2T/T2I >= 60 %); training (towers +
   Stage 1 + Stage 2) within 10 minutes when the chain was trained, not reused;
   Stage 2 > Stage 1 on A2I and I2A; unseen species above chance in all six directions;
   Stage 2 > a lambda = 0 control (same steps from Stage 1, ATC only; DIR/runs/stage2_control)
   on A2I and I2A, gap printed; unseen species: Stage 2 >= Stage 1 on the six-direction mean;
4. probe-traits on Stage 2 vs the majority baseline, on the traits the world ties to sound or
   appearance; 5. a 2-rank torchrun (gloo) = 1 process (tests/test_training.py);
6. benchmarks/eval_speed.py (paper-scale bench, < 60 s).

Writes DIR/acceptance.json; exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from rich.console import Console

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from biovita_data.curate.bench.csv_layout import LEVELS, TASKS  # noqa: E402
from biovita_model.eval.run import evaluate_run  # noqa: E402
from biovita_model.eval.tables import eval_table  # noqa: E402
from biovita_model.probe import probe_table, probe_traits  # noqa: E402
from biovita_model.training.recipes import (  # noqa: E402
    PRESETS,
    ensure_trained,
    species_per_stage,
    stage_config,
    train_tiny,
)

DIRECTIONS = [t.code for t in TASKS]
TARGETS = {"A2I": 0.30, "I2A": 0.30, "A2T": 0.60, "T2A": 0.60, "I2T": 0.60, "T2I": 0.60}
# traits the sample world derives from what a species sounds or looks like (taxonomy.py
# `_traits`): activity from the call band (nocturnal species call lower), locomotion from the
# class and the family's call kind, wetland habitat from the class (family -> call kind, shape)
TIED = (
    "trait_activity_diurnal",
    "trait_activity_nocturnal",
    "trait_locomotion_flying",
    "trait_locomotion_walking",
    "trait_locomotion_swimming",
    "trait_locomotion_climbing",
    "trait_habitat_wetland",
)
console = Console()


def build_world(out: Path, size: str = "default", seed: int = 0) -> Path:
    """Crawl the sample world, build manifests + bench, materialize and publish OUT/hf."""
    from biovita_data.app.demo import TAXA, world_sections
    from biovita_data.app.pipeline import sample_environment
    from biovita_data.app.stages import BUILD_STAGES, RELEASE_STAGES, run_build
    from biovita_data.crawl.fetch import fetch, settings_from_env

    err = Console(stderr=True)
    with ExitStack() as stack:
        sample_environment(stack, size, seed, "none")  # up until the media are stored
        sources = ["xeno-canto", "inaturalist", "inat-open-data"]
        fetch(settings_from_env(taxa=TAXA, sources=sources, throttle=False), out, console=err)
        publish = {"repo_id": "biovita/sample-world", "folder_only": True}
        sections = world_sections(out, size, seed, publish)
        run_build(out, sections, err, stages=BUILD_STAGES + RELEASE_STAGES)
    return out / "hf"


def _pct(value: float | None, width: int) -> str:
    """A Top-k in %, `n/a` where k >= the candidates (None)."""
    return f"{'n/a':>{width}}" if value is None else f"{100 * value:>{width}.0f}"


def table_text(report: dict) -> str:
    """The 6 x 3 x 2 Top-1/5/10 table as fixed-width text (percent)."""
    res = report["results"]
    lines = [f"{'subset/level':18}" + "".join(f"{d:>14}" for d in DIRECTIONS)]
    for subset in ("seen", "unseen"):
        for level in LEVELS:
            cells = []
            for d in DIRECTIONS:
                e = res.get(f"{subset}/{level}/{d}")
                cells.append(
                    f"{'-':>14}"
                    if e is None
                    else f"{_pct(e['top1'], 4)}/{_pct(e['top5'], 3)}/{_pct(e['top10'], 3)}  "
                )
            lines.append(f"{subset + '/' + level:18}" + "".join(cells))
    return "\n".join(lines)


def retrieval_checks(reports: dict[str, dict]) -> dict[str, bool]:
    """The issue's retrieval criteria."""
    checks: dict[str, bool] = {}
    for stage in ("stage1", "stage2"):
        res = reports[stage]["results"]
        for d in DIRECTIONS:
            e = res[f"seen/species/{d}"]
            checks[f"{stage} seen/species/{d} >= 5x chance"] = e["top1"] >= 5 / e["n_candidates"]
    s1, s2 = reports["stage1"]["results"], reports["stage2"]["results"]
    for d in ("A2I", "I2A"):
        key = f"seen/species/{d}"
        checks[f"stage2 > stage1 on {key}"] = s2[key]["top1"] > s1[key]["top1"]
    for d in DIRECTIONS:
        e = s2[f"unseen/species/{d}"]
        checks[f"stage2 unseen/species/{d} > chance"] = e["top1"] > 1 / e["n_candidates"]
    for d, least in TARGETS.items():  # issue 16's targets for the demo preset
        e = s2[f"seen/species/{d}"]
        checks[f"stage2 seen/species/{d} >= {100 * least:.0f} %"] = e["top1"] >= least
    return checks


def budget_checks(seconds: dict[str, float]) -> dict[str, bool]:
    """The demo's training (towers + Stage 1 + Stage 2, evaluation apart) within 10 minutes."""
    total = sum(seconds.get(s, 0.0) for s in ("towers", "stage1", "stage2"))
    console.print(f"training: {total:.0f} s (towers + Stage 1 + Stage 2)", markup=False)
    return {"training <= 600 s": total <= 600}


def control_run(out: Path, preset: str, seed: int) -> tuple[Path, dict]:
    """Stage 2's lambda = 0 control: the same steps from the same Stage 1, ATC alone."""
    runs = out / "runs"
    batch = min(PRESETS[preset]["stage2"]["batch_size"], species_per_stage(out / "hf")["stage2"])
    cfg = stage_config(
        preset, "stage2", out / "hf", runs / "stage2_control", runs / "stage1", seed=seed,
        lambda_max=0.0, batch_size=max(2, batch),
    )  # fmt: skip
    ensure_trained(cfg, Console(stderr=True))
    report = evaluate_run(runs / "stage2_control", out / "bench", dataset=out / "hf", workers=1)
    return runs / "stage2_control", report.report


def control_checks(reports: dict[str, dict], control: dict) -> dict[str, bool]:
    """Stage 2 beats its lambda = 0 control on A2I and I2A (the image losses, not the extra
    steps, carry the gain); unseen species: Stage 2 at least Stage 1 on the six-direction mean."""
    checks: dict[str, bool] = {}
    s2, ctl = reports["stage2"]["results"], control["results"]
    for d in ("A2I", "I2A"):
        key = f"seen/species/{d}"
        gap = 100 * (s2[key]["top1"] - ctl[key]["top1"])
        console.print(
            f"{key}: Stage 2 {100 * s2[key]['top1']:.1f} %, lambda = 0 control "
            f"{100 * ctl[key]['top1']:.1f} %, gap {gap:+.1f} pp",
            markup=False,
            highlight=False,
        )
        checks[f"stage2 > lambda=0 control on {key}"] = gap > 0
    means = {
        stage: sum(reports[stage]["results"][f"unseen/species/{d}"]["top1"] for d in DIRECTIONS)
        / len(DIRECTIONS)
        for stage in ("stage1", "stage2")
    }
    console.print(
        f"unseen/species mean of six: Stage 1 {100 * means['stage1']:.1f} %, "
        f"Stage 2 {100 * means['stage2']:.1f} %",
        markup=False,
        highlight=False,
    )
    checks["stage2 >= stage1 on the unseen six-direction mean"] = means["stage2"] >= means["stage1"]
    return checks


def probe_checks(report: dict) -> dict[str, bool]:
    """Probe > majority on the tied traits (those scored), per modality."""
    checks = {}
    for modality, result in report["modalities"].items():
        for name in TIED:
            e = result["traits"].get(name)
            if e is not None:
                checks[f"probe {modality} {name}"] = e["f1"] > e["baseline_f1"]
    return checks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", type=Path, default=Path("/tmp/biovita-acceptance"))
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-ddp", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    args = parser.parse_args()
    out: Path = args.world
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    if not (out / "hf" / "audio").is_dir():
        build_world(out)
        timings["build_world"] = round(time.monotonic() - t0, 1)
    chain = train_tiny(out / "hf", out / "runs", bench=out / "bench", preset=args.preset,
                       seed=args.seed)  # fmt: skip
    timings.update(chain.seconds)
    for stage in ("stage1", "stage2"):
        console.rule(f"{stage}: {chain.runs[stage]}")
        for table in eval_table(chain.reports[stage]):
            console.print(table)
        print(table_text(chain.reports[stage]), flush=True)
    checks = retrieval_checks(chain.reports)
    if not chain.reused:
        checks.update(budget_checks(chain.seconds))
    t = time.monotonic()
    _, control = control_run(out, args.preset, args.seed)
    timings["stage2_control"] = round(time.monotonic() - t, 1)
    print(table_text(control), flush=True)
    checks.update(control_checks(chain.reports, control))
    t = time.monotonic()
    probe = probe_traits(chain.runs["stage2"], out / "hf", workers=1)
    timings["probe"] = round(time.monotonic() - t, 1)
    for table in probe_table(probe):
        console.print(table)
    checks.update(probe_checks(probe))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    extra: dict[str, object] = {}
    if not args.skip_ddp:
        t = time.monotonic()
        cmd = [sys.executable, "-m", "pytest", "-q", "tests/test_training.py", "-k", "gloo"]
        ddp = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        checks["torchrun 2 x gloo = 1 process (test)"] = ddp.returncode == 0
        timings["ddp_test"] = round(time.monotonic() - t, 1)
    if not args.skip_speed:
        cmd = [sys.executable, "benchmarks/eval_speed.py"]
        speed = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        line = speed.stdout.strip().splitlines()[-1] if speed.stdout.strip() else "{}"
        extra["eval_speed"] = json.loads(line)
        checks["eval_speed < 60 s"] = bool(extra["eval_speed"].get("ok"))  # type: ignore[union-attr]
        console.print(line, markup=False, highlight=False)
    failed = [k for k, ok in checks.items() if not ok]
    summary = {
        "world": str(out),
        "preset": args.preset,
        "timings_s": timings,
        "checks": checks,
        "failed": failed,
        "results": {s: chain.reports[s]["results"] for s in ("stage1", "stage2")},
        "control_lambda0": control["results"],
        "probe": {
            m: {"categories": r["categories"], "mean": r["mean"]}
            for m, r in probe["modalities"].items()
        },
        **extra,
    }
    (out / "acceptance.json").write_text(json.dumps(summary, indent=2) + "\n")
    for name, ok in checks.items():
        console.print(f"{'PASS' if ok else 'FAIL'}  {name}", markup=False, highlight=False)
    console.print(json.dumps({"timings_s": timings, "failed": len(failed)}))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
