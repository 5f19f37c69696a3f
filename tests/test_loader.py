"""The training loader (biovita_data.loader) on small synthetic published folders, real media."""

from __future__ import annotations

import io
import pickle
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

torch = pytest.importorskip("torch")

from torch.utils.data import DataLoader  # noqa: E402

from biovita_data.core.vocab import TRAIT_COLUMNS  # noqa: E402
from biovita_data.loader import (  # noqa: E402
    TEMPLATES,
    BioVITADataset,
    SpeciesSampler,
    collate,
    decode_clip,
    onset_index,
    species_prompts,
    species_sampler,
)
from biovita_data.loader.index import RowReader  # noqa: E402
from biovita_data.sample.published_folder import (  # noqa: E402
    AudioSpec,
    call_signal,
    encode_audio,
    species_color,
    tone_hz,
    write_synthetic_folder,
)

N_SPECIES = 7  # label 6 is unseen
RATES = (22050, 44100, 48000)
FORMATS = ("mp3", "flac", "ogg", "wav")
N = 480_000


def _specs() -> list[AudioSpec]:
    specs = []
    for k in range(N_SPECIES - 1):
        for j in range(2 + k):  # species k has 2 + k training recordings
            specs.append(
                AudioSpec(
                    label=k,
                    split="train",
                    seconds=4.0 if j % 3 == 0 else 11.0 + 0.5 * j,
                    rate=RATES[(k + j) % 3],
                    channels=1 + (j % 2),
                    fmt=FORMATS[(k + j) % 4],
                    onset_s=0.5,
                )
            )
        specs.append(AudioSpec(k, "test", 12.0, 44100, 1, FORMATS[k % 4], onset_s=1.0))
    specs += [AudioSpec(N_SPECIES - 1, "unseen", 6.0, 44100, 2, "flac") for _ in range(2)]
    return specs


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("build") / "hf"
    return write_synthetic_folder(
        out,
        _specs(),
        n_species=N_SPECIES,
        n_unseen=1,
        images_per_species={"train": 3, "test": 1, "unseen": 2},
        rows_per_group=4,
        shards=2,
    )


@pytest.fixture(scope="module")
def train(folder: Path) -> BioVITADataset:
    return BioVITADataset.from_pretrained(folder, split="train", seed=7)


def _peak_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / rate)[int(np.argmax(spectrum))])


# -- audio front end ----------------------------------------------------------------------------


def test_item_shapes_and_dtypes(train: BioVITADataset) -> None:
    item = train[0]
    assert item["audio"].shape == (N,) and item["audio"].dtype == torch.float32
    assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, 40, 48)
    assert item["traits"].shape == (34,) and item["traits"].dtype == torch.float32
    assert item["traits_mask"].dtype == torch.bool
    assert isinstance(item["text"], str) and isinstance(item["label"], int)
    assert 0 < item["audio_length"] <= N


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3"])
def test_resampling_keeps_a_1khz_sine(fmt: str) -> None:
    rate = 22050
    x = 0.5 * np.sin(2 * np.pi * 1000.0 * np.arange(12 * rate) / rate)
    clip = decode_clip(encode_audio(x.astype(np.float32), rate, fmt), mode="random", u=0.5)
    assert clip.samples.shape == (N,) and clip.samples.dtype == np.float32
    assert clip.valid == N and clip.source_rate == rate
    assert abs(_peak_hz(clip.samples, 48_000) - 1000.0) < 1.0
    assert 0.45 < np.abs(clip.samples).max() < 0.55


def test_stereo_is_mixed_to_mono() -> None:
    rate = 48_000
    s = np.sin(2 * np.pi * 440.0 * np.arange(11 * rate) / rate)
    stereo = np.stack([0.6 * s, 0.2 * s], axis=1).astype(np.float32)
    clip = decode_clip(encode_audio(stereo, rate, "wav"), mode="start")
    assert clip.source_channels == 2 and clip.samples.ndim == 1
    np.testing.assert_allclose(clip.samples, 0.4 * s[:N], atol=1e-3)


