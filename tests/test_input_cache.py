"""Training input caches: recordings' log-mels on disk, decoded photos in memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from biovita_data.loader import BioVITADataset, decode_whole  # noqa: E402
from biovita_data.sample.published_folder import AudioSpec, write_synthetic_folder  # noqa: E402
from biovita_model.audio_frontend import AudioFrontend, FrontendConfig  # noqa: E402
from biovita_model.training.data import AudioItems, SpeciesImages  # noqa: E402
from biovita_model.training.mel_cache import MelCache  # noqa: E402

# a coarse front end like the tiny towers' (2 s clips, so a 5 s recording is "long")
FE = FrontendConfig(sample_rate=16_000, max_length_s=2, n_fft=512, hop_length=400, n_mels=16,
                    f_min=50.0, f_max=7_000.0, short_clip="repeat")  # fmt: skip


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    specs = [
        AudioSpec(0, "train", 1.5, 22_050, 2, "flac", onset_s=0.1),  # shorter than a clip
        AudioSpec(1, "train", 5.0, 16_000, 1, "wav", onset_s=0.3, noise=0.05),  # longer
        AudioSpec(2, "train", 2.0, 16_000, 1, "wav"),  # exactly one clip
    ]
    return write_synthetic_folder(
        tmp_path_factory.mktemp("cache") / "hf", specs, n_species=3,
        images_per_species={"train": 2}, image_size=(48, 40),
    )  # fmt: skip


def _base(folder: Path) -> BioVITADataset:
    return BioVITADataset(folder, "train", with_image=False, sample_rate=16_000, clip_seconds=2.0)


def test_item_without_audio_is_the_item_less_its_audio(folder: Path) -> None:
    ds = _base(folder)
    for key in [(0, 0), (1, 3), (2, 7)]:
        full, meta = ds[key], ds.item(key, audio=False)
        assert "audio" not in meta and 0 <= meta["crop_u"] < 1
        assert meta["text"] == full["text"] and meta["label"] == full["label"]
        assert set(full) - set(meta) == {"audio", "audio_length"}


def test_decode_whole_keeps_every_sample(folder: Path) -> None:
    ds = _base(folder)
    wave = decode_whole(ds.audio_bytes(1), target_rate=16_000)
    assert wave.dtype == np.float32 and wave.shape == (80_000,)
    assert decode_whole(ds.audio_bytes(0), target_rate=16_000).shape == (24_000,)  # 22.05 kHz in


def test_cached_mels_match_the_decoded_items(folder: Path, tmp_path: Path) -> None:
    base = _base(folder)
    cache = MelCache(base, FE, workers=0, cache=tmp_path)
    assert cache.computed and cache.path.is_file()
    assert cache.nbytes == cache.frames.numel() * 2  # float16
    plain = AudioItems(base, FE, augment=False)
    cached = AudioItems(base, FE, mels=cache, augment=False)
    for index in (0, 2):  # no longer than a clip: the front end's own padding, exactly
        for epoch in (0, 5):
            a, b = plain[(index, epoch)], cached[(index, epoch)]
            assert b["mel"].shape == (1, FE.n_frames, FE.n_mels)
            assert b["text"] == a["text"] and b["label"] == a["label"]
            torch.testing.assert_close(b["mel"], a["mel"], atol=0.05, rtol=0)  # float16 storage
    # a longer recording: the crop in frames of its whole log-mel
    wave = torch.from_numpy(decode_whole(base.audio_bytes(1), target_rate=16_000))
    whole = AudioFrontend(FE).log_mel(wave[None])[0, 0]
    starts = set()
    for epoch in range(12):
        u = base.item((1, epoch), audio=False)["crop_u"]
        start = min(whole.shape[0] - FE.n_frames, int(u * (whole.shape[0] - FE.n_frames + 1)))
        starts.add(start)
        mel = cached[(1, epoch)]["mel"][0]
        torch.testing.assert_close(mel, whole[start : start + FE.n_frames], atol=0.05, rtol=0)
        # away from its edges, a frame equals the sample-domain crop's frame at the same time
        clip = wave[start * FE.hop_length : start * FE.hop_length + FE.max_samples]
        direct = AudioFrontend(FE)(clip[None])[0, 0]
        torch.testing.assert_close(mel[4:-4], direct[4:-4], atol=0.05, rtol=0)
    assert len(starts) > 3  # the random crop moves with the epoch


def test_the_cache_file_is_reused_and_keyed_by_front_end(folder: Path, tmp_path: Path) -> None:
    base = _base(folder)
    first = MelCache(base, FE, workers=0, cache=tmp_path)
    again = MelCache(base, FE, workers=0, cache=tmp_path)
    assert not again.computed and again.path == first.path
    assert torch.equal(again.frames, first.frames)
    other = FrontendConfig(**{**FE.to_dict(), "n_mels": 8})
    assert MelCache(base, other, workers=0, cache=tmp_path).path != first.path


def test_a_broken_recording_is_named(folder: Path, tmp_path: Path, monkeypatch) -> None:
    base = _base(folder)
    monkeypatch.setattr(BioVITADataset, "audio_bytes", lambda self, i: b"not audio")
    with pytest.raises(RuntimeError, match=r"audio item 0 .* split train for the mel cache"):
        MelCache(base, FE, workers=0, cache=tmp_path)


def test_cached_photos_give_the_same_items(folder: Path) -> None:
    from biovita_model.image_input import load_image

    calls = []

    def transform(img):
        calls.append(img.size)
        return torch.from_numpy(np.asarray(img, dtype=np.float32)).sum()

    transform.transforms = []  # input_size falls back to 224: decoded at full size here
    plain = SpeciesImages(folder, "train", transform)
    cached = SpeciesImages(folder, "train", transform, cache=True)
    for row in [0, 1, 0, 1, 3]:
        assert cached.load(row) == plain.load(row)
    assert len(cached._decoded) == 3  # each photo decoded once
    assert load_image(cached.reader.media(0), 224).size == calls[0]


def test_frozen_images_hold_the_towers_embedding_of_each_photo(folder: Path) -> None:
    from biovita_model.model import create_model
    from biovita_model.training.frozen_images import FrozenImages

    model = create_model("tiny")
    model.freeze(image=True, text=True, audio=False)
    model.train()  # a frozen tower stays in eval mode: its embedding of a photo is fixed
    _, eval_tf = model.image_transforms()
    images = SpeciesImages(folder, "train", eval_tf)
    frozen = FrozenImages(model, images, torch.device("cpu"), batch_size=4)
    assert len(frozen) == len(images.index) == 6
    with torch.no_grad():
        direct = model.encode_image(torch.stack([images.load(r) for r in range(6)]))
    rows = torch.tensor([5, 0, 5, 2])
    torch.testing.assert_close(frozen(rows), direct[rows], atol=1e-5, rtol=0)
    # AudioItems then hands out the row of its species' photo, the same pick as the pixels
    base = _base(folder)
    with_rows = AudioItems(base, FE, images=images, augment=False, photo_rows=True)
    with_pixels = AudioItems(base, FE, images=images, augment=False)
    for key in [(0, 0), (1, 4), (2, 9)]:
        row, pixels = with_rows[key]["image_row"], with_pixels[key]["image"]
        assert "image" not in with_rows[key] and base.labels[key[0]] == images.index.label[row]
        torch.testing.assert_close(images.load(row), pixels)
    model.freeze(image=False, text=True, audio=False)
    with pytest.raises(ValueError, match="frozen image tower"):
        FrozenImages(model, images, torch.device("cpu"))
