"""The model library: towers, audio front end, model, losses, bench scoring, official weights."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from rich.console import Console

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")
pytest.importorskip("transformers")

from model_helpers import open_clip_folder, tiny_clap  # noqa: E402
from transformers import (  # noqa: E402
    ClapFeatureExtractor,
    ClapModel,
)

from biovita_data.core import layout  # noqa: E402
from biovita_data.core.schemas import MEDIA, SPECIES  # noqa: E402
from biovita_data.core.tables import write_table  # noqa: E402
from biovita_data.curate.bench import LEVELS, TASK_BY_CODE, TASKS, build_bench, tasks_parquet_path  # noqa: E402
from biovita_data.curate.bench.csv_layout import TASK_DTYPES  # noqa: E402
from biovita_model.audio_frontend import (  # noqa: E402
    AudioFrontend,
    FrontendConfig,
    augment_mel,
    check_frontend,
    fit_length,
    max_frames,
)
from biovita_model.eval import scoring as ev  # noqa: E402
from biovita_model.eval.plot import plot_results  # noqa: E402
from biovita_model.eval.run import bench_text_embeddings, text_strings  # noqa: E402
from biovita_model.eval.subsets import load_bench  # noqa: E402
from biovita_model.eval.tables import eval_table  # noqa: E402
from biovita_model.losses import (  # noqa: E402
    info_nce,
    lambda_ramp,
    stage1_loss,
    stage2_loss,
)
from biovita_model.model import (  # noqa: E402
    PAIRS,
    BioVITAModel,
    create_model,
    load_model,
    save_model,
)
from biovita_model.release_weights import import_official  # noqa: E402
from biovita_model.towers import create_towers, read_config  # noqa: E402

SR = 48_000


@pytest.fixture(scope="module")
def tiny() -> BioVITAModel:
    torch.manual_seed(0)
    return create_model("tiny").eval()


# ---- towers and model -----------------------------------------------------------------------


def test_tiny_towers_shapes_and_norms(tiny: BioVITAModel) -> None:
    cfg = tiny.tower_config
    assert cfg.embed_dim == 64 and tiny.embed_dim == 64
    assert cfg.audio["spec_size"] == 64 and cfg.audio["num_mel_bins"] == 16
    assert cfg.open_clip["model_cfg"]["text_cfg"]["context_length"] == 32
    assert tiny.audio_adapter.bias is None and tiny.audio_adapter.weight.shape == (64, 64)
    tokens = tiny.tokenize(["Turdus merula", "Aves Passeriformes Turdidae Turdus merula"])
    assert tokens.shape == (2, 32) and tokens.dtype == torch.long
    assert int(tokens.max()) < 49408
    with torch.no_grad():
        mel = tiny.audio_features(torch.randn(3, 4 * SR))
        a = tiny.encode_audio(torch.randn(3, 12 * SR))
        i = tiny.encode_image(torch.randn(3, 3, 32, 32))
        t = tiny.encode_text(tokens)
    assert mel.shape == (3, 1, 251, 16)  # 480000 // 1920 + 1 frames (40 ms), 16 mel bins
    assert mel.shape[2] <= max_frames(64, 16)
    for x, n in ((a, 3), (i, 3), (t, 2)):
        assert x.shape == (n, 64)
        assert torch.allclose(x.norm(dim=-1), torch.ones(n), atol=1e-5)
    scales = tiny.logit_scales()
    assert set(scales) == set(PAIRS)
    assert all(math.isclose(float(s.detach()), 1 / 0.07, rel_tol=1e-5) for s in scales.values())


def test_forward_backward_and_freeze() -> None:
    torch.manual_seed(1)
    model = create_model("tiny")
    model.freeze(image=True, text=False)
    model.train()
    assert not model.clip.visual.training and model.clip.transformer.training
    assert model.audio.training
    mel = model.audio_features(torch.randn(4, 10 * SR))
    out = model(audio=mel, image=torch.randn(4, 3, 32, 32), text=model.tokenize(list("abcd")))
    total, parts = stage2_loss(out, 0.1)
    assert set(parts) == {"atc", "aic", "itc"}
    total.backward()

    def grads(part: str) -> list[bool]:
        return [
            p.grad is not None and bool(p.grad.abs().sum() > 0) for p in model.part_parameters(part)
        ]

    assert all(p.grad is None for p in model.part_parameters("image"))
    assert any(grads("text")) and any(grads("audio"))
    assert model.audio_adapter.weight.grad is not None
    assert all(model.log_logit_scales[p].grad is not None for p in PAIRS)
    assert not model.clip.logit_scale.requires_grad  # open_clip's own scale stays out
    model.freeze(image=True, text=True)
    trainable = {id(p) for p in model.trainable_parameters()}
    assert not trainable & {id(p) for p in model.part_parameters("text")}
    assert {id(p) for p in model.part_parameters("audio")} <= trainable
    names = {n for part in ("audio", "image", "text") for n, _ in model.named_part_parameters(part)}
    assert names | {f"log_logit_scales.{p}" for p in PAIRS} | {"clip.logit_scale"} == {
        n for n, _ in model.named_parameters()
    }


def test_image_transforms(tiny: BioVITAModel) -> None:
    from PIL import Image

    train_tf, eval_tf = tiny.image_transforms()
    im = Image.fromarray((np.random.default_rng(0).random((40, 56, 3)) * 255).astype("uint8"))
    assert train_tf(im).shape == eval_tf(im).shape == (3, 32, 32)
    assert torch.equal(eval_tf(im), eval_tf(im))
    assert not torch.equal(train_tf(im), train_tf(im))


def test_save_load_round_trip(tiny: BioVITAModel, tmp_path: Path) -> None:
    model = create_model("tiny")
    model.freeze(image=True, text=False)
    with torch.no_grad():
        model.log_logit_scales["audio_image"].fill_(2.0)
    save_model(model, tmp_path / "run", extra={"stage": 1})
    doc = json.loads((tmp_path / "run" / "config.json").read_text())
    assert doc["format"] == "biovita-model" and doc["towers"] == "tiny"
    assert doc["extra"] == {"stage": 1} and doc["frozen"] == ["image"]
    again = load_model(tmp_path / "run").eval()
    model.eval()
    wave = torch.randn(2, 3 * SR)
    tokens = model.tokenize(["a", "b"])
    with torch.no_grad():
        assert torch.equal(model.encode_audio(wave), again.encode_audio(wave))
        assert torch.equal(model.encode_text(tokens), again.encode_text(tokens))
    assert float(again.logit_scale("audio_image").detach()) == pytest.approx(math.exp(2.0))
    assert again.frozen == {"image"}


def test_unknown_specs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown tower spec"):
        create_towers("bioclip-2")
    with pytest.raises(ValueError, match="ORG/NAME"):
        create_towers("hf-hub:bioclip-2")
    with pytest.raises(FileNotFoundError):
        create_towers(f"local-dir:{tmp_path / 'absent'}")
    with pytest.raises(FileNotFoundError, match=r"open_clip_config\.json"):
        create_towers(f"local-dir:{tmp_path}")


# ---- tiny real-layout folders ---------------------------------------------------------------


def _reference_audio(clap: ClapModel, adapter: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        x = clap.audio_projection(clap.audio_model(input_features=mel).pooler_output)
        return torch.nn.functional.normalize(x @ adapter.T, dim=-1)


def test_local_dir_with_clap_folder(tmp_path: Path) -> None:
    clip = open_clip_folder(tmp_path / "bioclip")
    clap = tiny_clap(3)
    clap.save_pretrained(tmp_path / "bioclip" / "clap")
    with pytest.raises(ValueError, match="mel bins"):  # the default front end has 64 mel bins
        create_towers(f"local-dir:{tmp_path / 'bioclip'}")
    towers = create_towers(f"local-dir:{tmp_path / 'bioclip'}", audio="tiny")
    assert set(towers.sources) == {"open_clip", "audio"}
    assert towers.preprocess_cfg["mean"] == [0.5] * 3
    model = BioVITAModel(towers).eval()
    mel = torch.randn(2, 1, 100, read_config("tiny")["audio"]["num_mel_bins"]) * 10 - 40
    with torch.no_grad():
        ours = model.audio(input_features=mel).audio_embeds
        ref = clap.audio_projection(clap.audio_model(input_features=mel).pooler_output)
        pixels = torch.randn(2, 3, 32, 32)
        assert torch.allclose(model.encode_image(pixels), clip.encode_image(pixels, normalize=True))
    assert torch.allclose(ours, ref, atol=1e-6)
    (tmp_path / "bioclip" / "open_clip_pytorch_model.bin").unlink()
    with pytest.raises(FileNotFoundError, match="no open_clip weights"):
        create_towers(f"local-dir:{tmp_path / 'bioclip'}", audio="tiny")
    arch = create_towers(f"local-dir:{tmp_path / 'bioclip'}", audio="tiny", load_weights=False)
    assert arch.sources == {}


def test_import_official_round_trip(tmp_path: Path) -> None:
    clip = open_clip_folder(tmp_path / "bioclip", seed=5)
    clap = tiny_clap(7)
    adapter = torch.nn.Linear(64, 64, bias=False)
    state = {"clap_audio": clap.state_dict(), "audio_adapter": adapter.state_dict()}
    torch.save(state, tmp_path / "clap_weights.pth")
    model = import_official(tmp_path / "clap_weights.pth", tmp_path / "bioclip", audio="tiny")
    model.eval()
    wave = torch.randn(3, 10 * SR) * 0.1
    mel = model.audio_features(wave)
    tokens = model.tokenize(["Turdus merula", "Parus major", "Aves"])
    pixels = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(
            model.encode_audio(wave), _reference_audio(clap, adapter.weight, mel), atol=1e-6
        )
        assert torch.allclose(model.encode_text(tokens), clip.encode_text(tokens, normalize=True))
        assert torch.allclose(model.encode_image(pixels), clip.encode_image(pixels, normalize=True))
    # a run references the folder's frozen towers; with embed_towers it stands alone
    save_model(model, tmp_path / "run")
    save_model(model, tmp_path / "whole", embed_towers=True)
    assert not any(k.startswith("clip.") for k in torch.load(tmp_path / "run" / "model.pt"))
    for p in (tmp_path / "bioclip").iterdir():
        p.unlink()
    with pytest.raises(FileNotFoundError, match="referenced tower weights"):
        load_model(tmp_path / "run")
    again = load_model(tmp_path / "whole").eval()
    with torch.no_grad():
        assert torch.equal(again.encode_audio(wave), model.encode_audio(wave))
        assert torch.equal(again.encode_text(tokens), model.encode_text(tokens))
    # a bare adapter tensor is accepted; a wrong shape or a missing key is not
    torch.save({**state, "audio_adapter": adapter.weight}, tmp_path / "bare.pth")
    open_clip_folder(tmp_path / "bioclip", seed=5)
    import_official(tmp_path / "bare.pth", tmp_path / "bioclip", audio="tiny")
    torch.save({**state, "audio_adapter": torch.zeros(64, 32)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="audio_adapter"):
        import_official(tmp_path / "bad.pth", tmp_path / "bioclip", audio="tiny")
    torch.save({"clap_audio": state["clap_audio"]}, tmp_path / "half.pth")
    with pytest.raises(ValueError, match="audio_adapter"):
        import_official(tmp_path / "half.pth", tmp_path / "bioclip", audio="tiny")


# ---- audio front end ------------------------------------------------------------------------


def _signals(rng: np.random.Generator) -> list[np.ndarray]:
    t = np.arange(12 * SR) / SR
    tone = 0.3 * np.sin(2 * np.pi * (800 + 600 * t) * t) + 0.02 * rng.standard_normal(t.size)
    return [
        tone[: 10 * SR].astype(np.float32),  # exactly 10 s
        (0.1 * rng.standard_normal(150_000)).astype(np.float32),  # 3.1 s: repeat-padded
        (0.05 * rng.standard_normal(7 * SR)).astype(np.float32),
    ]


def test_frontend_matches_clap_feature_extractor() -> None:
    cfg = FrontendConfig.from_dict(read_config("htsat-unfused")["frontend"])
    assert (cfg.n_mels, cfg.n_fft, cfg.hop_length, cfg.f_min, cfg.f_max) == (
        64,
        1024,
        480,
        50,
        14e3,
    )
    extractor = ClapFeatureExtractor(**cfg.extractor_kwargs())
    waves = _signals(np.random.default_rng(0))
    ref = extractor(waves, sampling_rate=SR, return_tensors="np")["input_features"]
    assert ref.shape == (3, 1, 1001, 64)
    batch = torch.zeros(3, 10 * SR)
    lengths = torch.tensor([w.size for w in waves])
    for i, w in enumerate(waves):
        batch[i, : w.size] = torch.from_numpy(w)
    ours = AudioFrontend(cfg)(batch, lengths).numpy()
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=2e-3, rtol=0)
    # a longer clip cropped at its start equals the extractor on those first 10 s
    long = np.concatenate([waves[0], waves[2]])
    ours_long = AudioFrontend(cfg)(torch.from_numpy(long)[None], crop="start").numpy()
    ref_long = extractor([waves[0]], sampling_rate=SR, return_tensors="np")["input_features"]
    np.testing.assert_allclose(ours_long, ref_long, atol=2e-3, rtol=0)


def test_frontend_limits_and_config() -> None:
    tiny = read_config("tiny")
    tiny_cfg = FrontendConfig.from_dict(tiny["frontend"])
    real = read_config("htsat-unfused")
    bins = tiny["audio"]["num_mel_bins"]
    assert tiny_cfg.n_mels == bins
    # the species' call modulation (3-20 Hz) needs frames shorter than 50 ms, within HTS-AT's limit
    assert tiny_cfg.hop_length / tiny_cfg.sample_rate <= 0.05
    assert tiny_cfg.n_frames <= max_frames(64, bins)
    check_frontend(tiny_cfg, 64, bins)
    check_frontend(FrontendConfig.from_dict(real["frontend"]), 256, 64)
    with pytest.raises(ValueError, match="at most"):
        check_frontend(FrontendConfig(n_mels=32, hop_length=480), 64, 32)
    with pytest.raises(ValueError, match="mel bins"):
        check_frontend(tiny_cfg, 64, 64)
    with pytest.raises(ValueError, match="at most"):  # 16 bins allow 256 frames, 32 only 128
        check_frontend(FrontendConfig(n_mels=32, hop_length=1920), 64, 32)
    with pytest.raises(ValueError, match="integer"):
        FrontendConfig(max_length_s=10.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown"):
        FrontendConfig.from_dict({"hop": 1})
    out = AudioFrontend(tiny_cfg)(torch.randn(2, 3 * SR))
    assert out.shape == (2, 1, tiny_cfg.n_frames, bins) and torch.isfinite(out).all()


def test_fit_length_and_crops() -> None:
    wave = torch.arange(1, 11, dtype=torch.float32).repeat(2, 1)  # 10 samples
    lengths = torch.tensor([10, 3])
    rp = fit_length(wave, 8, lengths=lengths, short_clip="repeatpad")
    assert rp[0].tolist() == list(range(1, 9))
    assert rp[1].tolist() == [1, 2, 3, 1, 2, 3, 0, 0]
    assert fit_length(wave, 8, lengths=lengths, short_clip="repeat")[1].tolist() == [
        1,
        2,
        3,
    ] * 2 + [
        1,
        2,
    ]
    assert fit_length(wave, 8, lengths=lengths, short_clip="pad")[1].tolist() == [1, 2, 3] + [0] * 5
    g = torch.Generator().manual_seed(0)
    starts = set()
    for _ in range(30):
        r = fit_length(wave[:1], 4, crop="random", generator=g)[0]
        assert r.tolist() == list(range(int(r[0]), int(r[0]) + 4))
        starts.add(int(r[0]))
    assert starts == set(range(1, 8))
    # onset: 0.2 s before the first sample above 1 % of the peak
    sig = torch.zeros(2, 3 * SR)
    sig[0, SR : SR + 100] = 1.0
    sig[1, 10] = 0.5
    cropped = fit_length(sig, 2 * SR, crop="onset")
    assert float(cropped[0, round(0.2 * SR)]) == 1.0
    with pytest.raises(ValueError):
        fit_length(wave, 8, lengths=torch.tensor([11, 3]))


def test_augment_mel() -> None:
    mel = torch.randn(4, 1, 50, 8)
    g = torch.Generator().manual_seed(0)
    shifted = augment_mel(mel, gain_db=3.0, max_mask=0.0, generator=g)
    gain = (shifted - mel).flatten(1)
    assert torch.allclose(gain, gain[:, :1].expand_as(gain), atol=1e-5)  # one gain per clip
    assert (gain.abs() <= 3.0 + 1e-5).all() and gain[:, 0].unique().numel() == 4
    out = augment_mel(mel, gain_db=0.0, max_mask=0.2, generator=g)
    changed = (out != mel).any(dim=3)[:, 0]  # (clips, frames) that were masked
    assert int(changed.sum()) > 0 and (changed.sum(dim=1) <= 10).all()


# ---- losses ---------------------------------------------------------------------------------


def _reference_info_nce(a: torch.Tensor, b: torch.Tensor, scale: float) -> float:
    a64, b64 = a.double(), b.double()
    n = a.shape[0]
    total = 0.0
    for x, y in ((a64, b64), (b64, a64)):
        for i in range(n):
            logits = [scale * float(x[i] @ y[j]) for j in range(n)]
            m = max(logits)
            lse = m + math.log(sum(math.exp(v - m) for v in logits))
            total += (lse - logits[i]) / n
    return total / 2


def test_info_nce_matches_reference() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(7, 5, generator=g), dim=-1)
    b = torch.nn.functional.normalize(torch.randn(7, 5, generator=g), dim=-1)
    for scale in (1.0, 1 / 0.07):
        assert float(info_nce(a, b, scale)) == pytest.approx(_reference_info_nce(a, b, scale), 1e-5)
    # aligned pairs score lower than shuffled ones
    assert float(info_nce(a, a, 10.0)) < float(info_nce(a, b, 10.0))
    with pytest.raises(ValueError):
        info_nce(a, b[:3], 1.0)
    out = {"audio": a, "text": b, "image": a.flip(0)} | {
        f"scale_{p}": torch.tensor(10.0) for p in PAIRS
    }
    total, parts = stage2_loss(out, 0.25)
    assert float(parts["atc"]) == pytest.approx(float(stage1_loss(out)))
    assert float(total) == pytest.approx(
        float(parts["atc"]) + 0.25 * (float(parts["aic"]) + float(parts["itc"])), 1e-6
    )


def test_lambda_ramp() -> None:
    assert lambda_ramp(0, 100) == 0.0
    assert lambda_ramp(50, 100) == pytest.approx(0.05)
    assert lambda_ramp(100, 100) == pytest.approx(0.1)
    assert lambda_ramp(500, 100) == pytest.approx(0.1)
    assert lambda_ramp(25, 100, lam_max=1.0) == pytest.approx(0.25)
    assert lambda_ramp(3, 0) == pytest.approx(0.1)
    steps = [lambda_ramp(s, 10) for s in range(12)]
    assert steps == sorted(steps)


_GLOO_WORKER = """
import sys, torch, torch.distributed as dist
from biovita_model.losses import info_nce
rank, world, store, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
g = torch.Generator().manual_seed(0)
a_all = torch.nn.functional.normalize(torch.randn(8, 6, generator=g), dim=-1)
b_all = torch.nn.functional.normalize(torch.randn(8, 6, generator=g), dim=-1)
n = 8 // world
a = a_all[rank * n : (rank + 1) * n].clone().requires_grad_(True)
b = b_all[rank * n : (rank + 1) * n].clone().requires_grad_(True)
loss = info_nce(a, b, 5.0)
loss.backward()
torch.save({"loss": loss.detach(), "a": a.grad, "b": b.grad}, f"{out}/{rank}.pt")
dist.barrier()  # leave together: a rank torn down while its peer is in a collective aborts
# and leave without Gloo's teardown: its threads, destroyed at exit, now and then abort the
# process ("terminate called without an active exception"; pytorch/pytorch#179291) after the
# results are saved, which says nothing about info_nce
import os
os._exit(0)
"""


def test_info_nce_gathers_across_ranks(tmp_path: Path) -> None:
    world = 2
    args = [str(world), str(tmp_path / "store"), str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    procs = [
        subprocess.Popen([sys.executable, "-c", _GLOO_WORKER, str(r), *args], env=env)
        for r in range(world)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0] * world
    g = torch.Generator().manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(8, 6, generator=g), dim=-1).requires_grad_(True)
    b = torch.nn.functional.normalize(torch.randn(8, 6, generator=g), dim=-1).requires_grad_(True)
    full = info_nce(a, b, 5.0)
    full.backward()
    parts = [torch.load(tmp_path / f"{r}.pt") for r in range(world)]
    assert float(sum(p["loss"] for p in parts)) / world == pytest.approx(float(full.detach()), 1e-5)
    # DDP averages gradients over ranks: each rank holds world x the global loss's gradient
    got_a = torch.cat([p["a"] for p in parts]) / world
    got_b = torch.cat([p["b"] for p in parts]) / world
    assert torch.allclose(got_a, a.grad, atol=1e-6) and torch.allclose(got_b, b.grad, atol=1e-6)


# ---- bench scoring --------------------------------------------------------------------------


def _world(out: Path) -> Path:
    """Synthetic manifests: 2 classes x 2 families x 2 genera x 3 species, uneven media counts;
    every 5th species unseen; some species without a common name."""
    species, media = [], []
    i = 0
    for c in range(2):
        for f in range(2):
            for g in range(2):
                genus = f"Gen{c}{f}{g}"
                for s in range(3):
                    sid, name = 500 + i, f"{genus} sp{s}"
                    unseen = i % 5 == 4
                    species.append(
                        {
                            "species_id": sid,
                            "scientific_name": name,
                            "species": name,
                            "common_name": None if i % 7 == 3 else f"Common {i}",
                            "kingdom": "Animalia",
                            "class": f"Class{c}",
                            "order": f"Ord{c}",
                            "family": f"Fam{c}{f}idae",
                            "genus": genus,
                            "split_group": "unseen" if unseen else "seen",
                        }
                    )
                    counts = {"audio": 1 + i % 3, "image": 1 + (i * 5) % 7}
                    for modality, n_test in counts.items():
                        splits = ["unseen"] * n_test if unseen else ["test"] * n_test + ["train"]
                        for j, split in enumerate(splits):
                            media.append(
                                {
                                    "source": "xeno-canto",
                                    "record_id": f"{modality}{sid}-{j}",
                                    "modality": modality,
                                    "species_id": sid,
                                    "scientific_name": name,
                                    "match_kind": "exact",
                                    "file_format": "mp3" if modality == "audio" else "jpeg",
                                    "split": split,
                                }
                            )
                    i += 1
    write_table(pa.Table.from_pylist(species, schema=SPECIES), layout.species_path(out))
    for modality in ("audio", "image"):
        rows = [r for r in media if r["modality"] == modality]
        write_table(
            pa.Table.from_pylist(rows, schema=MEDIA), layout.media_manifest_path(out, modality)
        )
    return out


@pytest.fixture(scope="module")
def bench_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two builds: all candidates (fewer than 100 available), and 5 candidates per query."""
    out = _world(tmp_path_factory.mktemp("bench"))
    for name, kwargs in (("all", {}), ("few", {"candidates": 5})):
        dst = out / name
        (dst / "manifests").mkdir(parents=True)
        for p in (out / "manifests").iterdir():
            (dst / "manifests" / p.name).write_bytes(p.read_bytes())
        build_bench(dst, max_images=4, max_clips=2, **kwargs)
    return out