def test_short_clip_is_zero_padded() -> None:
    x = call_signal(3, 4.0, 44100)
    clip = decode_clip(encode_audio(x, 44100, "flac"), mode="random", u=0.9)
    assert clip.start_s == 0.0
    assert abs(clip.valid - 4 * 48_000) <= 1
    assert np.all(clip.samples[clip.valid :] == 0.0)
    assert np.abs(clip.samples[clip.valid - 4800 : clip.valid]).max() > 0.4


@pytest.mark.parametrize("fmt", FORMATS)
def test_random_crop_is_in_bounds_and_matches_the_recording(fmt: str) -> None:
    rate, seconds = 44100, 23.0
    t = np.arange(round(seconds * rate)) / rate
    chirp = (0.5 * np.sin(2 * np.pi * (200 * t + 40 * t**2))).astype(np.float32)
    data = encode_audio(chirp, rate, fmt)
    full, _ = sf.read(io.BytesIO(data), dtype="float32")
    for u in (0.0, 0.37, 0.999):
        clip = decode_clip(data, mode="random", u=u, target_rate=rate)  # no resampling
        start = round(clip.start_s * rate)
        assert 0 <= start <= full.shape[0] - 10 * rate
        assert clip.valid == 10 * rate
        np.testing.assert_allclose(clip.samples, full[start : start + 10 * rate], atol=1e-4)


def test_random_crop_reads_only_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
    rate = 44100
    data = encode_audio(call_signal(1, 300.0, rate), rate, "flac")  # 5 minutes
    asked: list[int] = []
    read = sf.SoundFile.read

    def spy(self: sf.SoundFile, frames: int = -1, *args: object, **kwargs: object) -> np.ndarray:
        out = read(self, frames, *args, **kwargs)
        asked.append(out.shape[0])
        return out

    monkeypatch.setattr(sf.SoundFile, "read", spy)
    clip = decode_clip(data, mode="random", u=0.6)
    assert 100 < clip.start_s < 290
    assert sum(asked) == 10 * rate


def test_onset_aligned_crop_starts_0_2_s_before_the_onset() -> None:
    rate, onset_s = 44100, 3.0
    x = call_signal(2, 20.0, rate, onset_s=onset_s)
    x[round(8 * rate) : round(8.1 * rate)] *= 1.6  # the peak lies elsewhere: 0.8
    clip = decode_clip(encode_audio(x, rate, "flac"), mode="onset")
    assert abs(clip.start_s - (onset_s - 0.2)) <= 2 / rate
    first = onset_index(clip.samples)  # at 48 kHz, threshold 1 % of the crop's peak
    assert abs(first - round(0.2 * 48_000)) <= 24
    assert np.abs(clip.samples[: round(0.19 * 48_000)]).max() < 1e-3
    # an onset within the first 0.2 s clamps the start at 0
    early = decode_clip(
        encode_audio(call_signal(2, 12.0, rate, onset_s=0.1), rate, "wav"), mode="onset"
    )
    assert early.start_s == 0.0


def test_eval_mode_is_deterministic_and_onset_aligned(folder: Path) -> None:
    ds = BioVITADataset(folder, "test", mode="eval", seed=1)
    a, b = ds[(1, 0)], ds[(1, 5)]  # a FLAC clip: no codec pre-echo
    assert torch.equal(a["audio"], b["audio"]) and a["text"] == b["text"]
    first = onset_index(a["audio"].numpy())
    assert abs(first - round(0.2 * 48_000)) <= 24  # test clips start calling at 1.0 s


# -- text, traits, images -----------------------------------------------------------------------


