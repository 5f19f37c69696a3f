"""An object store's shard appears only when its write succeeded: a write that raises leaves
no object and no open multipart upload (moto's S3 server on 127.0.0.1, through s3fs)."""

from __future__ import annotations

import os

import pytest

from biovita_data.media.store import MediaStore


class Cut(RuntimeError):
    pass


def _uploads(fs, bucket: str) -> list:
    return fs.call_s3("list_multipart_uploads", Bucket=bucket).get("Uploads", [])


@pytest.mark.parametrize("size", [1_000, 12 * 2**20])  # one part / parts already uploaded
def test_a_write_that_raises_leaves_nothing_behind(moto_s3: str, size: int) -> None:
    store = MediaStore("s3://media/store-test")
    path = store.shard("audio", size)

    def write(f) -> None:
        f.write(os.urandom(size))
        f.flush()
        raise Cut("killed mid-shard")

    with pytest.raises(Cut):
        store.write(path, write)
    store.fs.invalidate_cache()
    assert not store.exists(path)
    assert _uploads(store.fs, "media") == []


def test_a_write_that_succeeds_is_committed_whole(moto_s3: str) -> None:
    store = MediaStore("s3://media/store-test")
    path = store.shard("audio", 7)
    data = os.urandom(6 * 2**20 + 123)  # more than one part
    store.write(path, lambda f: f.write(data))
    store.fs.invalidate_cache()
    with store.open(path) as f:
        assert f.read() == data
    assert _uploads(store.fs, "media") == []
