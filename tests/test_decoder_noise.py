"""libmpg123's complaints about broken MP3s stay off the terminal; other stderr output does not."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from biovita_data.media import audio
from biovita_data.media.records import ItemFailure
from biovita_data.sample.world import World

ROOT = Path(__file__).resolve().parents[1]


def test_decoder_lines_dropped_other_lines_kept(capfd: pytest.CaptureFixture[str]) -> None:
    with audio._DECODER_NOISE:
        os.write(2, b"[src/libmpg123/layer3.c:INT123_do_layer3():1844] error: part2_3_length\n")
        os.write(2, b"Note: Trying to resync...\n")
        os.write(2, b"another thread's warning\n")
        with audio._DECODER_NOISE:  # re-entrant (a second decoding thread)
            os.write(2, b"[src/libmpg123/parse.c:skip_junk():1260] error: Giving up\n")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "another thread's warning\nafter\n"


def test_threads_writing_while_decoding_are_kept(capfd: pytest.CaptureFixture[str]) -> None:
    go = threading.Event()

    def other() -> None:
        go.wait()
        os.write(2, b"from another thread\n")

    t = threading.Thread(target=other)
    t.start()
    with audio._DECODER_NOISE:
        go.set()
        t.join()
    assert capfd.readouterr().err == "from another thread\n"


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