def test_prompts_come_from_the_five_templates(folder: Path, train: BioVITADataset) -> None:
    sp = pq.read_table(folder / "species" / "train-00000-of-00001.parquet").to_pylist()
    row = sp[1]
    taxonomic = f"{row['class']} {row['order']} {row['family']} {row['genus']} {row['species']}"
    sci, common = row["scientific_name"], row["common_name"]
    assert species_prompts(common=common, scientific=sci, taxonomic=taxonomic) == (
        common,
        sci,
        taxonomic,
        f"{sci} with common name {common}",
        f"{taxonomic} with common name {common}",
    )
    assert train.species.prompts[1] == species_prompts(
        common=common, scientific=sci, taxonomic=taxonomic
    )
    assert len(TEMPLATES) == 5
    no_common = sp[6]  # common_name is null: only the templates without {common}
    assert no_common["common_name"] is None
    assert len(BioVITADataset(folder, "unseen").species.prompts[6]) == 2
    seen_templates: Counter[int] = Counter()
    for epoch in range(8):
        for i in range(len(train)):
            item = train[(i, epoch)]
            prompts = train.species.prompts[item["label"]]
            assert item["text"] in prompts
            seen_templates[prompts.index(item["text"])] += 1
    assert set(seen_templates) == set(range(5))


def test_traits_match_the_species_rows(folder: Path, train: BioVITADataset) -> None:
    rows = pq.read_table(folder / "species" / "train-00000-of-00001.parquet").to_pylist()
    by_label = {r["label"]: r for r in rows}
    for i in range(0, len(train), 3):
        item = train[i]
        row = by_label[item["label"]]
        assert item["species_id"] == row["species_id"]
        for j, column in enumerate(TRAIT_COLUMNS):
            value = item["traits"][j].item()
            if row[column] is None:
                assert np.isnan(value) and not item["traits_mask"][j]
            else:
                assert value == float(row[column]) and item["traits_mask"][j]


def test_image_text_and_audio_show_the_same_species(train: BioVITADataset) -> None:
    for i in range(len(train)):
        item = train[(i, 3)]
        k = item["label"]
        audio = item["audio"].numpy()[: item["audio_length"]]
        assert abs(_peak_hz(audio, 48_000) - tone_hz(k)) < 2.0
        color = item["image"].float().mean(dim=(1, 2)).numpy()
        assert np.abs(color - np.asarray(species_color(k))).max() < 12
        assert item["text"] in train.species.prompts[k]
        assert item["scientific_name"] == train.species.scientific_name[k]


