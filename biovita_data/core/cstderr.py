"""Filter what C libraries print to C's `stderr` stream for a while (libmpg123's seek messages).

libmpg123 (inside libsndfile) reports every MP3 frame decoded without its bit reservoir, as
happens after each seek, with `fprintf(stderr, ...)`. Swapping file descriptor 2 would hide every
other thread's output too. Instead, while `filtered_c_stderr()` is active, C's `stderr` *stream*
points at a temporary file; on exit the stream is restored and every captured line that does not
match `drop` is written back to the real stderr. File descriptor 2 stays as it is, so Python's
own output (tracebacks, logging, warnings, progress bars) is never touched. Where the C library
exposes no `stderr` symbol (not glibc), nothing is captured.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import tempfile
import threading
from collections.abc import Iterator

# `[src/libmpg123/layer3.c:INT123_do_layer3():1844] error: ...` and its resync notes
MPG123_MESSAGE = re.compile(
    rb"^(\[[^\]]*mpg123[^\]]*\]"
    rb"|Note: (Illegal Audio-MPEG-Header|Trying to resync|Skipped \d+ bytes))"
)

_lock = threading.Lock()
_depth = 0
_saved: int | None = None
_capture: int | None = None
_path: str | None = None


def _libc() -> tuple[ctypes.CDLL, ctypes.c_void_p] | None:
    try:
        libc = ctypes.CDLL(None)
        stream = ctypes.c_void_p.in_dll(libc, "stderr")
    except (OSError, ValueError):
        return None
    libc.fopen.restype = ctypes.c_void_p
    libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    libc.fflush.argtypes = [ctypes.c_void_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    return libc, stream


_LIBC = _libc()


def _forward(path: str, drop: re.Pattern[bytes]) -> None:
    """Write the captured lines that `drop` does not match to file descriptor 2."""
    with open(path, "rb") as f:
        kept = [line for line in f if not drop.match(line)]
    if kept:
        with contextlib.suppress(OSError):
            os.write(2, b"".join(kept))


@contextlib.contextmanager
def filtered_c_stderr(drop: re.Pattern[bytes] = MPG123_MESSAGE) -> Iterator[None]:
    """Capture C `stderr` writes (all threads) while active; re-emit all but `drop`'s lines."""
    global _depth, _saved, _capture, _path
    if _LIBC is None:
        yield
        return
    libc, stream = _LIBC
    with _lock:
        if _depth == 0:
            fd, path = tempfile.mkstemp(prefix="biovita-cstderr-")
            os.close(fd)
            handle = libc.fopen(path.encode(), b"w")
            if handle:
                libc.fflush(stream.value)
                _saved, _capture, _path = stream.value, handle, path
                stream.value = handle
            else:
                os.unlink(path)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _capture is not None and _path is not None:
                stream.value = _saved
                libc.fclose(_capture)
                path, _capture, _saved, _path = _path, None, None, None
                try:
                    _forward(path, drop)
                finally:
                    os.unlink(path)
