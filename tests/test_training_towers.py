"""Training from real-layout towers: the learning rate and lambda after --init, runs that
reference frozen towers, exact resume from such runs, --max-steps, gradient checkpointing and
the prompt-embedding cache."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("open_clip")
pytest.importorskip("transformers")

from model_helpers import open_clip_folder, synthetic_world, tiny_clap  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from biovita_model.cli import app  # noqa: E402
from biovita_model.model import load_model, save_model  # noqa: E402
from biovita_model.release_weights import import_official  # noqa: E402
from biovita_model.towers import AbsentTower  # noqa: E402
from biovita_model.training import TrainConfig, train  # noqa: E402
from biovita_model.training.checkpoint import (  # noqa: E402
    latest_checkpoint,
    load_checkpoint,
    read_metrics,
)
from biovita_model.training.config import PAPER_LR, TINY_LR  # noqa: E402
from biovita_model.training.loop import initial_model  # noqa: E402
from biovita_model.training.prompt_cache import FrozenText  # noqa: E402

BASE = {"batch_size": 4, "threads": 1, "progress": False, "seed": 3, "warmup": 0}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A world, a tiny open_clip folder with a CLAP folder, and an import-official run."""
    root = tmp_path_factory.mktemp("towers")
    world = synthetic_world(root / "hf")
    folder = root / "bioclip"
    open_clip_folder(folder, seed=1)
    clap = tiny_clap(2)
    clap.save_pretrained(folder / "clap")
    adapter = torch.nn.Linear(64, 64, bias=False)
    weights = {"clap_audio": clap.state_dict(), "audio_adapter": adapter.state_dict()}
    torch.save(weights, root / "clap_weights.pth")
    imported = import_official(root / "clap_weights.pth", folder, audio="tiny")
    save_model(imported, root / "imported")
    return {"world": world, "folder": folder, "imported": root / "imported", "root": root}


def _cfg(setup: dict[str, Path], out: Path, **kw) -> TrainConfig:
    return TrainConfig(dataset=str(setup["world"]), out=str(out), **(BASE | kw))


def _cosine(base: float, total: int) -> list[float]:
    return [base * 0.5 * (1 + math.cos(math.pi * s / total)) for s in range(total)]


def test_lr_and_lambda_follow_the_init_towers(setup: dict[str, Path], tmp_path: Path) -> None:
    # tiny towers: 1e-3, also after --init of a tiny run
    pre = train(_cfg(setup, tmp_path / "pre", stage="pretrain", epochs=1)).run_dir
    s1 = _cfg(setup, tmp_path / "s1", stage="1", epochs=1, init=str(pre))
    assert s1.start_towers == "tiny" and s1.base_lr == TINY_LR
    result = train(s1)
    lrs = [r["lr"] for r in read_metrics(result.run_dir)]
    assert lrs == pytest.approx(_cosine(TINY_LR, result.steps))
    # real towers (an import-official run of a local-dir folder): the paper's 1e-4
    s2 = _cfg(setup, tmp_path / "s2", stage="2", epochs=2, init=str(setup["imported"]))
    assert s2.start_towers.startswith("local-dir:") and s2.base_lr == PAPER_LR
    assert s2.text_base_lr == pytest.approx(PAPER_LR / 10)
    result = train(s2)
    records = list(read_metrics(result.run_dir))
    total = result.steps
    assert total == 8
    assert [r["lr"] for r in records] == pytest.approx(_cosine(PAPER_LR, total))
    # the paper's ramp by default: 0 at the first step, lambda_max at the stage's last
    assert [r["lambda"] for r in records] == pytest.approx(
        [0.1 * s / (total - 1) for s in range(8)]
    )
    # or in explicit units
    steps = _cfg(setup, tmp_path / "r", stage="2", epochs=1, init=str(setup["imported"]))
    steps.lambda_ramp_steps = 2
    lams = [r["lambda"] for r in read_metrics(train(steps).run_dir)]
    assert lams == pytest.approx([0.0, 0.05, 0.1, 0.1])
    half = _cfg(setup, tmp_path / "h", stage="2", epochs=2, lambda_ramp_fraction=0.5)
    assert half.lambda_ramp_length(9) == 4 and half.lambda_ramp_length(1) == 0
    with pytest.raises(ValueError, match="not both"):
        _cfg(setup, tmp_path / "x", lambda_ramp_fraction=0.5, lambda_ramp_steps=3)
    old = TrainConfig.from_dict({"dataset": "d", "out": "o", "lambda_ramp": 0.25})
    assert (old.lambda_ramp_fraction, old.lambda_ramp_steps) == (0.25, None)
    assert (
        TrainConfig.from_dict({"dataset": "d", "out": "o", "lambda_ramp": 5.0}).lambda_ramp_steps
        == 5
    )