def _embeddings(bench_dir: Path, kind: str, seed: int) -> ev.BenchEmbeddings:
    """Random embeddings per index id; `discrete` draws from 3 exact unit vectors (many ties)."""
    rng = np.random.default_rng(seed)
    sizes = {
        m: pl.read_parquet(bench_dir / "ids" / f"{m}_index.parquet").height
        for m in ("audio", "image", "text")
    }

    def draw(n: int) -> np.ndarray:
        if kind == "discrete":
            basis = np.array([[1, 0, 0, 0], [0.5, 0.5, 0.5, 0.5], [0, 0, 1, 0]], np.float32)
            return basis[rng.integers(0, 3, n)]
        return rng.standard_normal((n, 12)).astype(np.float32) * rng.uniform(0.5, 2.0, (n, 1))

    text = {c: torch.from_numpy(draw(sizes["text"])) for c in ev.TEXT_COLUMNS}
    return ev.BenchEmbeddings(
        audio=torch.from_numpy(draw(sizes["audio"])), image=draw(sizes["image"]), text=text
    )


def _reference(bench_dir: Path, emb: ev.BenchEmbeddings, subset: str) -> dict:
    """A straightforward per-query implementation of the bench's scoring."""
    tasks = pl.read_parquet(tasks_parquet_path(bench_dir))

    def unit(x) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    results, common = {}, {}
    variants = [("main", None), ("common", ev.COMMON)]
    for variant, text_col in variants:
        for row in tasks.iter_rows(named=True):
            level, code = row["taxon_level"], row["task"]
            task = TASK_BY_CODE[code]
            if variant == "common" and not (
                level == "species" and "text" in (task.query, task.target)
            ):
                continue
            col = text_col or level
            mats = {"audio": unit(emb.audio), "image": unit(emb.image), "text": unit(emb.text[col])}
            q = mats[task.query][row["query_payload_id"]]
            scores = [
                max(float(q @ mats[task.target][i]) for i in group)
                for group in row["candidates_target_ids"]
            ]
            right = scores[row["candidates_taxa"].index(row["correct_taxon"])]
            rank = 1 + sum(s > right for s in scores)
            tied = sum(s == right for s in scores) - 1
            key = f"{subset}/{level}/{code}"
            bucket = (results if variant == "main" else common).setdefault(key, [])
            bucket.append((rank, tied, row["taxon_class"] or "unknown", len(scores)))

    def hit(rank: int, tied: int, k: int) -> float:
        """P(rank <= k) with the tied candidates in a random order."""
        return min(max(k - (rank - 1), 0), tied + 1) / (tied + 1)

    def tops(rows: list, n_cand: int) -> dict:
        return {
            f"top{k}": None
            if k >= n_cand
            else float(np.mean(np.array([hit(r[0], r[1], k) for r in rows])))
            for k in (1, 5, 10)
        }

    def entries(d: dict) -> tuple[dict, dict]:
        res, pc = {}, {}
        for key, rows in d.items():
            n_cand = max(r[3] for r in rows)
            res[key] = tops(rows, n_cand) | {
                "n_queries": len(rows),
                "n_candidates": n_cand,
                "n_tied": sum(r[1] > 0 for r in rows),
            }
            classes = {}
            for r in rows:
                classes.setdefault(r[2], []).append(r)
            pc[key] = {c: tops(v, n_cand) | {"n_queries": len(v)} for c, v in classes.items()}
        return res, pc

    main = entries(results)
    com = entries(common)
    return {
        "results": main[0],
        "per_class": main[1],
        "common": {"results": com[0], "per_class": com[1]},
    }


