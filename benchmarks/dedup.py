"""Dedup candidates side by side on planted copies of the sample world's media.

Audio: for `--recordings` of the world's recordings, `--copies` edited copies each (trimmed or
padded 0.5-3 s, +-6 dB, resampled, MP3 at another bitrate / FLAC / WAV: sample/duplicates.py).
A method finds a pair (two files of one original) or merges a wrong one (different recordings:
other recordings of the same species are the near misses). Methods: the landmark hash with
dedup's thresholds (biovita_data.media.dedup.audio_pairs) and a mel-statistics embedding
(mean + std of 64 log-mel bands) at a cosine threshold; Chromaprint where `fpcalc` is installed
(Debian: libchromaprint-tools), compared as AcoustID does: the bit error rate at the best
alignment.
Photos: `--photos` photos, one copy each (resized, recompressed, 3 in 10 cropped 5 %): PDQ
(whole + centre, dedup's threshold) against imagehash's pHash (64 bits) where installed.
Cost: materialize's per-file step (media/process: verify by decoding, convert) with and without
the fingerprints it makes from that decode (`fingerprint_share_of_materialize`), and the
fingerprint alone against decoding the same bytes.
Prints a table to stderr and, with --json, one JSON line to stdout.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import polars as pl
from PIL import Image

from biovita_data.media import dedup
from biovita_data.media import fingerprint as fp
from biovita_data.media.audio import store_audio
from biovita_data.media.image import store_image
from biovita_data.sample import duplicates as plants
from biovita_data.sample.world import World


def _prf(found: set, truth: set, universe: int) -> dict:
    tp = len(found & truth)
    return {
        "precision": round(tp / len(found), 4) if found else 1.0,
        "recall": round(tp / len(truth), 4) if truth else 1.0,
        "false_pairs": len(found - truth),
        "pairs_true": len(truth),
        "files": universe,
    }


def _mel_embedding(mono: np.ndarray) -> np.ndarray:
    spec = fp.spectrogram(mono) ** 2
    edges = np.geomspace(2, spec.shape[1] - 1, 65).astype(int)
    bands = np.stack([spec[:, a:b].sum(1) for a, b in itertools.pairwise(edges)], 1)
    logmel = np.log(bands + 1e-9)
    logmel -= logmel.mean()  # gain-independent
    v = np.concatenate([logmel.mean(0), logmel.std(0)])
    return v / np.linalg.norm(v)


def _chromaprint(data: bytes) -> list[int] | None:
    exe = shutil.which("fpcalc")
    if not exe:
        return None
    with tempfile.NamedTemporaryFile(suffix=".bin") as f:
        f.write(data)
        f.flush()
        got = subprocess.run([exe, "-raw", "-json", f.name], capture_output=True, text=True)
    if not got.stdout.strip():  # it exits 1 after a complaint at the end of many MP3s
        return []
    return json.loads(got.stdout).get("fingerprint") or []


CHROMA_BER = (0.1, 0.2, 0.3)  # bit error rates at the best alignment, as AcoustID compares
CHROMA_SHIFT = 32  # alignments tried: +-32 items (about +-4 s: trims and pads are <= 3 s)
CHROMA_OVERLAP = 16  # items (about 2 s) two fingerprints must overlap at an alignment


def _chroma_ber(a: np.ndarray, b: np.ndarray) -> float:
    """Chromaprint's comparison: the least share of differing bits over the alignments tried
    (1.0 when the fingerprints never overlap by CHROMA_OVERLAP items)."""
    best = 1.0
    for shift in range(-CHROMA_SHIFT, CHROMA_SHIFT + 1):
        x, y = (a[shift:], b) if shift >= 0 else (a, b[-shift:])
        n = min(len(x), len(y))
        if n < CHROMA_OVERLAP:
            continue
        diff = np.bitwise_xor(x[:n], y[:n])
        bits = np.unpackbits(diff.view(np.uint8)).sum()
        best = min(best, bits / (32 * n))
    return float(best)


def audio(world: World, n: int, copies: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    recs = [r for r in world.recordings if r.flaw is None and 3 <= r.duration_s < 40][:n]
    files, decode_s, fp_s, store = [], 0.0, 0.0, {False: 0.0, True: 0.0}
    for r in recs:
        data = world.audio_bytes(r.source, r.id)
        versions = [data] + [
            plants.edit_audio(data, plants.draw_audio_edit(rng, r.duration_s, False))
            for _ in range(copies)
        ]
        for v in versions:
            for fingerprints in (False, True):  # materialize's step, without and with them
                t = time.process_time()
                store_audio(v, 60.0, fingerprints)
                store[fingerprints] += time.process_time() - t
            t = time.process_time()
            pcm = fp.decode_audio(v)
            t1 = time.process_time()
            f = fp.audio_fingerprint(*pcm)
            t2 = time.process_time()
            decode_s, fp_s = decode_s + t1 - t, fp_s + t2 - t1
            files.append((r.id, r.species_index, v, pcm, f))
    truth = {(i, j) for i, j in itertools.combinations(range(len(files)), 2)
             if files[i][0] == files[j][0]}  # fmt: skip
    prints = pl.DataFrame(
        [{"i": k, "hashes": None if f.hashes is None else f.hashes.astype(np.int64).tolist(),
          "times": None if f.times is None else f.times.astype(np.int64).tolist(),
          "n": 0 if f.hashes is None else len(f.hashes)} for k, (*_, f) in enumerate(files)],
        schema_overrides={"hashes": pl.List(pl.Int64), "times": pl.List(pl.Int64)},
    )  # fmt: skip
    landmark = {(a, b) for a, b, *_ in dedup.audio_pairs(prints).iter_rows()}
    out = {"landmark": _prf(landmark, truth, len(files))}
    emb = np.stack([_mel_embedding(fp.to_mono(*pcm)) for _, _, _, pcm, _ in files])
    cos = emb @ emb.T
    for thr in (0.98, 0.995):
        found = {(i, j) for i, j in zip(*np.nonzero(np.triu(cos >= thr, 1)), strict=True)}
        out[f"mel_cosine_{thr}"] = _prf({(int(i), int(j)) for i, j in found}, truth, len(files))
    same_species = {(i, j) for i, j in itertools.combinations(range(len(files)), 2)
                    if files[i][1] == files[j][1] and files[i][0] != files[j][0]}  # fmt: skip
    for name in list(out):
        found = landmark if name == "landmark" else None
        if found is not None:
            out[name]["near_miss_merged"] = len(found & same_species)
    out["near_miss_pairs"] = len(same_species)
    seconds = sum(r.duration_s for r in recs) * (1 + copies)
    out["cpu"] = {
        "audio_s": round(seconds, 1),
        "decode_ms_per_audio_s": round(1000 * decode_s / seconds, 3),
        "fingerprint_ms_per_audio_s": round(1000 * fp_s / seconds, 3),
        "fingerprint_vs_decode": round(fp_s / decode_s, 2),
        "materialize_ms_per_audio_s": round(1000 * store[False] / seconds, 3),
        "materialize_fingerprints_ms_per_audio_s": round(1000 * store[True] / seconds, 3),
        "fingerprint_share_of_materialize": round(store[True] / store[False] - 1, 3),
    }
    if _chromaprint(files[0][2]) is None:
        out["chromaprint"] = "fpcalc not installed"
        return out
    chroma = [np.array(_chromaprint(v) or [], np.int64).astype(np.uint32) for *_, v, _, _ in files]
    ber = {(i, j): _chroma_ber(chroma[i], chroma[j])
           for i, j in itertools.combinations(range(len(files)), 2)}  # fmt: skip
    for thr in CHROMA_BER:
        found = {pair for pair, e in ber.items() if e <= thr}
        out[f"chromaprint_ber_{thr}"] = _prf(found, truth, len(files))
        out[f"chromaprint_ber_{thr}"]["near_miss_merged"] = len(found & same_species)
    return out


def photos(world: World, n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    items = []
    for p in [p for p in world.photos if p.flaw is None][:n]:
        data = world.photo_bytes(p.id)
        copy = plants.edit_photo(data, plants.draw_photo_edit(rng, exact=False))
        items += [(p.id, p.species_index, data), (p.id, p.species_index, copy)]
    t = time.process_time()
    prints = [fp.image_fingerprint(Image.open(io.BytesIO(d))) for _, _, d in items]
    pdq_s = time.process_time() - t
    store = {}
    for fingerprints in (False, True):  # materialize's step (short side 512), without and with
        t = time.process_time()
        for _, _, d in items:
            store_image(d, 512, 90, fingerprints)
        store[fingerprints] = time.process_time() - t
    ok = [k for k, f in enumerate(prints) if f.pdq]
    truth = {(i, j) for i, j in itertools.combinations(ok, 2) if items[i][0] == items[j][0]}
    found = {(i, j) for i, j in itertools.combinations(ok, 2)
             if fp.pdq_distance(prints[i].pdq, prints[j].pdq) <= dedup.PDQ_THRESHOLD}  # fmt: skip
    out = {"pdq": _prf(found, truth, len(ok)), "no_pdq": len(items) - len(ok)}
    out["pdq"]["cpu_ms_per_photo"] = round(1000 * pdq_s / len(items), 2)
    out["cpu"] = {
        "materialize_ms_per_photo": round(1000 * store[False] / len(items), 2),
        "materialize_fingerprints_ms_per_photo": round(1000 * store[True] / len(items), 2),
        "fingerprint_share_of_materialize": round(store[True] / store[False] - 1, 3),
    }
    try:
        import imagehash
    except ImportError:
        out["phash"] = "imagehash not installed"
        return out
    hashes = [imagehash.phash(Image.open(io.BytesIO(d))) for _, _, d in items]
    for thr in (8, 12, 16):
        found = {(i, j) for i, j in itertools.combinations(ok, 2) if hashes[i] - hashes[j] <= thr}
        out[f"phash_{thr}"] = _prf(found, truth, len(ok))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="tiny", choices=("tiny", "default"))
    ap.add_argument("--recordings", type=int, default=30)
    ap.add_argument("--copies", type=int, default=1, help="copies per original (10: the 10x set)")
    ap.add_argument("--photos", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    world = World(args.size)
    t = time.monotonic()
    result = {
        "bench": "dedup",
        "world": args.size,
        "copies": args.copies,
        "audio": audio(world, args.recordings, args.copies, args.seed),
        "image": photos(world, args.photos, args.seed),
    }
    result["seconds"] = round(time.monotonic() - t, 1)
    for modality in ("audio", "image"):
        for name, v in result[modality].items():
            print(f"{modality:6s} {name:18s} {v}", file=sys.stderr)
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
