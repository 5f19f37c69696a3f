"""BioVITA-Bench scoring: Top-k per subset, level and direction, per class, ties; the JSON report.

Scoring (docs/design.md, "Bench format"): a query's candidate taxon scores the maximum cosine
similarity between the query and the items of the candidate's target group. Ties are scored by
a random order among the tied candidates, in expectation (never in the correct taxon's favour):
with g candidates scoring strictly higher than the correct one and t others scoring the same, the
query's rank is uniform on g+1 .. g+t+1, so it counts P(rank <= k) = clip(k - g, 0, t+1) / (t+1)
towards Top-k (1 or 0 without ties, as the official code; 1/C for a collapsed model). `n_tied`
per task counts the queries with a tie, and a warning names tasks where more than
TIE_WARN_SHARE of the queries tie (collapsed or low-precision embeddings). A k at or above the
task's number of candidates is not meaningful (every query hits): its Top-k is None (null in
eval.json, `n/a` in tables and the plot).

Two vectorised ways to score a task, with identical results (no Python loop per query):

- `dense`: one matrix product, queries x the target items the task references (in query chunks
  that bound memory), gathered into a padded (queries, candidates, group) index with a mask and
  max-reduced. The default on GPUs, where the product is cheap.
- `grouped`: BioVITA-Bench gives each candidate taxon one fixed group per task, so each taxon's
  group is multiplied by just the queries that list it (batched products over chunks of taxa of
  similar sizes): only the similarities needed, about 100 x group size per query instead of the
  whole pool. The default on CPUs (about 3x faster at paper scale); a file whose groups differ
  between rows of one taxon falls back to `dense`.

Text: the text of a text item at level L is the text index's column L (scientific names). The
common-name variant (species level only: genus and family have no common name) uses
`common_name`, falling back to the scientific name where a species has none.
"""

from __future__ import annotations

import contextlib
import json
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import torch
import torch.nn.functional as F

from biovita_data.curate.bench.csv_layout import (
    LEVELS,
    TASKS,
    OfficialBench,
    Task,
)
from biovita_model.eval.subsets import Layout, load_bench

KS = (1, 5, 10)
COMMON = "common_name"
TEXT_COLUMNS = ("species", "genus", "family", COMMON)
UNKNOWN_CLASS = "unknown"
TIES = (
    "expected under a random order of tied candidates: with g candidates scoring higher and t "
    "others tied with the correct one, a query counts clip(k - g, 0, t + 1) / (t + 1) to Top-k"
)
TIE_WARN_SHARE = 0.01  # warn when more than this share of a task's queries tie
Method = Literal["auto", "grouped", "dense"]
GROUPED_CPU_THREADS = 1  # measured (benchmarks/README.md, eval_speed)
_CHUNK_ELEMENTS = 1 << 25  # similarity / gather elements per query chunk (128 MB of float32)


# ---- inputs ---------------------------------------------------------------------------------


@dataclass
class BenchEmbeddings:
    """Embeddings by index id: row i of `audio` is audio_index id i; text per column."""

    audio: torch.Tensor | np.ndarray
    image: torch.Tensor | np.ndarray
    text: Mapping[str, torch.Tensor | np.ndarray]  # species, genus, family, optional common_name


# ---- the padded index of one task -----------------------------------------------------------


@dataclass
class TaskIndex:
    """One task's rows as arrays: query ids, padded candidate groups, correct positions."""

    query_ids: np.ndarray  # (n,) int64
    targets: np.ndarray  # (n, C, G) int64 target ids (0 where masked)
    mask: np.ndarray  # (n, C, G) bool
    correct: np.ndarray  # (n,) int64: position of the correct taxon among the candidates
    n_candidates: np.ndarray  # (n,) int64
    taxa: np.ndarray  # (n, C) int64 code of each candidate taxon's name (-1: no candidate)
    classes: np.ndarray  # (n,) str: taxon_class of the query's taxon

    @property
    def size(self) -> int:
        """Number of queries."""
        return int(self.query_ids.size)


def _arrow(series: pl.Series) -> pa.Array:
    arr = series.to_arrow()
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def _lengths(arr: pa.Array, what: str) -> np.ndarray:
    lens = pc.list_value_length(arr)
    if lens.null_count:
        raise ValueError(f"null {what}")
    return lens.to_numpy(zero_copy_only=False).astype(np.int64)