@pytest.mark.filterwarnings("ignore:.*tie with another candidate:UserWarning")
@pytest.mark.parametrize("method", ["grouped", "dense"])
@pytest.mark.parametrize("build", ["all", "few"])
@pytest.mark.parametrize("kind", ["continuous", "discrete"])
def test_evaluate_equals_per_query_reference(
    bench_out: Path, build: str, kind: str, method: str
) -> None:
    bench_dir = layout.bench_dir(bench_out / build, "seen")
    emb = _embeddings(bench_dir, kind, seed=1)
    report = ev.evaluate_bench(bench_dir, emb, method=method)
    ref = _reference(bench_dir, emb, "seen")
    assert report["results"] == ref["results"]
    assert report["per_class"] == ref["per_class"]
    assert report[ev.COMMON]["results"] == ref["common"]["results"]
    assert report[ev.COMMON]["per_class"] == ref["common"]["per_class"]
    text_dirs = ("A2T", "T2A", "I2T", "T2I")
    assert set(report["results"]) == {f"seen/{lv}/{t.code}" for lv in LEVELS for t in TASKS}
    assert all(report["results"][f"seen/{lv}/{c}"]["n_queries"] for lv in LEVELS for c in text_dirs)
    assert set(report[ev.COMMON]["results"]) == {f"seen/species/{c}" for c in text_dirs}
    entry = report["results"]["seen/species/A2I"]
    assert entry["n_candidates"] < 100 and (build == "all" or entry["n_candidates"] == 5)
    if kind == "discrete":
        assert sum(e["n_tied"] for e in report["results"].values()) > 0
    else:  # no ties: the plain rule (rank <= k), exactly as before ties counted in expectation
        assert all(e["n_tied"] == 0 for e in report["results"].values())
        optimistic = _reference_optimistic(bench_dir, emb)
        for key, entry in report["results"].items():
            tops = {k: v for k, v in entry.items() if k.startswith("top") and v is not None}
            assert tops == {k: optimistic[key][k] for k in tops}, key
    summary = report["summary"]["seen/species"]
    species = [v for k, v in report["results"].items() if k.startswith("seen/species/")]
    assert summary["top1"] == pytest.approx(np.mean([e["top1"] for e in species]))
    assert summary["n_tasks"] == len(species)


