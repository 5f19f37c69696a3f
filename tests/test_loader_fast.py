"""The loader's hot path (issue 27): media values read in place, crops decoded into the batch."""

from __future__ import annotations

import gc
import os
import pickle
from multiprocessing.reduction import ForkingPickler
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

torch = pytest.importorskip("torch")

from torch.utils.data import DataLoader  # noqa: E402

from biovita_data.loader import BioVITADataset, collate, decode_clip  # noqa: E402
from biovita_data.loader import audio as la  # noqa: E402
from biovita_data.loader import dataset as ld  # noqa: E402
from biovita_data.loader import shared_batches as sb  # noqa: E402
from biovita_data.loader.index import (  # noqa: E402
    RowReader,
    build_index,
    index_rows,
    single_plain_value,
)
from biovita_data.publish.shards import (  # noqa: E402
    AUDIO_ROW_GROUP,
    MEDIA_GROUP_BYTES,
    MEDIA_ROW_GROUP,
    SplitWriter,
    parquet_options,
)
from biovita_data.sample.published_folder import (  # noqa: E402
    AudioSpec,
    call_signal,
    encode_audio,
    write_synthetic_folder,
)

N = 480_000
MEDIA = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def _rows(n: int) -> list[dict | None]:
    """Media structs of varied sizes, a null struct (5) and a null `bytes` (2)."""
    return [
        None
        if j == 5
        else {"bytes": None if j == 2 else bytes([j]) * (j * 700 + 1), "path": f"p{j}"}
        for j in range(n)
    ]


def _write(path: Path, rows: list, groups: list[int], **options: object) -> Path:
    """A Parquet file of `rows` (audio struct + label) cut into row groups of `groups` rows."""
    table = pa.table({"audio": pa.array(rows, type=MEDIA), "label": list(range(len(rows)))})
    opts = parquet_options(table.schema, "audio") | options
    with pq.ParquetWriter(path, table.schema, **opts) as writer:
        at = 0
        for n in groups:
            writer.write_table(table.slice(at, n), row_group_size=n)
            at += n
    return path


def _no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a row group was decoded")

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", refuse)


# -- reading a media value in place -------------------------------------------------------------


def test_index_rows_places_every_row_in_its_row_group(tmp_path: Path) -> None:
    rows = _rows(11)
    a = _write(tmp_path / "a.parquet", rows, [1, 3, 1, 2, 4])
    b = _write(tmp_path / "b.parquet", rows[:2], [2])
    index, meta = index_rows([a, b], ["audio"])
    assert index.file.tolist() == [0] * 11 + [1, 1]
    assert index.row_group.tolist() == [0, 1, 1, 1, 2, 3, 3, 4, 4, 4, 4, 0, 0]
    assert index.row.tolist() == [0, 0, 1, 2, 0, 0, 1, 0, 1, 2, 3, 0, 1]
    assert index.label.tolist() == [*range(11), 0, 1]
    assert meta.column("audio").to_pylist() == rows + rows[:2]


def test_a_lone_plain_value_is_a_view_of_the_mapped_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [r for r in _rows(9) if r is not None and r["bytes"] is not None]
    path = _write(tmp_path / "x.parquet", rows, [1] * len(rows))
    reader = RowReader(build_index([path]), ["audio"])
    _no_decoding(monkeypatch)
    views = [reader.media_view(i) for i in range(len(rows))]
    assert [bytes(v) for v in views] == [r["bytes"] for r in rows]
    assert all(v.readonly for v in views)
    assert reader.media(3) == rows[3]["bytes"]
    mapped = pa.py_buffer(reader._mapped(0))
    for v in views:  # inside the file's mapping: nothing was copied
        address = pa.py_buffer(v).address
        assert mapped.address <= address and address + v.nbytes <= mapped.address + mapped.size
    reader.close()
    assert bytes(views[-1]) == rows[-1]["bytes"]  # a view outlives the reader's mapping


