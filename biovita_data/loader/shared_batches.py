"""Shared-memory batches a DataLoader worker reuses once the main process has let them go.

A fresh shared-memory batch costs a page fault per 4 KiB page (the kernel zeroes each one): about
1 CPU-ms per 10 s clip at 48 kHz on a VM, a tenth of the crop's decode. A worker's `BatchPool`
keeps its segments (anonymous memfds, nothing to leak in /dev/shm) and hands one out again only
when it is free on both sides:

- in the worker: no tensor over it is left (a finalizer on the array under them), and
- in the main process: as many batches over it were let go as were sent. In a worker that has a
  pool, a tensor that starts a segment is pickled (by the worker's queue) as that segment: a send
  is counted in its header and its fd passed; unpickling maps the segment in the main process as
  an ordinary tensor whose memory, when freed (every view gone, or moved to other shared memory
  by torch), counts a release. Each side writes only its own counter. Other tensors are pickled
  as torch does.
"""

from __future__ import annotations

import functools
import math
import mmap
import os
import struct
import sys
import weakref
from dataclasses import dataclass, field
from multiprocessing.reduction import DupFd, ForkingPickler
from typing import Any

import numpy as np
import torch
import torch.multiprocessing.reductions as torch_reductions

HEADER = mmap.PAGESIZE  # the counters, then the data from the next page on
_COUNT = struct.Struct("<Q")
_SENT_AT, _RELEASED_AT = 0, 8  # the worker writes the first counter, the main process the second
SEGMENTS_PER_WORKER = 32  # beyond this many in use at once a batch gets fresh shared memory
POOLED_MIN_BYTES = 1 << 20  # collate stacks smaller tensors as default_collate does