def _reference_optimistic(bench_dir: Path, emb: ev.BenchEmbeddings) -> dict:
    """Top-k by the old rule: rank = 1 + the candidates scoring strictly higher."""
    tasks = pl.read_parquet(tasks_parquet_path(bench_dir))
    unit = {
        m: torch.nn.functional.normalize(torch.as_tensor(getattr(emb, m)).double(), dim=-1)
        for m in ("audio", "image")
    }
    ranks: dict[str, list[int]] = {}
    for row in tasks.iter_rows(named=True):
        level, task = row["taxon_level"], TASK_BY_CODE[row["task"]]
        mats = {**unit, "text": torch.nn.functional.normalize(
            torch.as_tensor(emb.text[level]).double(), dim=-1)}  # fmt: skip
        q = mats[task.query][row["query_payload_id"]]
        scores = [float((mats[task.target][g] @ q).max()) for g in row["candidates_target_ids"]]
        right = scores[row["candidates_taxa"].index(row["correct_taxon"])]
        key = f"seen/{level}/{task.code}"
        ranks.setdefault(key, []).append(1 + sum(x > right for x in scores))
    return {
        key: {f"top{k}": float((np.array(r) <= k).mean()) for k in (1, 5, 10)}
        for key, r in ranks.items()
    }


@pytest.mark.parametrize("method", ["grouped", "dense"])
def test_collapsed_model_scores_chance(bench_out: Path, method: str) -> None:
    """All embeddings equal: every candidate ties, so Top-k is k / candidates, not 100 %."""
    bench_dir = layout.bench_dir(bench_out / "all", "seen")
    bench = load_bench(bench_dir)
    one = lambda n: np.tile(np.eye(8, dtype=np.float32)[0], (n, 1))  # noqa: E731
    emb = ev.BenchEmbeddings(
        audio=one(bench.audio_index.height),
        image=one(bench.image_index.height),
        text={c: one(bench.text_index.height) for c in ev.TEXT_COLUMNS},
    )
    with pytest.warns(UserWarning, match="tie"):
        report = ev.evaluate_bench(bench_dir, emb, method=method)
    tasks = bench.tasks.with_columns(pl.col("candidates_taxa").list.len().alias("c"))
    for key, entry in report["results"].items():
        _, level, code = key.split("/")
        c = tasks.filter((pl.col("taxon_level") == level) & (pl.col("task") == code))["c"]
        assert entry["n_tied"] == entry["n_queries"]
        for k in (1, 5, 10):
            want = None if k >= c.max() else float((k / c).clip(upper_bound=1).mean())
            got = entry[f"top{k}"]
            assert got == want if want is None else got == pytest.approx(want, abs=1e-12), key
    assert report["warnings"] and all("tie" in w for w in report["warnings"])