def test_towers_with_init_must_agree(setup: dict[str, Path], tmp_path: Path) -> None:
    cfg = _cfg(setup, tmp_path / "a", stage="2", init=str(setup["imported"]), towers="tiny")
    with pytest.raises(ValueError, match="disagree"):
        train(cfg)
    args = ["train", "--dataset", str(setup["world"]), "--stage", "2", "--out", str(tmp_path / "b")]
    args += ["--init", str(setup["imported"]), "--towers", "tiny"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0 and "disagree" in result.output
    assert not (tmp_path / "b").exists()
    same = _cfg(setup, tmp_path / "c", stage="2", init=str(setup["imported"]))
    same.towers = same.start_towers
    same.check_towers()  # naming the init run's own towers is fine


def test_runs_reference_frozen_towers_and_resume_exactly(
    setup: dict[str, Path], tmp_path: Path
) -> None:
    spec = f"local-dir:{setup['folder']}"
    kw = {"stage": "1", "towers": spec, "audio_config": "tiny", "epochs": 2, "dropout": 0.0}
    assert isinstance(initial_model(_cfg(setup, tmp_path / "n", **kw)).clip.visual, AbsentTower)
    straight = train(_cfg(setup, tmp_path / "a", **kw)).run_dir
    train(_cfg(setup, tmp_path / "b", stop_after=1, **kw))
    train(_cfg(setup, tmp_path / "b", **kw), resume=True)
    la = [r["loss"] for r in read_metrics(straight)]
    assert la == [r["loss"] for r in read_metrics(tmp_path / "b")]
    # model.pt holds what trained; config.json names the frozen towers' file and its hash
    state = torch.load(straight / "model.pt", weights_only=True)
    assert state and not any(k.startswith("clip.") for k in state)
    assert any(k.startswith("audio.") for k in state) and "audio_adapter.weight" in state
    doc = json.loads((straight / "config.json").read_text())
    assert set(doc["references"]) == {"image", "text"}
    weights = setup["folder"] / "open_clip_pytorch_model.bin"
    import hashlib

    assert doc["references"]["image"]["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    # a checkpoint holds what resume needs: the trained parts and the optimizer
    ckpt = load_checkpoint(latest_checkpoint(straight))
    assert not any(k.startswith("clip.") for k in ckpt["model"]) and ckpt["optimizer"]["state"]
    # the run rebuilds whole: image and text from the folder, audio from model.pt
    model = load_model(straight).eval()
    clip = open_clip_folder(tmp_path / "same", seed=1)
    pixels = torch.randn(2, 3, 32, 32)
    tokens = model.tokenize(["Parus major"])
    with torch.no_grad():
        assert torch.allclose(
            model.encode_image(pixels), clip.encode_image(pixels, True), atol=1e-6
        )
        assert torch.allclose(model.encode_text(tokens), clip.encode_text(tokens, True), atol=1e-6)
        assert torch.equal(model.audio_adapter.weight, state["audio_adapter.weight"])
    # Stage 2 from it: the text tower trains (stored now), the image stays a reference
    s2 = train(_cfg(setup, tmp_path / "s2", stage="2", epochs=1, init=str(straight))).run_dir
    doc2 = json.loads((s2 / "config.json").read_text())
    assert set(doc2["references"]) == {"image"}
    state2 = torch.load(s2 / "model.pt", weights_only=True)
    assert any(k.startswith("clip.transformer.") for k in state2)
    assert not any(k.startswith("clip.visual.") for k in state2)
    # a changed weights file is refused, not silently used
    sd = torch.load(weights, weights_only=True)
    sd["visual.conv1.weight"] = sd["visual.conv1.weight"] + 1
    torch.save(sd, weights)
    try:
        with pytest.raises(ValueError, match="changed"):
            load_model(s2)
    finally:
        open_clip_folder(setup["folder"], seed=1)


def test_prompt_embeddings_are_cached_by_text_tower(setup: dict[str, Path], tmp_path: Path) -> None:
    model = load_model(setup["imported"]).eval()
    prompts = [["Parus major", "Aves Parus major"], ["Turdus merula"]]
    first = FrozenText(model, prompts, torch.device("cpu"), cache=tmp_path)
    assert first.computed == 3 and first.path.is_file()
    again = FrozenText(
        model, [*prompts, ["Erithacus rubecula"]], torch.device("cpu"), cache=tmp_path
    )
    assert again.computed == 1
    assert torch.equal(
        again(["Parus major", "Turdus merula"]), first(["Parus major", "Turdus merula"])
    )
    with torch.no_grad():
        fresh = model.encode_text(model.tokenize(["Turdus merula"]))
    assert torch.allclose(again(["Turdus merula"]), fresh, atol=1e-6)
    with torch.no_grad():  # another text tower: another cache entry
        next(iter(model.part_parameters("text"))).add_(0.5)
    other = FrozenText(model, prompts, torch.device("cpu"), cache=tmp_path)
    assert other.computed == 3 and other.path != first.path


def test_max_steps_and_grad_checkpointing(setup: dict[str, Path], tmp_path: Path) -> None:
    kw = {"stage": "2", "epochs": 5, "max_steps": 3, "init": str(setup["imported"]), "dropout": 0.0}
    plain = train(_cfg(setup, tmp_path / "plain", **kw))
    ckpt = train(_cfg(setup, tmp_path / "ckpt", grad_checkpointing=True, **kw))
    assert plain.steps == ckpt.steps == 3 and plain.epochs == 1
    a, b = list(read_metrics(plain.run_dir)), list(read_metrics(ckpt.run_dir))
    assert [r["lr"] for r in a] == pytest.approx(_cosine(PAPER_LR, 3))
    assert [r["lambda"] for r in a] == pytest.approx([0.0, 0.05, 0.1])
    assert [r["loss"] for r in b] == pytest.approx([r["loss"] for r in a], rel=1e-5)
    sa = torch.load(plain.run_dir / "model.pt", weights_only=True)
    sb = torch.load(ckpt.run_dir / "model.pt", weights_only=True)
    assert all(torch.allclose(sa[k], sb[k], atol=1e-6) for k in sa)
    model = initial_model(_cfg(setup, tmp_path / "n", grad_checkpointing=True, **kw))
    from biovita_model.training.loop import set_grad_checkpointing

    set_grad_checkpointing(model)
    stages = [m for m in model.audio.modules() if hasattr(m, "gradient_checkpointing")]
    assert (
        stages
        and all(m.gradient_checkpointing for m in stages)
        and model.clip.transformer.grad_checkpointing
    )