@dataclass(eq=False)
class Segment:
    """One reusable stretch of shared memory of a worker: a memfd mapped whole."""

    fd: int
    memory: mmap.mmap
    capacity: int  # data bytes after the header
    address: int  # of the data
    in_worker: bool = field(default=False)

    @classmethod
    def create(cls, capacity: int) -> Segment:
        fd = os.memfd_create("biovita-batch", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, HEADER + capacity)
            memory = mmap.mmap(fd, HEADER + capacity)
        except BaseException:
            os.close(fd)
            raise
        address = np.frombuffer(memory, np.uint8, count=1, offset=HEADER).ctypes.data
        return cls(fd, memory, capacity, address)

    def counts(self) -> tuple[int, int]:
        """(sent, released)."""
        sent = _COUNT.unpack_from(self.memory, _SENT_AT)[0]
        released = _COUNT.unpack_from(self.memory, _RELEASED_AT)[0]
        return sent, released

    def free(self) -> bool:
        sent, released = self.counts()
        return not self.in_worker and sent == released

    def tensor(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """A tensor over the start of the data; the segment is in use in the worker until it and
        every view of it are gone (or torch has moved their storage elsewhere)."""
        array = _view(self.memory, shape, dtype)
        self.in_worker = True
        weakref.finalize(array, setattr, self, "in_worker", False)
        return torch.from_numpy(array)

    def sent(self) -> None:
        _count(self.memory, _SENT_AT)


def _count(memory: mmap.mmap, at: int) -> None:
    """Add one to the counter at offset `at` of a segment's header."""
    _COUNT.pack_into(memory, at, _COUNT.unpack_from(memory, at)[0] + 1)


def _view(memory: mmap.mmap, shape: tuple[int, ...], dtype: torch.dtype) -> np.ndarray:
    count = math.prod(shape)
    return np.frombuffer(memory, dtype=numpy_dtype(dtype), count=count, offset=HEADER).reshape(
        shape
    )


@functools.cache
def numpy_dtype(dtype: torch.dtype) -> np.dtype | None:
    """NumPy's dtype for a torch dtype; None where NumPy has none (bfloat16, say)."""
    try:
        return torch.empty(0, dtype=dtype).numpy().dtype
    except TypeError:
        return None


class BatchPool:
    """Reusable segments (a DataLoader worker has one pool: `worker_pool`). From the first pool
    on, the process pickles tensors through `reduce_tensor`."""

    def __init__(self, limit: int = SEGMENTS_PER_WORKER) -> None:
        self.limit = limit
        self.segments: list[Segment] = []
        if not _pools:
            ForkingPickler.register(torch.Tensor, reduce_tensor)
        _pools.add(self)

    def empty(self, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """An uninitialised tensor in a free segment (the smallest that fits, else a new one);
        fresh shared memory when `limit` segments are in use, NumPy has no such dtype or the
        tensor is empty."""
        nbytes = math.prod(shape) * dtype.itemsize
        if numpy_dtype(dtype) is None or not nbytes:
            return fresh_shared(shape, dtype)
        fits = [s for s in self.segments if s.capacity >= nbytes and s.free()]
        if fits:
            return min(fits, key=lambda s: s.capacity).tensor(shape, dtype)
        if len(self.segments) >= self.limit:
            return fresh_shared(shape, dtype)
        segment = Segment.create(nbytes)
        self.segments.append(segment)
        out = segment.tensor(shape, dtype)
        prefault(out)
        return out

    def segment_of(self, tensor: torch.Tensor) -> Segment | None:
        """The segment `tensor` covers from its start, when it is a plain contiguous CPU tensor
        (anything else is left to torch, which copies it out to fresh shared memory)."""
        if type(tensor) is not torch.Tensor or tensor.requires_grad or not tensor.is_contiguous():
            return None
        if tensor.device.type != "cpu" or tensor.layout != torch.strided:
            return None
        address = tensor.data_ptr()
        return next((s for s in self.segments if s.address == address), None)


def reduce_tensor(tensor: torch.Tensor) -> tuple[Any, tuple[Any, ...]]:
    """The worker's pickling of a tensor: a pooled batch goes as its segment's fd (a send
    counted), any other tensor as torch pickles it."""
    segment = next(filter(None, (pool.segment_of(tensor) for pool in _pools)), None)
    if segment is None:
        return torch_reductions.reduce_tensor(tensor)
    segment.sent()
    size = HEADER + segment.capacity
    return attach, (DupFd(segment.fd), size, tuple(tensor.shape), tensor.dtype)


def attach(fd: Any, size: int, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """The main process's side: the sent batch as a tensor over the worker's segment; a release
    is counted when its memory is freed."""
    handle = fd.detach()
    try:
        memory = mmap.mmap(handle, size)
    finally:
        os.close(handle)
    array = _view(memory, shape, dtype)
    weakref.finalize(array, _release, memory, os.getpid())
    return torch.from_numpy(array)


def _release(memory: mmap.mmap, pid: int) -> None:
    """Count a release, in the process that attached only (a forked child that inherited the
    tensor and collects it has not held the batch)."""
    if os.getpid() == pid:
        _count(memory, _RELEASED_AT)


_pools: weakref.WeakSet[BatchPool] = weakref.WeakSet()  # a process's tensors pickled by
# `reduce_tensor` once it has one
_pool: tuple[int, BatchPool] | None = None  # (the process it belongs to, the pool)
REUSE_ENV = "BIOVITA_REUSE_BATCHES"  # "0": every batch in fresh shared memory, as torch does


def worker_pool() -> BatchPool | None:
    """This process's pool (a forked child makes its own); None where memfd is missing (not
    Linux) or REUSE_ENV is "0"."""
    global _pool
    if not hasattr(os, "memfd_create") or os.environ.get(REUSE_ENV, "1").strip() == "0":
        return None
    if _pool is None or _pool[0] != os.getpid():
        _pool = (os.getpid(), BatchPool())
    return _pool[1]


def fresh_shared(shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A new shared-memory tensor, as default_collate makes in a worker."""
    elem = torch.empty(0, dtype=dtype)
    storage = elem._typed_storage()._new_shared(math.prod(shape), device=elem.device)
    out = elem.new(storage).resize_(shape)
    prefault(out)
    return out


_MADV_POPULATE_WRITE = 23  # Linux >= 5.14


@functools.cache
def _madvise() -> Any:
    """libc's madvise(2) through ctypes, or None (not Linux, or no such symbol)."""
    if sys.platform != "linux":
        return None
    import ctypes

    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return madvise


def prefault(tensor: torch.Tensor) -> bool:
    """Ask Linux to back a page-aligned CPU tensor's memory now, in one call, instead of one page
    fault per 4 KiB page on first write (fresh shared memory gets no huge pages); False where
    the kernel (or libc) cannot, which changes nothing but the speed."""
    size = tensor.numel() * tensor.element_size()
    address = tensor.data_ptr()
    madvise = _madvise()
    if madvise is None or not size or address % mmap.PAGESIZE:
        return False
    return madvise(address, size, _MADV_POPULATE_WRITE) == 0