@pytest.mark.parametrize(
    "options",
    [
        {},  # publish's options: the lone values are read in place, nulls through pyarrow
        {"data_page_version": "2.0"},
        {"compression": "zstd"},
        {"use_dictionary": True},
        {"column_encoding": {"audio.bytes": "DELTA_LENGTH_BYTE_ARRAY"}, "use_dictionary": False},
    ],
)
def test_one_row_groups_read_the_same_as_pyarrow_on_any_layout(
    tmp_path: Path, options: dict
) -> None:
    rows = _rows(9)
    path = _write(tmp_path / "x.parquet", rows, [1] * 9, **options)
    reader = RowReader(build_index([path]), ["audio"])
    assert [reader.media(i) for i in range(9)] == [r and r["bytes"] for r in rows]
    assert [reader.read(i)["audio"] for i in range(9)] == rows


def test_a_non_nullable_media_column_is_read_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    media = pa.struct([pa.field("bytes", pa.binary(), nullable=False), ("path", pa.string())])
    schema = pa.schema([pa.field("audio", media, nullable=False), ("label", pa.int64())])
    rows = [{"bytes": b"\x01\x02" * (50 + j), "path": None} for j in range(3)]
    table = pa.table({"audio": pa.array(rows, type=media), "label": [0, 1, 2]}, schema=schema)
    path = tmp_path / "x.parquet"
    pq.write_table(table, path, row_group_size=1, **parquet_options(schema, "audio"))
    assert pq.ParquetFile(path).schema.column(0).max_definition_level == 0
    reader = RowReader(build_index([path]), ["audio"])
    _no_decoding(monkeypatch)
    assert [reader.media(i) for i in range(3)] == [r["bytes"] for r in rows]


def test_single_plain_value_refuses_what_it_cannot_place() -> None:
    value = b"abcdef"
    levels = (2).to_bytes(4, "little") + b"\x02\x03"  # a 4-byte length, then the levels
    page = levels + len(value).to_bytes(4, "little") + value
    header = bytes([0x15, 0x00, 0x15, 2 * len(page), 0x15, 2 * len(page), 0x00])
    chunk = memoryview(header + page)
    got = single_plain_value(chunk, 2)
    assert got is not None and bytes(got) == value
    assert single_plain_value(chunk[:-1], 2) is None  # the value must end the page exactly
    v2 = bytes([0x15, 0x06]) + header[2:]  # page type 3: DATA_PAGE_V2
    assert single_plain_value(memoryview(v2 + page), 2) is None
    null = levels + b""  # levels only: a null value
    short = bytes([0x15, 0x00, 0x15, 2 * len(null), 0x15, 2 * len(null), 0x00]) + null
    assert single_plain_value(memoryview(short), 2) is None
    assert single_plain_value(memoryview(b"\x15\x80"), 2) is None  # a truncated varint
    assert single_plain_value(memoryview(b""), 0) is None


# -- publish's row groups -----------------------------------------------------------------------


def _media_table(column: str, sizes: list[int]) -> pa.Table:
    rows = [{"bytes": bytes(n), "path": f"{j}"} for j, n in enumerate(sizes)]
    return pa.table({column: pa.array(rows, type=MEDIA), "label": list(range(len(sizes)))})


def test_publish_gives_each_recording_its_own_row_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = _media_table("audio", [3000 + 500 * j for j in range(12)])
    writer = SplitWriter(
        tmp_path, "train", table.schema, 10**9, row_group_rows=AUDIO_ROW_GROUP, media_column="audio"
    )
    writer.write(table.slice(0, 5))
    writer.write(table.slice(5))
    (path,) = writer.close()
    meta = pq.ParquetFile(path).metadata
    assert [meta.row_group(g).num_rows for g in range(meta.num_row_groups)] == [1] * 12
    reader = RowReader(build_index([path]), ["audio"])
    _no_decoding(monkeypatch)  # the loader reads every recording in place
    assert [reader.media(i) for i in range(12)] == [r["bytes"] for r in table["audio"].to_pylist()]


