"""Materialize: libmpg123's complaints about broken MP3s stay off the terminal (the filter itself:
tests/test_cstderr.py); the files count as undecodable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from biovita_data.media import audio
from biovita_data.media.records import ItemFailure
from biovita_data.sample.world import World

ROOT = Path(__file__).resolve().parents[1]


def test_corrupt_sample_mp3_fails_quietly() -> None:
    """A subprocess, so that the assertion sees fd 2 itself, as a terminal would."""
    code = (
        "from biovita_data.sample.world import World\n"
        "from biovita_data.media.audio import store_audio\n"
        "from biovita_data.media.records import ItemFailure\n"
        "w = World('tiny', 0)\n"
        "n = 0\n"
        "for (src, rid), rec in w.recording_by_id.items():\n"
        "    if rec.flaw == 'corrupt':\n"
        "        try:\n"
        "            store_audio(w.audio_bytes(src, rid), 60.0)\n"
        "        except ItemFailure as exc:\n"
        "            assert exc.reason == 'undecodable', exc\n"
        "            n += 1\n"
        "print(n)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) >= 1
    assert "mpg123" not in proc.stderr and proc.stderr == ""


def test_corrupt_recordings_are_undecodable() -> None:
    w = World("tiny", 0)
    corrupt = [k for k, rec in w.recording_by_id.items() if rec.flaw == "corrupt"]
    assert corrupt
    for src, rid in corrupt:
        with pytest.raises(ItemFailure) as exc:
            audio.store_audio(w.audio_bytes(src, rid), 60.0)
        assert exc.value.reason == "undecodable"
