"""Sound helpers shared by materialize, its fingerprints and the loader: libsndfile on bytes,
mono mix, resampling.

No BLAS: a matrix product would start OpenBLAS's threads, which spin on every core for a while
after each call, about doubling the CPU a worker process is charged for the same work."""

from __future__ import annotations

import io
import os

import numpy as np
import soundfile as sf
import soxr


def open_sound(data: bytes) -> sf.SoundFile:
    """libsndfile reading encoded bytes. On Linux from an in-memory file (memfd) by plain read(2)
    calls; elsewhere through a BytesIO, whose reads are Python callbacks (a 25 s MP3 makes
    ~2,000), each taking the GIL: 4-7 % more CPU in one thread, more beside download threads.
    Raises what sf.SoundFile raises for bytes it cannot read."""
    if not hasattr(os, "memfd_create"):
        return sf.SoundFile(io.BytesIO(data))
    fd = os.memfd_create("biovita-sound", os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return sf.SoundFile(fd, closefd=True)  # libsndfile closes it, on failure too


def to_mono(x: np.ndarray) -> np.ndarray:
    """Average the channels of a (frames, channels) array into float32 (frames,)."""
    if x.ndim == 1:
        return x.astype(np.float32, copy=False)
    if x.shape[1] == 1:  # a view, no copy
        return x.reshape(-1).astype(np.float32, copy=False)
    out = np.array(x[:, 0], dtype=np.float32)  # column sums: much faster than mean(axis=1)
    for c in range(1, x.shape[1]):
        out += x[:, c]
    out *= np.float32(1.0 / x.shape[1])
    return out


def resample(x: np.ndarray, rate_in: int, rate_out: int, quality: str = "HQ") -> np.ndarray:
    """Resample a mono float32 signal with soxr (a no-op when the rates match)."""
    if rate_in == rate_out or x.size == 0:
        return x
    return soxr.resample(x, rate_in, rate_out, quality=quality).astype(np.float32, copy=False)