def test_a_photo_row_group_closes_at_its_bytes_row_by_row(tmp_path: Path) -> None:
    quarter = MEDIA_GROUP_BYTES // 4
    sizes = [quarter] * 10 + [10] * 150  # one batch: 4 photos fill a group, then 100 rows do
    table = _media_table("image", sizes)
    writer = SplitWriter(
        tmp_path,
        "train",
        table.schema,
        10**10,
        row_group_rows=MEDIA_ROW_GROUP,
        media_column="image",
    )
    writer.write(table)
    (path,) = writer.close()
    meta = pq.ParquetFile(path).metadata
    groups = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
    assert groups == [4, 4, 100, 52]
    assert pq.read_table(path).column("label").to_pylist() == list(range(160))


# -- decoding into the batch --------------------------------------------------------------------


@pytest.mark.parametrize("short_clip", la.SHORT_CLIPS)
@pytest.mark.parametrize("k", [0, 1, 3, 7, 8, 11])
def test_fill_short_into_a_buffer_matches_a_fresh_array(short_clip: str, k: int) -> None:
    x = np.arange(1, k + 1, dtype=np.float32)
    out = np.full(8, np.nan, dtype=np.float32)
    got = la.fill_short(x, 8, short_clip, out=out)
    assert got is out
    np.testing.assert_array_equal(out, la.fill_short(x, 8, short_clip))


@pytest.mark.parametrize(
    ("fmt", "seconds", "mode", "short_clip"),
    [
        ("flac", 23.0, "random", "pad"),
        ("mp3", 23.0, "random", "pad"),  # CBR: cropped through FFmpeg where torchcodec loads
        ("wav", 4.0, "random", "repeat"),
        ("ogg", 4.0, "onset", "repeatpad"),
    ],
)
def test_decode_clip_from_a_view_into_a_buffer_is_the_same_crop(
    fmt: str, seconds: float, mode: la.CropMode, short_clip: la.ShortClip
) -> None:
    data = encode_audio(call_signal(2, seconds, 44100, onset_s=0.5), 44100, fmt, 0.6)
    ref = decode_clip(data, mode=mode, u=0.37, short_clip=short_clip)
    out = np.full(N, np.nan, dtype=np.float32)
    got = decode_clip(memoryview(data), mode=mode, u=0.37, short_clip=short_clip, out=out)
    assert got.samples is out and got.valid == ref.valid and got.start_s == ref.start_s
    np.testing.assert_array_equal(out, ref.samples)
    with pytest.raises(ValueError, match="out must be float32"):
        decode_clip(data, out=np.zeros(N - 1, dtype=np.float32))
    assert la.mp3_is_cbr(memoryview(data)) == la.mp3_is_cbr(data)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    specs = [
        AudioSpec(label=j % 3, split="train", seconds=4.0 + 3.5 * j, rate=(22050, 44100)[j % 2],
                  channels=1 + j % 2, fmt=("flac", "mp3", "wav", "ogg")[j % 4], onset_s=0.3)
        for j in range(10)
    ]  # fmt: skip
    return write_synthetic_folder(
        tmp_path_factory.mktemp("fast") / "hf",
        specs,
        n_species=3,
        images_per_species={"train": 2},
        rows_per_group=AUDIO_ROW_GROUP,
    )


def _equal(a: dict, b: dict) -> bool:
    assert a.keys() == b.keys()
    for key, x in a.items():
        y = b[key]
        same = torch.equal(x.nan_to_num(-9.0), y.nan_to_num(-9.0)) if torch.is_tensor(x) else x == y
        if not same:
            return False
    return True


def test_a_batch_of_items_is_the_items_decoded_into_one_tensor(folder: Path) -> None:
    ds = BioVITADataset(folder, "train", seed=3)
    keys = [(7, 1), (2, 1), (9, 4), (0, 0)]
    items = ds.__getitems__(keys)
    assert all(_equal(got, ds[key]) for got, key in zip(items, keys, strict=True))
    batch = collate(items)
    assert batch["audio"].shape == (4, N)
    assert batch["audio"].data_ptr() == items[0]["audio"].data_ptr()  # the rows: not copied
    assert torch.equal(batch["audio"][2], ds[(9, 4)]["audio"])
    assert ds.__getitems__([]) == []
    # rows out of order, or a subset, are stacked as before
    again = collate([items[1], items[0]])
    assert again["audio"].data_ptr() != items[1]["audio"].data_ptr()
    assert torch.equal(again["audio"][0], items[1]["audio"])
    assert ld.rows_of([items[0]["audio"], items[1]["audio"]]) is None
    assert ld.rows_of([torch.zeros(3), torch.zeros(3)]) is None