def test_topk_ties_and_meaningless_k() -> None:
    """Hand-worked: ranks 1, 2, 1 with 1, 0, 2 tied others; 4 candidates."""
    ranks, tied = np.array([1, 2, 1]), np.array([1, 0, 2])
    # k=1: q0 wins half the orders of {correct, 1 tie}; q1 has one above; q2 one in three
    # k=2: q0 always within the top 2; q1 exactly 2nd; q2 2 of its 3 positions are <= 2
    got = ev.topk(ranks, tied, (1, 2, 3, 4, 10), n_candidates=4)
    assert got["top1"] == pytest.approx((1 / 2 + 0 + 1 / 3) / 3)
    assert got["top2"] == pytest.approx((1 + 1 + 2 / 3) / 3)
    assert got["top3"] == pytest.approx(1.0)
    assert got["top4"] is None and got["top10"] is None  # k >= candidates: not meaningful
    assert ev.topk(ranks, np.zeros(3, int), (1, 2), 4) == {"top1": 2 / 3, "top2": 1.0}


def test_bench_groups_vary_in_size(bench_out: Path) -> None:
    tasks = pl.read_parquet(tasks_parquet_path(layout.bench_dir(bench_out / "all", "seen")))
    sizes = tasks.filter(pl.col("task") == "A2I")["candidates_target_ids"].explode().list.len()
    assert sizes.n_unique() > 2