def test_images_are_drawn_at_random_within_the_species(
    train: BioVITADataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert train._image is not None and train.image_index is not None
    picks: list[int] = []
    media = train._image.media
    monkeypatch.setattr(train._image, "media", lambda i: picks.append(i) or media(i))
    label = train[0]["label"]
    picks.clear()
    for epoch in range(12):
        train[(0, epoch)]
    assert len(train.images_of(label)) == 3
    assert {int(train.image_index.label[i]) for i in picks} == {label}
    assert len(set(picks)) > 1


def test_image_transform_and_missing_images(folder: Path) -> None:
    ds = BioVITADataset(folder, "train", image_transform=lambda img: img.size)
    assert ds[0]["image"] == (48, 40)
    no_images = BioVITADataset(folder, "unseen", image_split="test")  # test has no unseen species
    assert no_images[0]["image"] is None
    audio_only = BioVITADataset(folder, "train", with_image=False, with_text=False)
    assert "image" not in audio_only[0] and "text" not in audio_only[0]


# -- sampler ------------------------------------------------------------------------------------


def test_sampler_caps_per_species_and_covers_every_species(train: BioVITADataset) -> None:
    sampler = species_sampler(train, max_audio_per_species=3)
    have = Counter(train.labels.tolist())
    expected = {k: min(3, c) for k, c in have.items()}
    draws = []
    for epoch in range(4):
        sampler.set_epoch(epoch)
        keys = list(sampler)
        assert len(keys) == len(sampler) == sum(expected.values())
        assert all(e == epoch for _, e in keys)
        indices = [i for i, _ in keys]
        assert len(set(indices)) == len(indices)
        assert Counter(train.labels[indices].tolist()) == expected
        draws.append(indices)
    assert len({tuple(sorted(d)) for d in draws}) > 1  # the capped species vary by epoch
    assert sorted(species_sampler(train).epoch_indices(0).tolist()) == list(range(len(train)))


def test_sampler_shards_across_ranks(train: BioVITADataset) -> None:
    parts = [
        SpeciesSampler(train.labels, max_audio_per_species=2, seed=3, num_replicas=4, rank=r)
        for r in range(4)
    ]
    whole = SpeciesSampler(train.labels, max_audio_per_species=2, seed=3).epoch_indices(5)
    got = [p.epoch_indices(5) for p in parts]
    assert len({len(g) for g in got}) == 1 and all(len(g) == len(parts[0]) for g in got)
    assert set(np.concatenate(got).tolist()) == set(whole.tolist())


def test_row_group_window_keeps_the_draw_and_localises_reads(train: BioVITADataset) -> None:
    plain = species_sampler(train, max_audio_per_species=3)
    local = species_sampler(train, max_audio_per_species=3, row_group_window=2)
    drawn, windowed = plain.epoch_indices(4), local.epoch_indices(4)
    assert sorted(drawn.tolist()) == sorted(windowed.tolist())
    groups = train.row_groups[windowed]
    windows: list[set[int]] = []  # cut the sequence greedily into runs of 2 row groups
    for g in groups.tolist():
        if not windows or (g not in windows[-1] and len(windows[-1]) == 2):
            windows.append(set())
        windows[-1].add(g)
    assert sum(len(w) for w in windows) == len(np.unique(groups))  # no group comes back
    assert np.array_equal(windowed, local.epoch_indices(4))
    with pytest.warns(UserWarning, match="cache_row_groups"):
        species_sampler(train, row_group_window=8)


# -- workers and determinism --------------------------------------------------------------------


def _run(ds: BioVITADataset, epoch: int, workers: int) -> list[dict]:
    sampler = species_sampler(ds, max_audio_per_species=3)
    sampler.set_epoch(epoch)
    loader = DataLoader(ds, batch_size=4, sampler=sampler, num_workers=workers, collate_fn=collate)
    return list(loader)


def _same(a: list[dict], b: list[dict]) -> bool:
    for x, y in zip(a, b, strict=True):
        for key in x:
            if isinstance(x[key], torch.Tensor):
                if not torch.equal(x[key].nan_to_num(-9.0), y[key].nan_to_num(-9.0)):
                    return False
            elif x[key] != y[key]:
                return False
    return True


def test_deterministic_across_workers_runs_and_epochs(folder: Path, train: BioVITADataset) -> None:
    base = _run(train, 1, 0)
    assert base[0]["audio"].shape == (4, N) and base[0]["image"].shape == (4, 3, 40, 48)
    assert base[0]["label"].dtype == torch.int64 and isinstance(base[0]["text"], list)
    assert _same(base, _run(train, 1, 2))
    again = BioVITADataset.from_pretrained(folder, split="train", seed=7)
    assert _same(base, _run(again, 1, 2))
    other = _run(train, 2, 0)
    assert [b["index"].tolist() for b in base] != [b["index"].tolist() for b in other]
    # the same item is cropped elsewhere in another epoch
    long_item = next(i for i in range(len(train)) if train[i]["audio_length"] == N)
    assert not torch.equal(train[(long_item, 1)]["audio"], train[(long_item, 2)]["audio"])
    train.set_epoch(2)
    try:
        assert torch.equal(train[long_item]["audio"], train[(long_item, 2)]["audio"])
    finally:
        train.set_epoch(0)
    other_seed = BioVITADataset(folder, "train", seed=8, with_image=False)
    assert not torch.equal(other_seed[(long_item, 1)]["audio"], train[(long_item, 1)]["audio"])


def test_row_reader_reads_every_row_lazily_and_pickles_small(train: BioVITADataset) -> None:
    reader = RowReader(train.audio_index, ["audio"], cache_size=1, max_open=1)
    got = [reader.read(i)["audio"]["bytes"] for i in range(len(train))]
    want = [
        row["bytes"]
        for path in train.audio_index.files
        for row in pq.read_table(path, columns=["audio"]).column("audio").to_pylist()
    ]
    assert got == want
    assert [reader.media(i) for i in range(len(train))] == want
    assert len(reader._files) == 1 and len(reader._cache) <= 1
    paths = [
        row["path"]
        for path in train.audio_index.files
        for row in pq.read_table(path, columns=["audio"]).column("audio").to_pylist()
    ]
    assert [reader.read(i)["audio"] for i in range(len(train))] == [
        {"bytes": b, "path": p} for b, p in zip(want, paths, strict=True)
    ]
    clone = pickle.loads(pickle.dumps(reader))
    assert not clone._files and not clone._cache
    assert clone.read(len(train) - 1)["audio"]["bytes"] == want[-1]
    train[0]  # fill the dataset's own caches: they must not travel to workers
    assert len(pickle.dumps(train)) < 100_000


@pytest.mark.parametrize(
    "options",
    [
        {"compression": "none", "data_page_version": "2.0"},
        {"compression": "none", "data_page_size": 1000, "write_batch_size": 1},  # many pages
        {"compression": "zstd"},  # not stored plainly: decoded row groups instead
        {"compression": "none", "use_dictionary": True},
    ],
)
def test_row_reader_matches_pyarrow_on_any_layout(tmp_path: Path, options: dict) -> None:
    import pyarrow as pa

    from biovita_data.loader.index import build_index

    media = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    rows = [
        None if j == 5 else {"bytes": None if j == 2 else bytes([j]) * (j * 700), "path": f"p{j}"}
        for j in range(23)
    ]
    table = pa.table({"audio": pa.array(rows, type=media), "label": list(range(23))})
    path = tmp_path / "x.parquet"
    pq.write_table(table, path, row_group_size=7, **{"use_dictionary": False} | options)
    reader = RowReader(build_index([path]), ["audio"])
    assert [reader.read(i)["audio"] for i in range(23)] == rows
    assert [reader.media(i) for i in range(23)] == [r and r["bytes"] for r in rows]


# -- construction -------------------------------------------------------------------------------


def test_from_pretrained_resolves_a_build_folder_and_a_repo_id(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert BioVITADataset.from_pretrained(folder.parent, split="test").folder == folder
    calls = []

    def fake_snapshot_download(repo_id: str, **kwargs: object) -> str:
        calls.append((repo_id, kwargs))
        return str(folder)

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    ds = BioVITADataset.from_pretrained("someone/biovita", split="unseen", revision="v1")
    assert len(ds) == 2 and ds.split == "unseen"
    repo_id, kwargs = calls[0]
    assert repo_id == "someone/biovita" and kwargs["repo_type"] == "dataset"
    assert kwargs["revision"] == "v1" and "audio/unseen-*.parquet" in kwargs["allow_patterns"]
    with pytest.raises(FileNotFoundError):
        BioVITADataset.from_pretrained(folder / "nope", split="train")


def test_splits_index_every_row(folder: Path) -> None:
    sizes = {
        s: len(BioVITADataset(folder, s, with_image=False)) for s in ("train", "test", "unseen")
    }
    assert sizes == {"train": sum(2 + k for k in range(6)), "test": 6, "unseen": 2}
    with pytest.raises(IndexError):
        BioVITADataset(folder, "test", with_image=False)[6]


def test_collate_keeps_odd_sized_images_as_a_list() -> None:
    batch = [
        {"image": torch.zeros(3, 4, 5), "text": "a", "label": 1, "x": 0.5},
        {"image": torch.zeros(3, 6, 5), "text": "b", "label": 2, "x": 1.5},
    ]
    out = collate(batch)
    assert isinstance(out["image"], list) and out["text"] == ["a", "b"]
    assert out["label"].tolist() == [1, 2] and out["x"].dtype == torch.float32


def test_biovita_data_does_not_import_torch() -> None:
    code = (
        "import importlib, pkgutil, sys\n"
        "def walk(name):\n"  # not pkgutil.walk_packages: it imports every package, loader too
        "    try:\n"
        "        module = importlib.import_module(name)\n"
        "    except Exception:\n"
        "        return\n"
        "    for info in pkgutil.iter_modules(getattr(module, '__path__', [])):\n"
        "        if info.name != 'loader':\n"
        "            walk(name + '.' + info.name)\n"
        "walk('biovita_data')\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