def test_an_audio_transform_gets_each_crop_as_before(folder: Path) -> None:
    ds = BioVITADataset(folder, "train", seed=3, with_image=False, audio_transform=lambda a: a * 2)
    plain = BioVITADataset(folder, "train", seed=3, with_image=False)
    items = ds.__getitems__([(4, 2), (5, 2)])
    for item, key in zip(items, [(4, 2), (5, 2)], strict=True):
        assert torch.equal(item["audio"], 2 * plain[key]["audio"])


def _worker_collate(batch: list[dict]) -> dict:
    """collate, noting in the worker whether the audio rows were handed on without a stack (in
    a segment of its pool), and how many segments the pool has."""
    rows = ld.rows_of([item["audio"] for item in batch])
    out = collate(batch)
    pool = sb.worker_pool()
    assert pool is not None
    out["handed_on"] = rows is not None and out["audio"] is rows
    out["handed_on"] &= pool.segment_of(rows) is not None
    out["segments"] = len(pool.segments)
    return out


def test_workers_hand_their_batch_tensor_to_the_main_process(folder: Path) -> None:
    ds = BioVITADataset(folder, "train", seed=5)
    keys = [(i, 2) for i in (3, 1, 4, 1, 5, 9, 2, 6)]
    loader = DataLoader(ds, batch_size=3, sampler=keys, num_workers=2, collate_fn=_worker_collate)
    batches = list(loader)
    assert [b["audio"].shape[0] for b in batches] == [3, 3, 2]
    assert all(b["handed_on"] for b in batches)
    got = torch.cat([b["audio"] for b in batches])
    assert torch.equal(got, torch.stack([ds[k]["audio"] for k in keys]))
    assert torch.cat([b["index"] for b in batches]).tolist() == [k for k, _ in keys]


def test_a_worker_reuses_its_batches_once_the_main_process_lets_them_go(folder: Path) -> None:
    ds = BioVITADataset(folder, "train", seed=5)
    keys = [(i % len(ds), 3) for i in range(40)]
    want = torch.stack([ds[k]["audio"] for k in keys])
    loader = DataLoader(
        ds, batch_size=2, sampler=keys, num_workers=2, collate_fn=_worker_collate, prefetch_factor=2
    )
    seen = []
    for batch in loader:  # each batch let go before the next: segments are reused
        b = len(seen) * 2
        assert torch.equal(batch["audio"], want[b : b + 2])
        seen.append(batch["segments"])
        del batch
    assert max(seen) <= 5 < len(keys) // 4  # 10 batches per worker, at most 5 segments each
    held = list(loader)  # every batch kept: none may be overwritten by a later one
    assert all(b["handed_on"] for b in held)
    assert torch.equal(torch.cat([b["audio"] for b in held]), want)
    assert max(b["segments"] for b in held) >= 10


def test_a_pooled_batch_is_free_only_when_both_sides_let_it_go() -> None:
    pool = sb.BatchPool(limit=2)
    t = pool.empty((3, 5000))
    t.copy_(torch.arange(15000.0).reshape(3, 5000))
    (segment,) = pool.segments
    assert not segment.free()
    payload = ForkingPickler.dumps(t)  # sent as the segment: no copy of the data
    assert len(payload) < 1000 and segment.counts() == (1, 0)
    del t
    gc.collect()
    assert not segment.free()  # the main process has not let it go
    other = pool.empty((3, 5000))  # so a second segment
    assert len(pool.segments) == 2 and other.data_ptr() != segment.address
    got = pickle.loads(payload)  # the main process's side: a plain tensor over the segment
    assert type(got) is torch.Tensor
    assert torch.equal(got, torch.arange(15000.0).reshape(3, 5000))
    row = got[2]
    del got
    gc.collect()
    assert not segment.free()  # a view still holds the memory
    third = pool.empty((1, 10))  # the limit reached: fresh shared memory
    assert third.is_shared() and len(pool.segments) == 2
    del row
    gc.collect()
    assert segment.free() and segment.counts() == (1, 1)
    again = pool.empty((2, 5000))  # the smallest free segment that fits
    assert again.data_ptr() == segment.address