def test_csv_layout_gives_the_same_numbers(bench_out: Path) -> None:
    for subset in ("seen", "unseen"):
        bench_dir = layout.bench_dir(bench_out / "few", subset)
        emb = _embeddings(bench_dir, "continuous", seed=2)
        parquet = ev.evaluate_bench(bench_dir, emb, layout="parquet")
        csv = ev.evaluate_bench(bench_dir, emb, layout="csv")
        assert parquet == csv and parquet["results"]
        assert all(k.startswith(f"{subset}/") for k in parquet["results"])


def test_rank_queries_handmade() -> None:
    """Rows with different candidate counts and group sizes, an empty group, exact ties."""
    df = pl.DataFrame(
        {
            "task": ["A2I"] * 3,
            "taxon_level": ["species"] * 3,
            "query_payload_id": [0, 1, 2],
            "candidates_taxa": [["x", "y", "z"], ["y", "x"], ["x", "z", "w", "y"]],
            "candidates_target_ids": [[[0], [1, 2], [3]], [[1], [0, 3]], [[0], [], [2], [1, 3]]],
            "correct_taxon": ["x", "x", "y"],
            "taxon_class": ["A", None, "A"],
        },
        schema=TASK_DTYPES,
    )
    index = ev.task_index(df)
    assert index.targets.shape == (3, 4, 2)
    assert index.correct.tolist() == [0, 1, 3] and index.n_candidates.tolist() == [3, 2, 4]
    assert index.classes.tolist() == ["A", "unknown", "A"]
    e = torch.eye(4)
    targets = torch.stack([e[0], e[1], e[0], e[2]])  # items 0 and 2 identical
    queries = torch.stack([e[0], e[2], e[1]])
    ranks, tied = ev.rank_queries(queries, targets, index)
    # q0 (e0): x=[0]->1, y=[1,2]->1 (item 2 == e0), z=[3]->0: rank 1, one tie
    # q1 (e2): y=[1]->0, x=[0,3]->1: rank 1
    # q2 (e1): x=0, z=-inf, w=[2]->0, y=[1,3]->1: rank 1
    assert ranks.tolist() == [1, 1, 1] and tied.tolist() == [1, 0, 0]
    ranks, tied = ev.rank_queries(torch.stack([e[1], e[1], e[3]]), targets, index)
    assert ranks.tolist() == [2, 2, 1] and tied.tolist() == [1, 0, 2]  # empty z ties nothing
    # "x" has a different group in rows 0 and 1: only the dense path scores such a file
    with pytest.raises(ValueError, match="dense"):
        ev.rank_queries(queries, targets, index, method="grouped")
    dense = ev.rank_queries(torch.stack([e[1], e[1], e[3]]), targets, index, method="dense")
    assert dense[0].tolist() == [2, 2, 1]


