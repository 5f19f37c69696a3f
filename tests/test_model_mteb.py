"""The MTEB encoder adapter on a tiny local task in MTEB's batch format (audio, image, text
batches as MTEB's DataLoaders yield them), offline; the real mteb's protocol when installed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("open_clip")

from PIL import Image  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from biovita_model.cli import app  # noqa: E402
from biovita_model.embed import embed_texts  # noqa: E402
from biovita_model.model import create_model, save_model  # noqa: E402
from biovita_model.mteb_encoder import BioVITAEncoder  # noqa: E402

SR = 48_000


@pytest.fixture(scope="module")
def encoder() -> BioVITAEncoder:
    torch.manual_seed(0)
    return BioVITAEncoder("tiny-run", model=create_model("tiny"))


def tone(hz: float, seconds: float, rate: int = SR) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    x = np.sin(2 * np.pi * hz * t) * 0.5
    x[: rate // 2] = 0.0  # onset at 0.5 s
    return x.astype(np.float32)


def test_encodes_mteb_batches_as_the_model_does(encoder: BioVITAEncoder) -> None:
    model = encoder.model
    waves = [tone(600, 3.0), tone(1500, 12.0)]  # shorter and longer than the 10 s window
    audio = [{"audio": [{"array": w, "sampling_rate": SR} for w in waves]}]
    got = encoder.encode(audio, task_metadata=None, hf_split="test", hf_subset="unseen_species")
    assert got.shape == (2, model.embed_dim) and got.dtype == np.float32
    with torch.no_grad():
        want = [model.encode_audio(torch.from_numpy(w)[None], crop="onset")[0] for w in waves]
    assert np.allclose(got, torch.stack(want).numpy(), atol=1e-5)
    stereo = [{"audio": [{"array": np.stack([waves[0], waves[0]]), "sampling_rate": SR}]}]
    assert np.allclose(encoder.encode(stereo), got[:1], atol=1e-5)  # channels mixed to mono
    texts = ["Turdus merula", "Bufo bufo", "Canis lupus"]
    text = encoder.encode([{"text": texts[:2]}, {"text": texts[2:]}], prompt_type="document")
    with torch.no_grad():
        assert np.allclose(text, embed_texts(model, texts).numpy(), atol=1e-5)
    img = Image.new("RGB", (40, 36), (200, 30, 30))
    pixels = encoder.image_transform(img)[None]
    with torch.no_grad():
        want_img = model.encode_image(pixels).numpy()
    assert np.allclose(encoder.encode([{"image": [img]}]), want_img, atol=1e-5)
    # a retrieval in MTEB's shape: queries x corpus, cosine; pairwise = the diagonal
    sims = encoder.similarity(got, text[:2])
    assert sims.shape == (2, 2)
    assert torch.allclose(sims, torch.from_numpy(got @ text[:2].T), atol=1e-5)
    assert torch.allclose(encoder.similarity_pairwise(got, text[:2]), sims.diagonal(), atol=1e-5)
    assert encoder.encode([]).shape == (0, model.embed_dim)
    with pytest.raises(ValueError, match="one of"):
        encoder.encode([{"video": [1]}])


def test_the_run_follows_mtebs_encoder_protocol(encoder: BioVITAEncoder) -> None:
    pytest.importorskip("mteb")
    from mteb.models.models_protocols import EncoderProtocol

    assert isinstance(encoder, EncoderProtocol)
    assert encoder.mteb_model_meta.embed_dim == encoder.model.embed_dim


def test_cli_mteb_without_mteb_says_what_to_install(tmp_path: Path) -> None:
    if importlib.util.find_spec("mteb") is not None:
        pytest.skip("mteb is installed")
    torch.manual_seed(0)
    save_model(create_model("tiny"), tmp_path / "run")
    result = CliRunner().invoke(
        app, ["mteb", "--run", str(tmp_path / "run"), "--tasks", "BioVITAA2TReranking"]
    )
    assert result.exit_code == 2
    assert "mteb is not installed" in result.output