def test_a_view_of_a_pooled_batch_is_pickled_by_torch_and_frees_the_segment() -> None:
    pool = sb.BatchPool()
    t = pool.empty((2, 4096))
    t.fill_(7.0)
    (segment,) = pool.segments
    view = t[1]  # not the start of the segment: torch moves the storage to fresh shared memory
    payload = ForkingPickler.dumps(view)
    assert t.data_ptr() != segment.address and torch.all(t == 7.0)
    assert segment.free() and segment.counts() == (0, 0)
    assert torch.equal(pickle.loads(payload), torch.full((4096,), 7.0))


def test_only_the_process_that_attached_a_batch_counts_its_release() -> None:
    pool = sb.BatchPool()
    payload = ForkingPickler.dumps(pool.empty((2, 4096)))
    (segment,) = pool.segments
    got = pickle.loads(payload)
    pid = os.fork()
    if pid == 0:  # a child that inherited the batch and lets it go: no release counted
        del got
        gc.collect()
        os._exit(0)
    os.waitpid(pid, 0)
    assert segment.counts() == (1, 0)
    del got
    gc.collect()
    assert segment.counts() == (1, 1)


def test_batch_reuse_can_be_turned_off(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(sb.REUSE_ENV, "0")
    assert sb.worker_pool() is None
    ds = BioVITADataset(folder, "train", seed=5, with_image=False)
    keys = [(i, 1) for i in range(6)]
    loader = DataLoader(ds, batch_size=3, sampler=keys, num_workers=2, collate_fn=_plain_collate)
    batches = list(loader)
    assert all(b["shared"] and not b["pooled"] for b in batches)  # torch's shared memory
    assert torch.equal(torch.cat([b["audio"] for b in batches]),
                       torch.stack([ds[k]["audio"] for k in keys]))  # fmt: skip


def _plain_collate(batch: list[dict]) -> dict:
    """collate, noting in the worker whether the audio is torch's shared memory or pooled."""
    out = collate(batch)
    out["shared"] = out["audio"].is_shared()
    out["pooled"] = sb._pool is not None and sb._pool[0] == os.getpid()
    return out


def test_a_dtype_numpy_lacks_gets_fresh_shared_memory() -> None:
    pool = sb.BatchPool()
    t = pool.empty((4, 1 << 18), torch.bfloat16)
    assert t.is_shared() and t.dtype == torch.bfloat16 and not pool.segments
    u = pool.empty((2, 3), torch.bool)
    assert u.dtype == torch.bool and len(pool.segments) == 1
    assert pool.empty((0, 5)).shape == (0, 5) and len(pool.segments) == 1


def test_prefault_keeps_the_contents() -> None:
    x = torch.arange(3 * 4096, dtype=torch.float32)
    shared = x.clone().share_memory_()
    assert sb.prefault(shared) in (True, False)  # False on kernels before 5.14
    assert torch.equal(shared, x)
    assert sb.prefault(torch.empty(0)) is False
    assert sb.prefault(x[1:]) is False  # not page-aligned


def test_the_dataset_loads_ffmpeg_before_workers_fork(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    monkeypatch.setattr(ld, "ffmpeg_decoder", lambda: calls.append(1))
    BioVITADataset(folder, "train", with_image=False)
    assert calls == [1]


def test_the_loader_crops_publish_layout_without_decoding_a_row_group(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = BioVITADataset(folder, "train", seed=2, with_image=False)
    want = [ds[(i, 1)]["audio"] for i in range(len(ds))]
    fresh = BioVITADataset(folder, "train", seed=2, with_image=False)
    _no_decoding(monkeypatch)
    got = collate(fresh.__getitems__([(i, 1) for i in range(len(ds))]))["audio"]
    assert torch.equal(got, torch.stack(want))
