"""Filter what C libraries print to C's `stderr` stream for a while (libmpg123's seek messages).

libmpg123 (inside libsndfile) reports every MP3 frame decoded without its bit reservoir, as
happens after each seek, with `fprintf(stderr, ...)`. Swapping file descriptor 2 would hide every
other thread's output too. Instead, while `filtered_c_stderr()` is active, C's `stderr` *stream*
points at a capture file (in memory: one memfd a process, kept open and emptied after each use,
so a decode costs no file created and deleted); on exit the stream is restored and every
captured line that does not match `drop` is written back to the real stderr. File descriptor 2
stays as it is, so Python's own output (tracebacks, logging, warnings, progress bars) is never
touched. Where the C library exposes no `stderr` symbol (not glibc), nothing is captured.
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
_sink: tuple[int, int, int] | None = None  # this process's capture: (pid, fd, C stream)


def _libc() -> tuple[ctypes.CDLL, ctypes.c_void_p] | None:
    try:
        libc = ctypes.CDLL(None)
        stream = ctypes.c_void_p.in_dll(libc, "stderr")
    except (OSError, ValueError):
        return None
    libc.fdopen.restype = ctypes.c_void_p
    libc.fdopen.argtypes = [ctypes.c_int, ctypes.c_char_p]
    libc.fflush.argtypes = [ctypes.c_void_p]
    libc.rewind.argtypes = [ctypes.c_void_p]
    return libc, stream


_LIBC = _libc()


def _capture(libc: ctypes.CDLL) -> tuple[int, int] | None:
    """(fd, C stream) of this process's capture file, made at its first use (again in a forked
    child, which must not share its parent's): a memfd, else an unlinked temp file."""
    global _sink
    if _sink is not None and _sink[0] == os.getpid():
        return _sink[1], _sink[2]
    try:
        if hasattr(os, "memfd_create"):
            fd = os.memfd_create("biovita-cstderr", os.MFD_CLOEXEC)
        else:
            fd, path = tempfile.mkstemp(prefix="biovita-cstderr-")
            os.unlink(path)
    except OSError:
        return None
    handle = libc.fdopen(os.dup(fd), b"w")
    if not handle:
        os.close(fd)
        return None
    _sink = (os.getpid(), fd, handle)
    return fd, handle


def _drain(libc: ctypes.CDLL, fd: int, handle: int) -> bytes:
    """What the capture holds, which it then forgets (emptied, its stream back at the start)."""
    libc.fflush(handle)
    size = os.fstat(fd).st_size
    data = os.pread(fd, size, 0) if size else b""
    if size:
        os.ftruncate(fd, 0)
    libc.rewind(handle)
    return data


def _forward(captured: bytes, drop: re.Pattern[bytes]) -> None:
    """Write the captured lines that `drop` does not match to file descriptor 2."""
    kept = [line for line in captured.splitlines(keepends=True) if not drop.match(line)]
    if kept:
        with contextlib.suppress(OSError):
            os.write(2, b"".join(kept))


@contextlib.contextmanager
def filtered_c_stderr(drop: re.Pattern[bytes] = MPG123_MESSAGE) -> Iterator[None]:
    """Capture C `stderr` writes (all threads) while active; re-emit all but `drop`'s lines."""
    global _depth, _saved
    if _LIBC is None:
        yield
        return
    libc, stream = _LIBC
    with _lock:
        sink = _capture(libc) if _depth == 0 else None
        if sink is not None:
            libc.fflush(stream.value)
            _saved, stream.value = stream.value, sink[1]
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _saved is not None:
                stream.value, _saved = _saved, None
                sink = _capture(libc)
                if sink is not None:
                    _forward(_drain(libc, *sink), drop)
