"""Where materialize's shards live: OUT/media, a shared folder, or any fsspec URL (s3://, gs://).

Workers write their finished shards here themselves; the driver only reads shard footers and
metadata columns back. Credentials and endpoints come from the standard environment of each
process (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, GOOGLE_APPLICATION_CREDENTIALS, ...), never from
arguments. A write commits atomically: a local file is written to a temp name and renamed; an
object store's object appears only once its multipart upload is completed after the write
succeeded (a write that raises aborts it); any other fsspec filesystem gets a temp name and a move.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import IO, Any

import pyarrow as pa

from biovita_data.core.tables import atomic_path

# Filesystems whose objects appear atomically once their upload completed.
ATOMIC_PUT = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "memory"}
STORE_FILE = "store.json"  # OUT/media/store.json: where the shards are (when not OUT/media)


class MediaStore:
    """A folder of media shards: OUT/media (default), any local folder, or an fsspec URL."""

    def __init__(self, url: str | Path) -> None:
        self.url = str(url).rstrip("/")
        if "://" not in self.url or self.url.startswith("file://"):
            self.url = str(Path(self.url.removeprefix("file://")).resolve())

    def __getstate__(self) -> dict:
        return {"url": self.url}  # the filesystem is rebuilt from the environment where used

    def __setstate__(self, state: dict) -> None:
        self.url = state["url"]

    def __repr__(self) -> str:
        return f"MediaStore({self.url!r})"

    @classmethod
    def of(cls, out: Path, media_root: str | None = None) -> MediaStore:
        """`media_root`, else what OUT/media/store.json records, else OUT/media."""
        if media_root:
            return cls(media_root)
        path = Path(out) / "media" / STORE_FILE
        if path.exists():
            return cls(json.loads(path.read_text())["media_root"])
        return cls(Path(out) / "media")

    @cached_property
    def _fs_root(self) -> tuple[Any, str]:
        import fsspec

        return fsspec.core.url_to_fs(self.url)

    @property
    def fs(self) -> Any:
        """The fsspec filesystem (built in this process, from this process's environment)."""
        return self._fs_root[0]

    @property
    def is_local(self) -> bool:
        return "://" not in self.url

    def path(self, modality: str, name: str) -> str:
        """The store path of `<modality>/<name>` (a local path, or the fs's key)."""
        return f"{self._fs_root[1]}/{modality}/{name}"

    def shard(self, modality: str, index: int) -> str:
        return self.path(modality, f"shard-{index:05d}.parquet")

    def failures(self, modality: str, index: int) -> str:
        """The shard's failures, next to it: failures-NNNNN.parquet (not matched by shard-*)."""
        return self.path(modality, f"failures-{index:05d}.parquet")

    def exists(self, path: str) -> bool:
        return os.path.exists(path) if self.is_local else self.fs.exists(path)

    def open(self, path: str) -> IO[bytes]:
        """For reading: no read-ahead cache (Parquet readers fetch exactly the ranges they need)."""
        return open(path, "rb") if self.is_local else self.fs.open(path, "rb", cache_type="none")

    def glob(self, modality: str, pattern: str) -> list[str]:
        """Paths of `<modality>/<pattern>`, sorted."""
        if self.is_local:
            return sorted(str(p) for p in Path(self.path(modality, "")).glob(pattern))
        self.fs.invalidate_cache()
        return sorted(self.fs.glob(self.path(modality, pattern)))

    def remove(self, path: str) -> None:
        if self.is_local:
            Path(path).unlink(missing_ok=True)
        elif self.fs.exists(path):
            self.fs.rm(path)

    def write(self, path: str, write: Callable[[IO[bytes] | pa.NativeFile], None]) -> None:
        """Call `write(file)` and commit: the final path exists only once it is complete."""
        if self.is_local:
            _write_local(Path(path), write)
            return
        protocol = self.fs.protocol
        protocols = {protocol} if isinstance(protocol, str) else set(protocol)
        if protocols & ATOMIC_PUT:
            _write_committed(self.fs, path, write)
            return
        folder, name = path.rsplit("/", 1)
        tmp = f"{folder}/.{name}.{uuid.uuid4().hex}.tmp"
        self.fs.makedirs(folder, exist_ok=True)
        try:
            with self.fs.open(tmp, "wb") as f:
                write(f)
            self.fs.mv(tmp, path)
        finally:
            if self.fs.exists(tmp):
                self.fs.rm(tmp)


def _write_committed(fs: Any, path: str, write: Callable[[IO[bytes]], None]) -> None:
    """Upload without committing, then commit: a `write` that raises leaves no object at `path`
    (its multipart upload aborted), where closing the file would have completed it. A file
    class that cannot defer its commit ignores autocommit and commits on close, as before (its
    discard and commit are fsspec's no-ops)."""
    f = fs.open(path, "wb", autocommit=False)
    try:
        with f:  # uploads what is buffered, completes nothing
            write(f)
    except BaseException:
        with contextlib.suppress(Exception):  # the write's own error is the one to report
            f.discard()
        raise
    f.commit()


def _write_local(path: Path, write: Callable[[IO[bytes] | pa.NativeFile], None]) -> None:
    """Through Arrow's own file (a Python file object would take every Parquet page through a
    Python bytes copy: ~0.3 CPU-ms more per stored recording, benchmarks/README.md)."""
    with atomic_path(path) as tmp, pa.OSFile(str(tmp), "wb") as f:
        write(f)