def task_index(df: pl.DataFrame) -> TaskIndex:
    """Build the padded index of one task's rows (columns of BENCH_TASK)."""
    n = df.height
    ids = _arrow(df["candidates_target_ids"])
    n_cand = _lengths(ids, "candidates_target_ids")
    groups = pc.list_flatten(ids)
    group_len = _lengths(groups, "candidate group")
    values = pc.list_flatten(groups).to_numpy(zero_copy_only=False).astype(np.int64)
    taxa = _arrow(df["candidates_taxa"])
    if not np.array_equal(_lengths(taxa, "candidates_taxa"), n_cand):
        raise ValueError("candidates_taxa and candidates_target_ids differ in length")
    c_max = int(n_cand.max()) if n else 0
    g_max = int(group_len.max()) if group_len.size else 0
    row = np.repeat(np.arange(n), n_cand)
    pos = np.arange(row.size) - np.repeat(np.cumsum(n_cand) - n_cand, n_cand)
    cand_of_value = np.repeat(np.arange(row.size), group_len)
    slot = np.arange(values.size) - np.repeat(np.cumsum(group_len) - group_len, group_len)
    targets = np.zeros(n * c_max * g_max, dtype=np.int64)
    mask = np.zeros(n * c_max * g_max, dtype=bool)
    where = (row * c_max + pos)[cand_of_value] * g_max + slot
    targets[where] = values
    mask[where] = True
    flat_taxa = pc.list_flatten(taxa).cast(pa.string())
    codes = np.full(n * c_max, -1, dtype=np.int64)
    encoded = pc.dictionary_encode(flat_taxa).indices
    codes[row * c_max + pos] = encoded.to_numpy(zero_copy_only=False).astype(np.int64)
    correct_rep = pa.array(np.repeat(df["correct_taxon"].to_numpy(), n_cand), pa.string())
    hit = pc.equal(flat_taxa, correct_rep).fill_null(False).to_numpy(zero_copy_only=False)
    correct = np.full(n, -1, dtype=np.int64)
    correct[row[hit]] = pos[hit]
    if (correct < 0).any():
        raise ValueError("correct_taxon missing from candidates_taxa")
    classes = df["taxon_class"].fill_null(UNKNOWN_CLASS).to_numpy().astype(str)
    return TaskIndex(
        query_ids=df["query_payload_id"].to_numpy().astype(np.int64),
        targets=targets.reshape(n, c_max, g_max),
        mask=mask.reshape(n, c_max, g_max),
        correct=correct,
        n_candidates=n_cand,
        taxa=codes.reshape(n, c_max),
        classes=classes,
    )


# ---- scoring --------------------------------------------------------------------------------


def _as_tensor(x: torch.Tensor | np.ndarray, device: torch.device | None) -> torch.Tensor:
    t = torch.as_tensor(x)
    if device is not None:
        t = t.to(device)
    return F.normalize(t.float(), dim=-1)


