"""`biovita-model`: train, evaluate and probe the tri-modal model (needs the `model` extra).

Each command is a thin layer over a Python function usable from a notebook:
`biovita_model.training.train` (every stage, `pretrain-towers` included),
`biovita_model.eval.run.evaluate_run`, `biovita_model.embed.embed_dataset`,
`biovita_model.probe.probe_traits`, `biovita_model.release_weights.import_official`.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
from pathlib import Path
from typing import Annotated, Any

import typer

from biovita_data.app.clikit import cli_app, cli_console, debug_option, fail, version_option

app = cli_app("Train and evaluate the BioVITA audio-image-text model.")

MODEL_PACKAGES = ("torch", "torchvision", "open_clip_torch", "transformers", "torchcodec")
console = cli_console()
err = cli_console(stderr=True)


@app.callback()
def main(
    version: Annotated[bool, version_option("biovita-model")] = False,
    debug: Annotated[bool, debug_option()] = False,
) -> None:
    """BioVITA model: HTS-AT audio tower aligned to BioCLIP 2 image and text towers."""


@app.command()
def info() -> None:
    """Show which packages of the `model` extra are installed, and their versions."""
    missing = []
    for name in MODEL_PACKAGES:
        try:
            typer.echo(f"{name:16} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            typer.echo(f"{name:16} not installed")
            missing.append(name)
    if missing:
        typer.echo('install them with: pip install -e ".[model]"')


# ---- training -------------------------------------------------------------------------------

Opt = typer.Option
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w.-]+)?")  # @REVISION: a release tag
TrainDatasetOpt = Annotated[
    str | None,
    Opt("--dataset", help="published folder (OUT/hf or OUT) or Hub repo NS/NAME "
        "(required unless --resume)"),
]  # fmt: skip
OutOpt = Annotated[Path, Opt("--out", help="the run folder to write")]
EpochsOpt = Annotated[int | None, Opt("--epochs", help="epochs (default 10)")]
BatchOpt = Annotated[
    int | None, Opt("--batch-size", help="global contrastive batch, one item per species (64)")
]
LrOpt = Annotated[
    float | None,
    Opt("--lr", help="peak learning rate (default: 1e-3 for tiny towers, 1e-4 for real ones; "
        "after --init, those of the init run)"),
]  # fmt: skip
ResumeOpt = Annotated[bool, Opt("--resume", help="continue RUN from its last checkpoint")]
ProgressOpt = Annotated[bool, Opt("--progress/--no-progress", help="show the progress bar")]
VerboseOpt = Annotated[
    bool, Opt("--verbose", help="also print the per-epoch table (train_summary.json keeps it)")
]
WorkersOpt = Annotated[int | None, Opt("--workers", help="data worker processes per rank (0)")]
DeviceOpt = Annotated[str | None, Opt("--device", help="cpu or cuda (one per rank)")]
PrecisionOpt = Annotated[str | None, Opt("--precision", help="fp32, bf16 or fp16 (autocast)")]
AccumOpt = Annotated[int | None, Opt("--grad-accum", help="batches per optimizer step (1)")]
SeedOpt = Annotated[int | None, Opt("--seed", help="seed of the model, data and augmentation")]
TowersOpt = Annotated[
    str | None,
    Opt("--towers", help="tiny, local-dir:PATH or hf-hub:ORG/NAME[@REVISION] (e.g. "
        "hf-hub:imageomics/bioclip-2); not with --init, whose run gives the towers"),
]  # fmt: skip
AudioTowerOpt = Annotated[
    str | None,
    Opt("--audio-tower", help="the audio tower: a CLAP model ORG/NAME[@REVISION] (e.g. "
        "laion/clap-htsat-unfused) or local-dir:PATH (default: the folder's clap/, else random)"),
]  # fmt: skip
AudioConfigOpt = Annotated[
    str | None,
    Opt("--audio-config", help="HTS-AT config in configs/ giving the front end (htsat-unfused)"),
]
CacheInputsOpt = Annotated[
    bool | None,
    Opt(
        "--cache-inputs/--no-cache-inputs",
        help="keep each recording's log-mel (computed once, kept on disk) and each decoded photo "
        "in memory, and embed Stage 2's photo targets once: for small datasets and tiny towers "
        "(off)",
    ),
]
ThreadsOpt = Annotated[
    int | None, Opt("--threads", help="torch CPU threads per rank (default: cores / processes)")
]
ShortClipOpt = Annotated[
    str | None,
    Opt("--short-clip", help="how clips under 10 s are filled: pad (silence, as the official "
        "extractor and import-official runs), repeat or repeatpad (default: the run's / towers')"),
]  # fmt: skip


def _options(**given: Any) -> dict[str, Any]:
    """The options given on the command line (None: not given)."""
    return {k: v for k, v in given.items() if v is not None}


RevisionOpt = Annotated[
    str | None,
    Opt("--revision", help="with a Hub repo --dataset: load exactly this release (a tag such as "
        "v2026.12, a branch or a commit); kept in the run's config as NS/NAME@REVISION"),
]  # fmt: skip


def _pinned(dataset: str | None, revision: str | None) -> str | None:
    """`--dataset NS/NAME --revision REV` -> `NS/NAME@REV` (a folder takes no revision)."""
    if revision is None:
        return dataset
    if dataset is None or Path(dataset).exists() or "@" in dataset:
        raise typer.BadParameter(
            "--revision needs --dataset as a Hub repo id NS/NAME (not a folder, no @REVISION)",
            param_hint="--revision",
        )
    return f"{dataset}@{revision}"


def _check_dataset(dataset: str | None) -> None:
    """A published folder that exists, or something shaped like a Hub repo id (NS/NAME)."""
    if dataset is None or Path(dataset).exists():
        return
    if _REPO_ID.fullmatch(dataset):
        return
    raise typer.BadParameter(
        f"{dataset}: no such folder (give a published folder OUT/hf or OUT, or a Hub repo NS/NAME)",
        param_hint="--dataset",
    )


def _check_run(run: Path, option: str = "--run") -> None:
    """A run folder: config.json + model.pt (what train, train-tiny and import-official write)."""
    missing = [name for name in ("config.json", "model.pt") if not (Path(run) / name).is_file()]
    if not Path(run).is_dir():
        raise typer.BadParameter(f"{run}: no such run folder", param_hint=option)
    if missing:
        raise typer.BadParameter(
            f"{run} is not a finished run (no {' or '.join(missing)})", param_hint=option
        )


_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@\S+)?$")


def _check_exists(path: Path | str, option: str, *, hub: bool = False) -> None:
    """A file or folder that must exist; with `hub`, a Hub repo id (hf-hub:ORG/NAME, ORG/NAME)
    passes too (huggingface_hub says whether it exists)."""
    text = str(path)
    if hub and (text.startswith("hf-hub:") or (_REPO_ID.match(text) and not Path(text).exists())):
        return
    if not Path(text.removeprefix("local-dir:")).exists():
        raise typer.BadParameter(f"{path}: no such file or folder", param_hint=option)


def _check_train(out: Path, dataset: str | None, stage: str | None, resume: bool) -> None:
    """The options a training run needs, checked before torch is imported."""
    if resume:
        if not out.is_dir():
            raise typer.BadParameter(f"{out}: no run to resume", param_hint="--out")
    else:
        if dataset is None:
            fail("missing option --dataset (required unless --resume)")
        if stage is None:
            fail("missing option --stage: 1 or 2 (required unless --resume)")
    _check_dataset(dataset)


def _config(out: Path, resume: bool, given: dict[str, Any]) -> Any:
    """The run's TrainConfig: on --resume, the stored one with the options given on top."""
    from biovita_model.training import TrainConfig
    from biovita_model.training.config import CONFIG_FILE

    base: dict[str, Any] = {}
    if resume and (out / CONFIG_FILE).is_file():
        base = TrainConfig.read(out).to_dict()
    base.update(given)
    base["out"] = str(out)
    if base.get("dataset") is None:
        raise typer.BadParameter("--dataset is required", param_hint="--dataset")
    try:
        cfg = TrainConfig.from_dict(base)
        cfg.check_towers()
    except (ValueError, FileNotFoundError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    return cfg


@app.command()
def train(
    out: OutOpt,
    dataset: TrainDatasetOpt = None,
    stage: Annotated[
        str | None,
        Opt(
            "--stage",
            help="1 (ATC) or 2 (ATC + lambda (AIC + ITC)); required unless --resume",
        ),
    ] = None,
    init: Annotated[
        str | None, Opt("--init", help="a run folder or checkpoint to start from")
    ] = None,
    towers: TowersOpt = None,
    audio_tower: AudioTowerOpt = None,
    audio_config: AudioConfigOpt = None,
    short_clip: ShortClipOpt = None,
    epochs: EpochsOpt = None,
    max_steps: Annotated[
        int | None, Opt("--max-steps", help="stop after N optimizer steps (schedules end there)")
    ] = None,
    batch_size: BatchOpt = None,
    lr: LrOpt = None,
    text_lr: Annotated[float | None, Opt("--text-lr", help="stage 2 text tower lr (lr/10)")] = None,
    train_text: Annotated[
        bool | None, Opt("--train-text/--freeze-text", help="stage 2: train the text tower")
    ] = None,
    lambda_max: Annotated[
        float | None, Opt("--lambda-max", help="stage 2: final weight of AIC + ITC (0.1)")
    ] = None,
    lambda_ramp_fraction: Annotated[
        float | None,
        Opt(
            "--lambda-ramp-fraction",
            help="stage 2: lambda rises linearly from 0 at the first step to lambda-max after "
            "this fraction of the stage's steps (default 1.0: at its last step)",
        ),
    ] = None,
    lambda_ramp_steps: Annotated[
        int | None,
        Opt(
            "--lambda-ramp-steps",
            help="stage 2: lambda reaches lambda-max after this many optimizer steps instead",
        ),
    ] = None,
    grad_checkpointing: Annotated[
        bool | None,
        Opt(
            "--grad-checkpointing/--no-grad-checkpointing",
            help="recompute activations in backward (less memory, ~30 % more time)",
        ),
    ] = None,
    warmup: Annotated[
        float | None, Opt("--warmup", help="warm-up: fraction of steps, or steps (0.05)")
    ] = None,
    weight_decay: Annotated[float | None, Opt("--weight-decay", help="AdamW decay (0.05)")] = None,
    max_audio_per_species: Annotated[
        int | None, Opt("--max-audio-per-species", help="items per species per epoch")
    ] = None,
    workers: WorkersOpt = None,
    cache_inputs: CacheInputsOpt = None,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    grad_accum: AccumOpt = None,
    seed: SeedOpt = None,
    threads: ThreadsOpt = None,
    augment: Annotated[bool | None, Opt("--augment/--no-augment", help="augmentation")] = None,
    dropout: Annotated[float | None, Opt("--dropout", help="override audio dropout")] = None,
    keep_checkpoints: Annotated[
        int | None, Opt("--keep-checkpoints", help="epoch checkpoints kept, the newest (2)")
    ] = None,
    stop_after: Annotated[
        int | None, Opt("--stop-after", help="end this session after N epochs (then --resume)")
    ] = None,
    resume: ResumeOpt = False,
    progress: ProgressOpt = True,
    verbose: VerboseOpt = False,
    revision: RevisionOpt = None,
) -> None:
    """Train Stage 1 or 2 (one process, or each rank of `torchrun --nproc_per_node N`)."""
    if stage is not None and stage not in ("1", "2"):
        raise typer.BadParameter(
            "use 1 or 2 (pretrain-towers trains the towers)", param_hint="--stage"
        )
    dataset = _pinned(dataset, revision)
    _check_train(out, dataset, stage, resume)
    from biovita_model.training import train as run_train
    from biovita_model.training.report import set_verbose

    set_verbose(verbose)
    given = _options(
        dataset=dataset, stage=stage, init=init, towers=towers, audio_tower=audio_tower,
        audio_config=audio_config, short_clip=short_clip, epochs=epochs, max_steps=max_steps,
        batch_size=batch_size,
        lr=lr, text_lr=text_lr, train_text=train_text, lambda_max=lambda_max,
        lambda_ramp_fraction=lambda_ramp_fraction, lambda_ramp_steps=lambda_ramp_steps,
        grad_checkpointing=grad_checkpointing, warmup=warmup,
        weight_decay=weight_decay, max_audio_per_species=max_audio_per_species,
        workers=workers, cache_inputs=cache_inputs, device=device, precision=precision,
        grad_accum=grad_accum, seed=seed, threads=threads, augment=augment, dropout=dropout,
        keep_checkpoints=keep_checkpoints, stop_after=stop_after, progress=progress,
    )  # fmt: skip
    if not resume and "stage" not in given:
        raise typer.BadParameter("--stage is required", param_hint="--stage")
    if lambda_ramp_fraction is not None and lambda_ramp_steps is not None:
        raise typer.BadParameter("give --lambda-ramp-fraction or --lambda-ramp-steps, not both")
    if resume and (lambda_ramp_fraction is not None or lambda_ramp_steps is not None):
        given.setdefault("lambda_ramp_fraction", None)
        given.setdefault("lambda_ramp_steps", None)
    run_train(_config(out, resume, given), resume=resume, console=err)


@app.command("pretrain-towers")
def pretrain_towers_cmd(
    out: OutOpt,
    dataset: TrainDatasetOpt = None,
    towers: TowersOpt = None,
    epochs: EpochsOpt = None,
    max_steps: Annotated[int | None, Opt("--max-steps", help="stop after N steps")] = None,
    batch_size: BatchOpt = None,
    lr: LrOpt = None,
    warmup: Annotated[float | None, Opt("--warmup", help="fraction of steps, or steps")] = None,
    grad_checkpointing: Annotated[
        bool | None, Opt("--grad-checkpointing/--no-grad-checkpointing")
    ] = None,
    workers: WorkersOpt = None,
    cache_inputs: CacheInputsOpt = None,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    seed: SeedOpt = None,
    threads: ThreadsOpt = None,
    resume: ResumeOpt = False,
    progress: ProgressOpt = True,
    verbose: VerboseOpt = False,
) -> None:
    """Train tiny image/text towers image-text contrastively: a STAND-IN for BioCLIP 2."""
    _check_train(out, dataset, "pretrain", resume)
    from biovita_model.training import train as run_train
    from biovita_model.training.report import set_verbose

    set_verbose(verbose)

    given = _options(
        dataset=dataset, towers=towers, epochs=epochs, max_steps=max_steps,
        batch_size=batch_size, lr=lr, warmup=warmup, grad_checkpointing=grad_checkpointing,
        workers=workers, cache_inputs=cache_inputs, device=device, precision=precision,
        seed=seed, threads=threads, progress=progress,
    )  # fmt: skip
    given["stage"] = "pretrain"
    run_train(_config(out, resume, given), resume=resume, console=err)


@app.command("train-tiny")
def train_tiny_cmd(
    dataset: Annotated[str, Opt("--dataset", help="published folder (OUT/hf or OUT)")],
    runs: Annotated[Path, Opt("--runs", help="where RUNS/{towers,stage1,stage2} go")],
    bench: Annotated[
        Path | None, Opt("--bench", help="OUT/bench: evaluate stage 1 and 2 on it")
    ] = None,
    preset: Annotated[str, Opt("--preset", help="demo (minutes) or acceptance")] = "demo",
    seed: Annotated[int, Opt("--seed", help="seed of the models, data and augmentation")] = 0,
    workers: WorkersOpt = None,
    verbose: VerboseOpt = False,
    as_json: Annotated[
        bool, Opt("--json", help="end with one JSON line (runs, seconds) for machines")
    ] = False,
) -> None:
    """pretrain-towers -> Stage 1 -> Stage 2 with tiny towers (a measured preset), + eval."""
    _check_dataset(dataset)
    if bench is not None:
        _check_exists(bench, "--bench")
    from biovita_model.eval.tables import eval_table
    from biovita_model.training.recipes import train_tiny
    from biovita_model.training.report import set_verbose

    set_verbose(verbose)

    chain = train_tiny(
        dataset, runs, bench=bench, preset=preset, seed=seed, workers=workers, console=err
    )
    for stage, report in chain.reports.items():
        console.rule(f"{stage}: {chain.runs[stage]}")
        for table in eval_table(report):
            console.print(table)
    if as_json:
        typer.echo(json.dumps({"runs": {k: str(v) for k, v in chain.runs.items()},
                               "seconds": chain.seconds, "reused": chain.reused}))  # fmt: skip


# ---- evaluation -----------------------------------------------------------------------------

RunOpt = Annotated[Path, Opt("--run", help="a run folder (config.json + model.pt)")]


def _ks(text: str) -> list[int]:
    try:
        ks = sorted({int(k) for k in text.split(",") if k.strip()})
    except ValueError as exc:
        raise typer.BadParameter(f"not a list of integers: {text!r}", param_hint="--k") from exc
    if not ks or ks[0] < 1:
        raise typer.BadParameter("give positive integers, e.g. 1,5,10", param_hint="--k")
    return ks


@app.command("eval")
def eval_cmd(
    run: RunOpt,
    bench: Annotated[
        Path, Opt("--bench", help="OUT/bench, one BENCH folder, or a published folder")
    ],
    subset: Annotated[str, Opt("--subset", help="seen, unseen or all")] = "all",
    k: Annotated[str, Opt("--k", help="Top-k cut-offs")] = "1,5,10",
    dataset: Annotated[
        str | None, Opt("--dataset", help="published folder with the media (default: OUT/hf)")
    ] = None,
    layout: Annotated[str, Opt("--layout", help="auto, parquet or csv (official layout)")] = "auto",
    batch_size: Annotated[int, Opt("--batch-size", help="items per forward pass")] = 64,
    workers: Annotated[int, Opt("--workers", help="data worker processes")] = 0,
    device: Annotated[str, Opt("--device", help="cpu or cuda")] = "cpu",
    threads: ThreadsOpt = None,
    short_clip: ShortClipOpt = None,
) -> None:
    """Score a run on BioVITA-Bench: table, RUN/eval.json, eval_per_class.csv and eval.png."""
    if short_clip is not None and short_clip not in ("pad", "repeat", "repeatpad"):
        raise typer.BadParameter("use pad, repeat or repeatpad", param_hint="--short-clip")
    _check_run(run)
    _check_exists(bench, "--bench")
    _check_dataset(dataset)
    from biovita_model.eval.run import evaluate_run
    from biovita_model.eval.tables import eval_table

    ks = _ks(k)
    if subset not in ("seen", "unseen", "all"):
        raise typer.BadParameter("use seen, unseen or all", param_hint="--subset")
    if layout not in ("auto", "parquet", "csv"):
        raise typer.BadParameter("use auto, parquet or csv", param_hint="--layout")
    result = evaluate_run(
        run, bench, subset=subset, ks=ks, dataset=dataset, layout=layout,  # type: ignore[arg-type]
        batch_size=batch_size, workers=workers, device=device, threads=threads,
        short_clip=short_clip,
    )  # fmt: skip
    for table in eval_table(result.report, ks):
        console.print(table)
    for name, path in result.files.items():
        err.print(f"wrote {path} ({name})")


@app.command()
def embed(
    run: RunOpt,
    dataset: Annotated[str, Opt("--dataset", help="published folder or Hub repo NS/NAME")],
    out: Annotated[Path, Opt("--out", help="FILE.parquet")],
    modality: Annotated[str, Opt("--modality", help="audio, image or text")] = "audio",
    split: Annotated[list[str] | None, Opt("--split", help="train/test/unseen (all)")] = None,
    batch_size: Annotated[int, Opt("--batch-size", help="items per forward pass")] = 64,
    workers: Annotated[int, Opt("--workers", help="data worker processes")] = 0,
    device: Annotated[str, Opt("--device", help="cpu or cuda")] = "cpu",
    threads: ThreadsOpt = None,
) -> None:
    """Embeddings of a dataset's items (text: every prompt of every species) as Parquet."""
    if modality not in ("audio", "image", "text"):
        raise typer.BadParameter("use audio, image or text", param_hint="--modality")
    _check_run(run)
    _check_dataset(dataset)
    import torch

    from biovita_data.core.layout import MEDIA_SPLITS
    from biovita_model.embed import embed_dataset, write_embeddings
    from biovita_model.model import load_model
    from biovita_model.threads import cpu_threads

    if modality not in ("audio", "image", "text"):
        raise typer.BadParameter("use audio, image or text", param_hint="--modality")
    torch.set_num_threads(cpu_threads(1, workers, threads))
    model = load_model(run, map_location=device)
    df = embed_dataset(
        model, dataset, modality, split or MEDIA_SPLITS, batch_size=batch_size, workers=workers,
        device=device,
    )  # fmt: skip
    path = write_embeddings(df, out)
    err.print(f"wrote {path}: {df.height} {modality} embeddings of width {model.embed_dim}")


@app.command("probe-traits")
def probe_traits_cmd(
    run: RunOpt,
    dataset: Annotated[str, Opt("--dataset", help="published folder or Hub repo NS/NAME")],
    modality: Annotated[list[str] | None, Opt("--modality", help="audio and/or image")] = None,
    test_split: Annotated[str, Opt("--test-split", help="test or unseen")] = "test",
    max_per_species: Annotated[int, Opt("--max-per-species", help="items per species")] = 50,
    l2: Annotated[float, Opt("--l2", help="L2 penalty of the linear heads")] = 1e-3,
    workers: Annotated[int, Opt("--workers", help="data worker processes")] = 0,
    device: Annotated[str, Opt("--device", help="cpu or cuda")] = "cpu",
    threads: ThreadsOpt = None,
) -> None:
    """Linear trait probes on frozen embeddings: F1 per trait and category vs the majority."""
    _check_run(run)
    _check_dataset(dataset)
    from biovita_model.probe import probe_table, probe_traits

    report = probe_traits(
        run, dataset, modalities=modality or ("audio", "image"), test_split=test_split,
        max_per_species=max_per_species, l2=l2, workers=workers, device=device, threads=threads,
    )  # fmt: skip
    for table in probe_table(report):
        console.print(table)
    err.print(f"wrote {Path(run) / 'probe.json'}")


@app.command()
def mteb(
    run: RunOpt,
    tasks: Annotated[
        str, Opt("--tasks", help="MTEB task names, comma-separated (e.g. BioVITAA2TReranking)")
    ],
    out: Annotated[Path, Opt("--out", help="where mteb writes its results")] = Path("mteb"),
    device: Annotated[str, Opt("--device", help="cpu or cuda")] = "cpu",
) -> None:
    """Run MTEB tasks with the run as encoder (needs `pip install mteb` and its Hub datasets)."""
    _check_run(run)
    names = [t.strip() for t in tasks.split(",") if t.strip()]
    if not names:
        raise typer.BadParameter("name at least one task", param_hint="--tasks")
    try:
        import mteb as mteb_lib
    except ImportError:
        fail('mteb is not installed: pip install -e ".[mteb]"')
    from biovita_model.mteb_encoder import BioVITAEncoder

    try:
        selected = mteb_lib.get_tasks(tasks=names)
    except (KeyError, ValueError) as exc:
        fail(f"--tasks: {exc}")
    encoder = BioVITAEncoder(run, device=device)
    results = mteb_lib.evaluate(encoder, selected, cache=mteb_lib.ResultCache(out))
    for result in results.task_results:
        typer.echo(json.dumps({"task": result.task_name, "scores": result.get_score()}))


@app.command("import-official")
def import_official_cmd(
    clap_weights: Annotated[
        str,
        Opt(
            "--clap-weights",
            help="clap_weights.pth of the release, or a Hub repo id "
            "(hf-hub:ORG/NAME[@REVISION]) holding it",
        ),
    ],
    open_clip: Annotated[
        str,
        Opt(
            "--open-clip",
            help="open_clip ViT-L-14 folder (BioCLIP 2) or a Hub repo id "
            "(hf-hub:imageomics/bioclip-2[@REVISION])",
        ),
    ],
    out: Annotated[Path, Opt("--out", help="the run folder to write")],
    audio: Annotated[str, Opt("--audio", help="HTS-AT config in configs/")] = "htsat-unfused",
    embed_towers: Annotated[
        bool,
        Opt(
            "--embed-towers",
            help="copy the image and text towers into the run (default: the "
            "run references the open_clip weights file or repo commit)",
        ),
    ] = False,
    as_json: Annotated[
        bool, Opt("--json", help="end with one JSON line (run, embed_dim) for machines")
    ] = False,
) -> None:
    """Build a run from the original release's weights (audio tower + adapter, open_clip)."""
    _check_exists(clap_weights, "--clap-weights", hub=True)
    _check_exists(open_clip, "--open-clip", hub=True)
    from biovita_model.model import save_model
    from biovita_model.release_weights import import_official

    model = import_official(clap_weights, open_clip, audio=audio)
    extra = {"imported": {"clap_weights": clap_weights, "open_clip": open_clip}}
    save_model(model, out, extra=extra, embed_towers=embed_towers)
    err.print(f"wrote {out} (towers {model.spec}, embed dim {model.embed_dim})")
    if as_json:
        typer.echo(json.dumps({"run": str(out), "embed_dim": model.embed_dim}))


if __name__ == "__main__":  # `python -m biovita_model.cli ...`, e.g. under torchrun -m
    app()
