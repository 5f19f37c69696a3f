"""filtered_c_stderr: libmpg123's seek messages are dropped, everything else reaches stderr."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from biovita_data.core import cstderr

pytestmark = pytest.mark.skipif(cstderr._LIBC is None, reason="no C `stderr` symbol here")

SCRIPT = textwrap.dedent(
    """
    import ctypes, sys, threading
    from biovita_data.core.cstderr import filtered_c_stderr

    libc = ctypes.CDLL(None)
    stream = ctypes.c_void_p.in_dll(libc, "stderr")
    libc.fputs.argtypes = [ctypes.c_char_p, ctypes.c_void_p]

    def c_print(text):
        libc.fputs(text.encode(), stream.value)
        libc.fflush(stream)

    with filtered_c_stderr():
        c_print("[src/libmpg123/layer3.c:INT123_do_layer3():1774] error: part2_3_length (960)"
                " too large for available bit count (936)\\n")
        c_print("another C library: a real problem\\n")
        t = threading.Thread(target=lambda: print("python thread: traceback", file=sys.stderr))
        t.start(); t.join()
        with filtered_c_stderr():  # nested (another decoding thread)
            c_print("[src/libmpg123/parse.c:skip_junk():1260] error: Giving up\\n")
    c_print("after: C stderr restored\\n")
    with filtered_c_stderr():  # the capture was emptied: nothing above comes out again
        c_print("second use\\n")
    import os
    pid = os.fork()
    if pid == 0:  # a forked child captures into its own file, not its parent's
        with filtered_c_stderr():
            c_print("child: kept\\n")
            c_print("[src/libmpg123/layer3.c:INT123_do_layer3():1774] error: child\\n")
        os._exit(0)
    os.waitpid(pid, 0)
    with filtered_c_stderr():
        c_print("parent again\\n")
    print("python: done", file=sys.stderr)
    """
)


def test_only_the_decoder_is_silenced() -> None:
    res = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True
    )
    lines = res.stderr.splitlines()
    assert not [line for line in lines if "libmpg123" in line]
    assert "another C library: a real problem" in lines
    assert "python thread: traceback" in lines  # written while the filter was active
    assert "after: C stderr restored" in lines
    assert lines.count("another C library: a real problem") == 1
    assert [line for line in lines if line in ("second use", "child: kept", "parent again")] == [
        "second use",
        "child: kept",
        "parent again",
    ]
    assert lines[-1] == "python: done"