def _dense_scores(queries: torch.Tensor, targets: torch.Tensor, index: TaskIndex) -> torch.Tensor:
    """Candidate scores (n, C): queries x referenced targets, gathered into the padded index."""
    device = queries.device
    n, c, g = index.targets.shape
    if g == 0 or targets.shape[0] == 0:
        return queries.new_full((n, c), -math.inf)
    used = np.zeros(targets.shape[0], dtype=bool)
    used[index.targets[index.mask]] = True
    if used.mean() > 0.5:  # copying the referenced rows would cost more than it saves
        used[:] = True
        t, local_np = targets, index.targets
    else:
        t = targets[torch.from_numpy(np.flatnonzero(used)).to(device)]
        local_np = (np.cumsum(used) - 1)[index.targets].clip(min=0)
    local = torch.from_numpy(local_np.reshape(n, c * g)).to(device)
    mask = torch.from_numpy(index.mask.reshape(n, c * g)).to(device)
    step = max(1, min(n, _CHUNK_ELEMENTS // max(t.shape[0], c * g)))
    sims = queries.new_empty((step, t.shape[0]))  # reused: fresh pages are slow to fault in
    picked = queries.new_empty((step, c * g))
    scores = queries.new_empty((n, c))
    for a in range(0, n, step):
        b = min(step, n - a)
        torch.matmul(queries[a : a + b], t.T, out=sims[:b])
        torch.gather(sims[:b], 1, local[a : a + b], out=picked[:b])
        picked[:b].masked_fill_(~mask[a : a + b], -math.inf)
        torch.amax(picked[:b].view(b, c, g), dim=2, out=scores[a : a + b])
    return scores


def _grouped_scores(
    queries: torch.Tensor, targets: torch.Tensor, index: TaskIndex
) -> torch.Tensor | None:
    """Candidate scores (n, C) computed per candidate taxon: only the similarities needed.

    Each taxon's group is scored against just the queries that list it, in batched matrix
    products over chunks of taxa of similar group sizes (little padding). Returns None when a
    taxon's group differs between rows (not the BioVITA-Bench layout), for the dense path.
    """
    device = queries.device
    n, c, g = index.targets.shape
    dim = queries.shape[1]
    pair_q, pair_c = np.nonzero(index.taxa >= 0)
    code = index.taxa[pair_q, pair_c]
    _, first, inv = np.unique(code, return_index=True, return_inverse=True)
    rep_t = index.targets[pair_q[first], pair_c[first]]  # (taxa, G) each taxon's group
    rep_m = index.mask[pair_q[first], pair_c[first]]
    if not (
        np.array_equal(index.mask[pair_q, pair_c], rep_m[inv])
        and np.array_equal(index.targets[pair_q, pair_c], rep_t[inv])
    ):
        return None
    glen = rep_m.sum(axis=1)
    qcount = np.bincount(inv, minlength=first.size)
    by_taxon = np.argsort(inv, kind="stable")  # pair ids, taxon by taxon
    start = np.cumsum(qcount) - qcount
    order = np.lexsort((qcount, glen))  # taxa by group size, then by number of queries
    step = max(1, min(128, _CHUNK_ELEMENTS // ((int(qcount.max()) + max(g, 1)) * dim)))
    chunks = []
    for a in range(0, order.size, step):
        gs = order[a : a + step]
        qmax, gmax = int(qcount[gs].max()), int(glen[gs].max())
        if gmax:
            chunks.append((gs, qmax, gmax))
    scores = torch.full((n, c), -math.inf, device=device)
    if not chunks:
        return scores
    # buffers reused across chunks: fresh pages are slow to fault in
    q_buf = queries.new_empty((max(len(gs) * q for gs, q, _ in chunks), dim))
    t_buf = queries.new_empty((max(len(gs) * t for gs, _, t in chunks), dim))
    s_buf = queries.new_empty(max(len(gs) * q * t for gs, q, t in chunks))
    flat_scores = scores.view(-1)
    pair_flat = torch.from_numpy(pair_q * c + pair_c).to(device)
    q_rows = torch.from_numpy(pair_q).to(device)
    for gs, qmax, gmax in chunks:
        b = len(gs)
        k = np.arange(qmax)
        ok = k[None, :] < qcount[gs][:, None]  # (b, qmax) real (query, taxon) pairs
        pairs = torch.from_numpy(by_taxon[np.where(ok, start[gs][:, None] + k[None, :], 0)])
        pairs = pairs.to(device)
        qg = torch.index_select(queries, 0, q_rows[pairs.view(-1)], out=q_buf[: b * qmax])
        tids = torch.from_numpy(rep_t[gs, :gmax].reshape(-1)).to(device)
        tg = torch.index_select(targets, 0, tids, out=t_buf[: b * gmax])
        sims = s_buf[: b * qmax * gmax].view(b, qmax, gmax)
        torch.bmm(qg.view(b, qmax, dim), tg.view(b, gmax, dim).transpose(1, 2), out=sims)
        tmask = torch.from_numpy(rep_m[gs, :gmax]).to(device)
        sims.masked_fill_(~tmask[:, None, :], -math.inf)
        best = sims.amax(dim=2)
        okt = torch.from_numpy(ok).to(device)
        flat_scores[pair_flat[pairs[okt]]] = best[okt]
    return scores


def rank_queries(
    queries: torch.Tensor, targets: torch.Tensor, index: TaskIndex, method: Method = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rank, tied) per query: rank = 1 + #candidates scoring > the correct one.

    `queries` holds the query embeddings in row order of the task (n, D), `targets` every item of
    the target modality by id (m, D); both L2-normalised. `dense` multiplies the queries by every
    referenced target and gathers the padded (n, C, G) index; `grouped` computes only the
    similarities the candidates need (each taxon one group per task, as in BioVITA-Bench).
    `auto`: grouped on CPU (dense where groups differ between rows), dense on other devices.
    """
    device = queries.device
    n = index.size
    if n == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty
    if method not in ("auto", "grouped", "dense"):
        raise ValueError(f"method must be 'auto', 'grouped' or 'dense', not {method!r}")
    scores = None
    if method == "grouped" or (method == "auto" and device.type == "cpu"):
        scores = _grouped_scores(queries, targets, index)
        if scores is None and method == "grouped":
            raise ValueError("a candidate taxon's group differs between rows: use method='dense'")
    if scores is None:
        scores = _dense_scores(queries, targets, index)
    right = scores.gather(1, torch.from_numpy(index.correct).to(device)[:, None])
    return (scores > right).sum(dim=1) + 1, (scores == right).sum(dim=1) - 1


def hit_share(ranks: np.ndarray, tied: np.ndarray, k: int) -> np.ndarray:
    """Per query, P(rank <= k) when the correct candidate and its `tied` equals are ordered at
    random after the rank - 1 candidates scoring higher (1 or 0 without ties)."""
    above = ranks.astype(np.float64) - 1
    group = tied.astype(np.float64) + 1
    return np.clip(k - above, 0, group) / group


def topk(
    ranks: np.ndarray, tied: np.ndarray, ks: Sequence[int], n_candidates: int
) -> dict[str, float | None]:
    """Top-k per k (ties in expectation); None where k >= n_candidates (every query hits)."""
    return {
        f"top{k}": None if k >= n_candidates else float(hit_share(ranks, tied, k).mean())
        for k in ks
    }


def _task_entry(
    ranks: np.ndarray, tied: np.ndarray, index: TaskIndex, ks: Sequence[int]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    n_cand = int(index.n_candidates.max())
    entry: dict[str, Any] = topk(ranks, tied, ks, n_cand)
    entry["n_queries"] = int(ranks.size)
    entry["n_candidates"] = n_cand
    entry["n_tied"] = int((tied > 0).sum())
    per_class: dict[str, dict[str, Any]] = {}
    names, inverse = np.unique(index.classes, return_inverse=True)
    for i, name in enumerate(names.tolist()):
        sel = inverse == i
        per_class[name] = {**topk(ranks[sel], tied[sel], ks, n_cand), "n_queries": int(sel.sum())}
    return entry, per_class


def tie_warning(key: str, entry: Mapping[str, Any]) -> str | None:
    """A warning when more than TIE_WARN_SHARE of a task's queries tie, else None."""
    n, tied = entry["n_queries"], entry["n_tied"]
    if n == 0 or tied <= TIE_WARN_SHARE * n:
        return None
    return (
        f"{key}: {tied} of {n} queries tie with another candidate ({100 * tied / n:.1f} %): "
        "collapsed or low-precision embeddings? (ties are scored by their expected rank)"
    )


def _check_sizes(bench: OfficialBench, emb: BenchEmbeddings, columns: Sequence[str]) -> None:
    sizes = {m: bench.index(m).height for m in ("audio", "image", "text")}
    got = {"audio": emb.audio.shape[0], "image": emb.image.shape[0]}
    got.update({f"text[{c}]": emb.text[c].shape[0] for c in columns})
    for name, rows in got.items():
        want = sizes[name.split("[")[0]]
        if rows != want:
            raise ValueError(f"{name} embeddings have {rows} rows, the bench index {want}")


def summarize(results: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mean Top-k over the directions of each subset/level (the paper's headline numbers)."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for key, entry in results.items():
        groups.setdefault(key.rsplit("/", 1)[0], []).append(entry)
    out: dict[str, dict[str, Any]] = {}
    for key, entries in groups.items():
        ks = [k for k in entries[0] if k.startswith("top")]
        out[key] = {}
        for k in ks:  # the mean over the directions where k is meaningful
            vals = [e[k] for e in entries if e.get(k) is not None]
            out[key][k] = float(np.mean(vals)) if vals else None
        out[key]["n_tasks"] = len(entries)
    return out


def scorer_threads(method: Method, device: torch.device | None, threads: int | None) -> int:
    """Torch threads for scoring: `threads`, else 1 for the grouped scorer on CPU (its batched
    small products lose to thread start-up: benchmarks/README.md, eval_speed), else torch's."""
    if threads is not None:
        return max(1, int(threads))
    on_cpu = device is None or device.type == "cpu"
    if on_cpu and method in ("auto", "grouped"):
        return GROUPED_CPU_THREADS
    return torch.get_num_threads()


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch.set_num_threads(n) inside the block, the previous count after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def evaluate_bench(
    bench: Path | OfficialBench,
    embeddings: BenchEmbeddings,
    *,
    subset: str | None = None,
    layout: Layout = "auto",
    ks: Sequence[int] = KS,
    device: str | torch.device | None = None,
    method: Method = "auto",
    threads: int | None = None,
) -> dict[str, Any]:
    """Score one bench folder (one subset) from embeddings per index id.

    `threads`: torch CPU threads while scoring; None: `scorer_threads` (measured: the grouped
    scorer's many small products run fastest on one thread).

    Returns `{"results": {"<subset>/<level>/<DIR>": {"top1", "top5", "top10", "n_queries",
    "n_candidates", "n_tied"}}, "per_class": {key: {class: {...}}}, "summary": {...},
    "common_name": {...same, species-level text tasks...}, "settings": {...}, "warnings": [...]}`;
    tasks without queries are left out; a Top-k with k >= the candidates is None. The
    common-name section appears when embeddings.text has `common_name`.
    """
    if subset is None:
        subset = Path(bench).name if isinstance(bench, (str, Path)) else "bench"
    if not isinstance(bench, OfficialBench):
        bench = load_bench(Path(bench), layout)
    common = COMMON in embeddings.text
    _check_sizes(bench, embeddings, [*LEVELS, *([COMMON] if common else [])])
    dev = torch.device(device) if device is not None else None
    media = {m: _as_tensor(getattr(embeddings, m), dev) for m in ("audio", "image")}
    text_cols = [*LEVELS, *([COMMON] if common else [])]
    text = {c: _as_tensor(embeddings.text[c], dev) for c in text_cols}
    by_task = bench.tasks.partition_by("taxon_level", "task", as_dict=True, maintain_order=True)
    sections: dict[str, dict[str, Any]] = {
        "main": {"results": {}, "per_class": {}},
        COMMON: {"results": {}, "per_class": {}},
    }
    notes: list[str] = []
    for level in LEVELS:
        for task in TASKS:
            df = by_task.get((level, task.code))
            if df is None or df.height == 0:
                continue
            index = task_index(df)
            variants = [("main", level)]
            if common and level == "species" and "text" in (task.query, task.target):
                variants.append((COMMON, COMMON))
            for section, column in variants:
                with torch_threads(scorer_threads(method, dev, threads)):
                    ranks, tied = _score(task, index, media, text[column], method)
                entry, per_class = _task_entry(ranks, tied, index, ks)
                key = f"{subset}/{level}/{task.code}"
                sections[section]["results"][key] = entry
                sections[section]["per_class"][key] = per_class
                note = tie_warning(key if section == "main" else f"{key} ({COMMON})", entry)
                if note:
                    warnings.warn(note, stacklevel=2)
                    notes.append(note)
    report: dict[str, Any] = dict(sections["main"])
    report["warnings"] = notes
    report["notes"] = list(bench.notes)  # e.g. extra columns the CSV reader kept
    report["summary"] = summarize(report["results"])
    if common:
        report[COMMON] = {**sections[COMMON], "summary": summarize(sections[COMMON]["results"])}
    report["settings"] = {"ks": list(ks), "ties": TIES, "score": "max cosine over the group"}
    return report


def _score(
    task: Task,
    index: TaskIndex,
    media: dict[str, torch.Tensor],
    text: torch.Tensor,
    method: Method,
) -> tuple[np.ndarray, np.ndarray]:
    def modality(name: str) -> torch.Tensor:
        return text if name == "text" else media[name]

    source = modality(task.query)
    q_ids = torch.from_numpy(index.query_ids).to(source.device)
    if index.size and (int(q_ids.max()) >= source.shape[0] or int(q_ids.min()) < 0):
        raise ValueError(f"{task.code}: query_payload_id outside the {task.query} index")
    target = modality(task.target)
    if index.mask.any() and int(index.targets[index.mask].max()) >= target.shape[0]:
        raise ValueError(f"{task.code}: candidates_target_ids outside the {task.target} index")
    ranks, tied = rank_queries(source[q_ids], target, index, method)
    return ranks.cpu().numpy(), tied.cpu().numpy()


def merge_reports(reports: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Combine reports of several subsets (seen, unseen) into one, with a joint summary."""
    out: dict[str, Any] = {"results": {}, "per_class": {}}
    common: dict[str, Any] = {"results": {}, "per_class": {}}
    for r in reports:
        out["results"].update(r["results"])
        out["per_class"].update(r["per_class"])
        if COMMON in r:
            common["results"].update(r[COMMON]["results"])
            common["per_class"].update(r[COMMON]["per_class"])
    out["summary"] = summarize(out["results"])
    out["warnings"] = [w for r in reports for w in r.get("warnings", [])]
    out["notes"] = [n for r in reports for n in r.get("notes", [])]
    if common["results"]:
        out[COMMON] = {**common, "summary": summarize(common["results"])}
    if reports:
        out["settings"] = dict(reports[0].get("settings", {}))
    return out


def write_report(report: Mapping[str, Any], path: Path) -> Path:
    """Write the report as JSON (sorted keys, indented)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return path
