"""The near-audio search of one block (a genus) over plain sorted arrays.

A block's landmarks are held as three arrays (record, hash, frame: 12 bytes a landmark); hashes
found in more than `max_postings` records are dropped; the rest are sorted by hash once. Then a
chunk of anchor records at a time (about `chunk` agreements) is looked up in that sorted index:
each (anchor, later record, offset) agreement is packed into one 64-bit key, counted, and only
pairs with a third of `min_matches` at one offset get the sums over neighbouring offsets (a
frame either side). Memory: the block's arrays (about 50 bytes a landmark at their peak) plus
`chunk` agreements (about 80 bytes each) per thread; no hash table of the whole join
(benchmarks/dedup_scale.py).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

_DT_BITS = 22  # offsets within +-2^21 frames (6.7 h at 11.6 ms a frame)
_REC_BITS = 21  # records of one block: fewer than 2^21
_DT_BIAS = 1 << (_DT_BITS - 1)


def block_pairs(
    records: np.ndarray,
    hashes: np.ndarray,
    times: np.ndarray,
    *,
    max_postings: int,
    min_matches: int,
    chunk: int,
    threads: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, matched) for record pairs a < b (numbers as in `records`, which must be sorted
    0, 0, ..., 1, ...) with at least `min_matches` landmarks agreeing at the best offset,
    counting a frame either side. `chunk`: agreements (landmark pairs sharing a hash) a thread
    holds at a time; `threads` look up chunks side by side in the one index (numpy's sorts
    release the GIL), so memory holds the index once."""
    n_rec = int(records[-1]) + 1 if len(records) else 0
    if n_rec >= 1 << _REC_BITS:
        raise ValueError(f"a block of {n_rec} records: at most {(1 << _REC_BITS) - 1}")
    rec = records.astype(np.int32, copy=False)
    t = times.astype(np.int32, copy=False)
    order = np.argsort(hashes.astype(np.uint32, copy=False), kind="stable")
    sh, srec, st = hashes[order].astype(np.uint32, copy=False), rec[order], t[order]
    order = order.astype(np.int32)
    # hash groups of the sorted index; within one, records ascend (a stable sort of record order)
    start = _starts(sh)
    new_record = np.r_[True, srec[1:] != srec[:-1]]
    new_record[start] = True
    postings = np.add.reduceat(new_record.astype(np.int32), start)  # records per hash
    del new_record, sh
    lengths = np.diff(np.r_[start, len(srec)])
    del start
    # hashes in more than max_postings records say nothing: out of the index and the anchors
    kept = postings <= max_postings
    size = lengths[kept]
    first = np.r_[0, np.cumsum(size)[:-1]] if len(size) else size
    number = np.where(kept, np.cumsum(kept) - 1, -1).astype(np.int32)  # kept groups renumbered
    gid = np.empty(len(order), np.int32)
    gid[order] = np.repeat(number, lengths)  # each landmark's group in record order; -1: dropped
    del order, number
    in_index = np.repeat(kept, lengths)
    srec, st = srec[in_index], st[in_index]
    del in_index, kept, lengths, postings
    bounds = np.searchsorted(rec, np.arange(n_rec + 1))  # each record's landmarks (rec sorted)
    # chunks of whole anchor records holding about `chunk` agreements each
    weights = np.r_[np.where(gid >= 0, size[np.maximum(gid, 0)], 0).astype(np.int32), 0]
    per_record = np.add.reduceat(weights, bounds[:-1]).astype(np.int64)
    per_record[bounds[:-1] == bounds[1:]] = 0  # reduceat gives an empty record its next value
    del weights
    done = np.r_[0, np.cumsum(per_record)]  # agreements before each record
    budget = max(1, chunk)
    spans, r0 = [], 0
    while r0 < n_rec:
        r1 = int(np.searchsorted(done, done[r0] + budget, "right")) - 1
        r1 = min(max(r1, r0 + 1), n_rec)
        spans.append((bounds[r0], bounds[r1]))
        r0 = r1

    def one(span: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        lo, hi = span
        return _chunk_pairs(rec[lo:hi], gid[lo:hi], t[lo:hi], first, size, srec, st,
                            min_matches)  # fmt: skip

    if threads > 1 and len(spans) > 1:
        with ThreadPoolExecutor(min(threads, len(spans))) as pool:
            found = list(pool.map(one, spans))
    else:
        found = [one(span) for span in spans]
    if not found:
        empty = np.empty(0, np.int64)
        return empty, empty, empty
    return tuple(np.concatenate(x) for x in zip(*found, strict=True))  # type: ignore[return-value]


def _chunk_pairs(
    a: np.ndarray,
    g: np.ndarray,
    ta: np.ndarray,
    first: np.ndarray,
    size: np.ndarray,
    srec: np.ndarray,
    st: np.ndarray,
    min_matches: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pairs of anchor landmarks (record a, hash group g, frame ta) against the index
    (srec, st: the landmarks sorted by hash; group g at first[g], size[g] of them)."""
    anchor = g >= 0  # dropped hashes (in too many records) are no anchors
    a, g, ta = a[anchor], g[anchor], ta[anchor]
    lo, cnt = first[g], size[g]
    total = int(cnt.sum())
    # every posting of every anchor landmark: lo + 0, 1, ..., cnt - 1
    idx = np.repeat(lo - np.cumsum(cnt) + cnt, cnt) + np.arange(total)
    b, tb = srec[idx], st[idx]
    a_rep, ta_rep = np.repeat(a, cnt), np.repeat(ta, cnt)
    later = b > a_rep
    dt = tb[later].astype(np.int64) - ta_rep[later] + _DT_BIAS
    key = (
        (a_rep[later].astype(np.uint64) << np.uint64(_REC_BITS + _DT_BITS))
        | (b[later].astype(np.uint64) << np.uint64(_DT_BITS))
        | dt.astype(np.uint64)
    )
    del idx, b, tb, a_rep, ta_rep, later, dt
    keys, c = np.unique(key, return_counts=True)
    del key
    e = np.empty(0, np.int64)
    if not len(keys):
        return e, e, e
    pair = keys >> np.uint64(_DT_BITS)
    # a pair with min_matches over three neighbouring offsets has a third of them at one
    starts = _starts(pair)
    top = np.maximum.reduceat(c, starts)
    near = np.repeat(top >= -(-min_matches // 3), np.diff(np.r_[starts, len(pair)]))
    keys, c = keys[near], c[near]
    if not len(keys):
        return e, e, e
    one = np.uint64(1)
    centres = np.unique(np.concatenate([keys - one, keys, keys + one]))
    sums = (
        _count_at(keys, c, centres - one)
        + _count_at(keys, c, centres)
        + _count_at(keys, c, centres + one)
    ).astype(np.int64)
    pair = centres >> np.uint64(_DT_BITS)
    starts = _starts(pair)
    matched = np.maximum.reduceat(sums, starts)
    pair = pair[starts]
    ok = matched >= min_matches
    pair, matched = pair[ok], matched[ok]
    rec_mask = np.uint64((1 << _REC_BITS) - 1)
    return (
        (pair >> np.uint64(_REC_BITS)).astype(np.int64),
        (pair & rec_mask).astype(np.int64),
        matched.astype(np.int64),
    )


def _starts(ordered: np.ndarray) -> np.ndarray:
    """Where each run of equal values of a sorted array begins."""
    return np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])


def _count_at(keys: np.ndarray, counts: np.ndarray, where: np.ndarray) -> np.ndarray:
    """counts at `where` (0 where a key is absent); keys sorted."""
    pos = np.searchsorted(keys, where)
    pos_c = np.minimum(pos, len(keys) - 1)
    return np.where(keys[pos_c] == where, counts[pos_c], 0)
