"""The GPU code paths of biovita-model on a published folder and its bench (tiny towers).

    python scripts/gpu_check.py --dataset OUT/hf --bench OUT/bench [--work DIR]

1. stand-in towers, 2 epochs, CUDA, bf16 autocast;
2. Stage 1 on CUDA in bf16, stopped after 1 of 2 epochs and resumed, against the same 2 epochs
   without a stop: the same losses (CUDA kernels are not bit-reproducible, so within 1e-3);
3. Stage 2 on CUDA in fp16 (the gradient-scaler path) with gradient accumulation 2;
4. `eval` of Stage 2 on CUDA and on CPU: the same Top-k (embeddings differ by float noise only).

Prints one JSON line with the checks and timings; exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from biovita_model.eval.run import evaluate_run  # noqa: E402
from biovita_model.training.config import TrainConfig  # noqa: E402
from biovita_model.training.loop import train  # noqa: E402


def losses(run: Path) -> list[float]:
    """The per-step losses of a run's metrics.jsonl."""
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [float(json.loads(line)["loss"]) for line in lines if line.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--bench", required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/biovita-gpu-check"))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cuda", help="cuda; cpu only to try the script")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"ok": False, "error": "no CUDA device"}))
        return 1
    work, t0 = args.work, time.monotonic()
    common = {"dataset": args.dataset, "device": args.device, "batch_size": args.batch_size,
              "workers": 2, "progress": False, "seed": 0}  # fmt: skip
    timings: dict[str, float] = {}
    checks: dict[str, bool] = {}

    def run(name: str, resume: bool = False, **options) -> Path:
        t = time.monotonic()
        train(TrainConfig(out=str(work / name), **{**common, **options}), resume=resume)
        timings[name] = round(time.monotonic() - t, 1)
        return work / name

    towers = run("towers", stage="pretrain", epochs=2, precision="bf16")
    whole = run("stage1", stage="1", init=str(towers), epochs=2, precision="bf16")
    run("stage1_stop", stage="1", init=str(towers), epochs=2, precision="bf16", stop_after=1)
    stopped = run("stage1_stop", resume=True, stage="1", init=str(towers), epochs=2,
                  precision="bf16")  # fmt: skip
    a, b = losses(whole), losses(stopped)
    checks["resume gives the same losses"] = len(a) == len(b) and all(
        abs(x - y) <= 1e-3 * max(1.0, abs(x)) for x, y in zip(a, b, strict=True)
    )
    checks["stage 1 losses are finite"] = all(x == x and abs(x) < 1e6 for x in a)
    stage2 = run("stage2", stage="2", init=str(whole), epochs=1, precision="fp16", grad_accum=2)
    checks["stage 2 fp16 losses are finite"] = all(x == x and abs(x) < 1e6 for x in losses(stage2))
    reports = {}
    for device in (args.device, "cpu"):
        t = time.monotonic()
        result = evaluate_run(stage2, args.bench, dataset=args.dataset, device=device, write=False)
        reports[device] = result.report["results"]
        timings[f"eval_{device}"] = round(time.monotonic() - t, 1)
    gpu, cpu = reports[args.device], reports["cpu"]
    checks[f"eval on {args.device} = eval on cpu"] = set(gpu) == set(cpu) and all(
        (gpu[k][f"top{n}"] is None and cpu[k][f"top{n}"] is None)
        or abs(gpu[k][f"top{n}"] - cpu[k][f"top{n}"]) <= 0.02
        for k in gpu
        for n in (1, 5, 10)
    )
    line = {
        "benchmark": "gpu_check",
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else args.device,
        "torch": torch.__version__,
        "checks": checks,
        "ok": all(checks.values()),
        "seconds": timings | {"total": round(time.monotonic() - t0, 1)},
        "stage1_losses": [round(x, 4) for x in a],
        "stage1_resumed_losses": [round(x, 4) for x in b],
    }
    print(json.dumps(line))
    return 0 if line["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