def test_evaluate_checks_embedding_sizes(bench_out: Path) -> None:
    bench_dir = layout.bench_dir(bench_out / "few", "seen")
    emb = _embeddings(bench_dir, "continuous", seed=3)
    bad = ev.BenchEmbeddings(audio=emb.audio[:-1], image=emb.image, text=emb.text)
    with pytest.raises(ValueError, match="audio embeddings"):
        ev.evaluate_bench(bench_dir, bad)
    sci = ev.BenchEmbeddings(
        audio=emb.audio, image=emb.image, text={c: emb.text[c] for c in LEVELS}
    )
    assert ev.COMMON not in ev.evaluate_bench(bench_dir, sci)


def test_report_merge_json_and_plot(bench_out: Path, tmp_path: Path, tiny: BioVITAModel) -> None:
    reports = []
    for subset in ("seen", "unseen"):
        bench_dir = layout.bench_dir(bench_out / "few", subset)
        bench = load_bench(bench_dir)
        texts = text_strings(bench.text_index, ev.COMMON)
        species = bench.text_index.sort("id")["species"].to_list()
        common = bench.text_index.sort("id")["common_name"].to_list()
        assert texts == [c if c is not None else s for c, s in zip(common, species, strict=True)]
        text = bench_text_embeddings(tiny, bench)
        assert set(text) == set(ev.TEXT_COLUMNS)
        assert all(t.shape == (bench.text_index.height, 64) for t in text.values())
        sizes = {m: bench.index(m).height for m in ("audio", "image")}
        emb = ev.BenchEmbeddings(
            audio=torch.randn(sizes["audio"], 64), image=torch.randn(sizes["image"], 64), text=text
        )
        reports.append(ev.evaluate_bench(bench_dir, emb))
    merged = ev.merge_reports(reports)
    assert set(merged["summary"]) >= {"seen/species", "unseen/species"}
    for entry in merged["results"].values():
        tops = [entry[f"top{k}"] for k in (1, 5, 10) if k < entry["n_candidates"]]
        assert all(0.0 <= t <= 1.0 for t in tops) and tops == sorted(tops)
        assert all(entry[f"top{k}"] is None for k in (1, 5, 10) if k >= entry["n_candidates"])
    few = merged["results"]["seen/species/A2I"]
    assert few["n_candidates"] == 5 and few["top5"] is None and few["top10"] is None
    assert merged["summary"]["seen/species"]["top5"] is None
    console = Console(record=True, width=200)
    for table in eval_table(merged):
        console.print(table)
    assert "n/a" in console.export_text()
    path = ev.write_report(merged, tmp_path / "eval.json")
    assert json.loads(path.read_text()) == json.loads(json.dumps(merged))
    png = plot_results(merged, tmp_path / "eval.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_per_class_csv_with_meaningless_k(tmp_path: Path) -> None:
    """Per-class rows whose Top-10 is null (k >= candidates) before rows where it is a number."""
    from biovita_model.eval.run import write_per_class

    few = {f"c{i}": {"top1": 0.5, "top10": None, "n_queries": 2} for i in range(150)}
    many = {"z": {"top1": 0.25, "top10": 0.75, "n_queries": 4}}
    report = {"per_class": {"seen/genus/A2I": few, "seen/species/A2I": many}}
    df = pl.read_csv(write_per_class(report, tmp_path / "pc.csv"), infer_schema_length=None)
    assert df.height == 151 and df["top10"].null_count() == 150
    assert df.filter(pl.col("class") == "z")["top10"].to_list() == [0.75]


def test_plot_draws_chance_and_na(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """eval.png: a chance tick (k / candidates) over every bar, `n/a` where k >= candidates."""
    from matplotlib.axes import Axes

    ticks, texts = [], []
    draw_hlines, draw_text = Axes.hlines, Axes.text
    monkeypatch.setattr(
        Axes, "hlines", lambda ax, y, *a, **k: ticks.append(y) or draw_hlines(ax, y, *a, **k)
    )
    monkeypatch.setattr(
        Axes,
        "text",
        lambda ax, x, y, s, *a, **k: texts.append(s) or draw_text(ax, x, y, s, *a, **k),
    )
    results = {
        "seen/genus/A2I": {"top1": 0.5, "top5": None, "top10": None, "n_candidates": 4},
        "seen/species/I2A": {"top1": 0.1, "top5": 0.3, "top10": 0.4, "n_candidates": 100},
    }
    png = plot_results({"results": results}, tmp_path / "eval.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert sorted(ticks) == pytest.approx([1.0, 5.0, 10.0, 25.0])
    assert texts.count("n/a") == 2
