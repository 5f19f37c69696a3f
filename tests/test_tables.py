"""core/tables.py's atomic writes: a plain file's mode, nothing half-written, no temp left."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import polars as pl
import pytest

from biovita_data.core.tables import atomic_path, write_bytes_atomic, write_json_atomic, write_table


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_every_atomic_write_gets_the_umask_mode(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        written = [
            write_bytes_atomic(b"abc", tmp_path / "a" / "x.bin"),
            write_table(pl.DataFrame({"a": [1]}), tmp_path / "t.parquet"),
        ]
        write_json_atomic({"k": 1}, tmp_path / "j.json")
        written.append(tmp_path / "j.json")
    finally:
        os.umask(old)
    assert [_mode(p) for p in written] == [0o644] * 3  # not mkstemp's 0600
    assert (tmp_path / "a" / "x.bin").read_bytes() == b"abc"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "j.json", "t.parquet", "x.bin"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = write_bytes_atomic(b"old", tmp_path / "f.txt")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]
