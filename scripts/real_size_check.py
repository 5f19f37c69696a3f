"""Real-size towers, random weights: Stage 1, Stage 2, import-official and eval, a few steps each.

    python scripts/real_size_check.py [--work DIR] [--steps 2] [--batch-size 2] [--device cpu]

Builds a `local-dir:` folder with open_clip `ViT-L-14` (428 M parameters) and, in `clap/`, the
CLAP HTS-AT unfused audio tower of `biovita_model/configs/htsat-unfused.json`, all random, and a
small synthetic published folder (10 s clips at 48 kHz, 224 px photos). Then, each phase in its
own process (so that its peak memory is its own):

1. `stage1`: Stage 1 from the folder (`--max-steps`; the image tower is never loaded);
2. `stage2`: Stage 2 from the Stage 1 run (text tower trained, image frozen);
3. `import_official`: a random `clap_weights.pth` + the folder -> a run;
4. `eval`: that run loaded and its encoders timed on batches of audio, photos and prompts.

Prints one JSON line: per phase the seconds per step (or per batch), wall seconds, peak memory
(CPU: max RSS; CUDA: max allocated) and the run folder's size on disk. Not run in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PHASES = ("stage1", "stage2", "import_official", "eval")


def _peak(device: str) -> float:
    """Peak memory of this process in GiB (CUDA: allocated on the device)."""
    import torch

    if device.startswith("cuda"):
        return round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)  # KiB -> GiB


def _size(path: Path) -> float:
    """Bytes under a folder, in GiB."""
    return round(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**30, 3)


def build(work: Path) -> dict[str, Any]:
    """The random real-size tower folder and the synthetic world (once per work folder)."""
    import open_clip
    import torch
    from safetensors.torch import save_file
    from transformers import ClapAudioModelWithProjection

    from biovita_data.sample.published_folder import AudioSpec, write_synthetic_folder
    from biovita_model.towers import clap_audio_config, read_config

    t0 = time.monotonic()
    folder = work / "towers"
    if not (folder / "open_clip_model.safetensors").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        clip = open_clip.create_model("ViT-L-14", pretrained=None)
        cfg = {
            "model_cfg": open_clip.get_model_config("ViT-L-14"),
            "preprocess_cfg": open_clip.get_model_preprocess_cfg(clip),
        }
        (folder / "open_clip_config.json").write_text(json.dumps(cfg))
        state = {k: v.contiguous() for k, v in clip.state_dict().items()}
        save_file(state, str(folder / "open_clip_model.safetensors"))
        audio = ClapAudioModelWithProjection(
            clap_audio_config(read_config("htsat-unfused")["audio"])
        )
        audio.save_pretrained(folder / "clap")
        del clip, audio, state
    world = work / "hf"
    if not (world / "species").is_dir():
        specs = []
        for k in range(6):
            specs += [AudioSpec(k, "train", 10.0 + j, 48000, 1, "flac", 0.3) for j in range(2)]
            specs.append(AudioSpec(k, "test", 10.0, 48000, 1, "flac", onset_s=0.3))
        write_synthetic_folder(
            world,
            specs,
            n_species=6,
            images_per_species={"train": 2, "test": 1, "unseen": 0},
            image_size=(256, 256),
        )
    return {"seconds": round(time.monotonic() - t0, 1), "towers_gib": _size(folder)}


def _train_phase(work: Path, args: argparse.Namespace, stage: str) -> dict[str, Any]:
    from biovita_model.training import TrainConfig, train
    from biovita_model.training.checkpoint import read_metrics

    out = work / f"stage{stage}"
    common = {
        "dataset": str(work / "hf"),
        "out": str(out),
        "stage": stage,
        "batch_size": args.batch_size,
        "max_steps": args.steps,
        "epochs": 100,
        "device": args.device,
        "precision": args.precision,
        "grad_checkpointing": args.grad_checkpointing,
        "threads": args.threads,
        "progress": False,
    }
    if stage == "1":
        common["towers"] = f"local-dir:{work / 'towers'}"
    else:
        common["init"] = str(work / "stage1")
    t0 = time.monotonic()
    result = train(TrainConfig(**common))
    seconds = [r["seconds"] for r in read_metrics(out)]
    steps = [round(b - a, 2) for a, b in zip([0.0, *seconds], seconds, strict=False)]
    return {
        "wall_s": round(time.monotonic() - t0, 1),
        "steps": result.steps,
        "step_s": steps,
        "run_gib": _size(out),
        "model_pt_gib": round((out / "model.pt").stat().st_size / 2**30, 3),
    }


def _import_phase(work: Path) -> dict[str, Any]:
    import torch
    from transformers import ClapAudioModelWithProjection

    from biovita_model.model import save_model
    from biovita_model.release_weights import import_official
    from biovita_model.towers import clap_audio_config, read_config

    t0 = time.monotonic()
    audio = ClapAudioModelWithProjection(clap_audio_config(read_config("htsat-unfused")["audio"]))
    weights = {
        "clap_audio": audio.state_dict(),
        "audio_adapter": {"weight": torch.randn(768, 512) * 0.02},
    }
    torch.save(weights, work / "clap_weights.pth")
    t1 = time.monotonic()
    model = import_official(work / "clap_weights.pth", work / "towers")
    save_model(model, work / "imported")
    return {
        "wall_s": round(time.monotonic() - t1, 1),
        "prepare_s": round(t1 - t0, 1),
        "run_gib": _size(work / "imported"),
    }


def _eval_phase(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from biovita_model.model import load_model

    t0 = time.monotonic()
    model = load_model(work / "imported", map_location=args.device).eval().to(args.device)
    load_s = round(time.monotonic() - t0, 1)
    b = args.batch_size
    wave = torch.randn(b, 10 * 48000, device=args.device) * 0.1
    pixels = torch.randn(b, 3, 224, 224, device=args.device)
    texts = [f"Aves Passeriformes Paridae Parus major {i}" for i in range(b)]
    timings: dict[str, list[float]] = {"audio": [], "image": [], "text": []}
    with torch.no_grad():
        for _ in range(args.steps):
            for name, fn in (
                ("audio", lambda: model.encode_audio(wave)),
                ("image", lambda: model.encode_image(pixels)),
                ("text", lambda: model.encode_text(model.tokenize(texts))),
            ):
                t = time.monotonic()
                fn()
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                timings[name].append(round(time.monotonic() - t, 2))
    return {"load_s": load_s, "batch_s": timings}


def run_phase(phase: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One phase in this process; its figures."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if phase in ("stage1", "stage2"):
        out = _train_phase(work, args, phase[-1])
    elif phase == "import_official":
        out = _import_phase(work)
    else:
        out = _eval_phase(work, args)
    out["peak_gib"] = _peak(args.device)
    return out


def main() -> int:
    """Build once, then each phase in a child process; one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/biovita-real-size"))
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--grad-checkpointing", action="store_true")
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = args.work.resolve()
    if args.phase:
        print(json.dumps(run_phase(args.phase, work, args)))
        return 0
    import shutil

    for name in ("stage1", "stage2", "imported"):
        shutil.rmtree(work / name, ignore_errors=True)
    os.environ.setdefault("BIOVITA_CACHE", str(work / "cache"))
    report: dict[str, Any] = {
        "device": args.device,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "precision": args.precision,
        "grad_checkpointing": args.grad_checkpointing,
        "build": build(work),
    }
    forwarded = [a for a in sys.argv[1:] if not a.startswith("--phase")]
    for phase in PHASES:
        proc = subprocess.run(
            [sys.executable, __file__, *forwarded, "--work", str(work), "--phase", phase],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        if proc.returncode != 0:
            report[phase] = {"error": proc.stderr[-1500:]}
            break
        report[phase] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(json.dumps(report))
    return 0 if all("error" not in v for v in report.values() if isinstance(v, dict)) else 1


if __name__ == "__main__":
    sys.exit(main())
