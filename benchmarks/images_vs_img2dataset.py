"""Photo materialize throughput against img2dataset: the same URLs, resize, processes, machine.

N photo URLs (default 2,000) are served from a stdlib ThreadingHTTPServer on 127.0.0.1 in a child
process: DISTINCT sample-world photos rendered as JPEG (quality 90), each URL's bytes made unique
by a JPEG comment segment carrying its number (so no two downloads hash alike, and every one is
decoded in full). Their sizes (`--sizes`): `inaturalist` (the default) cycles through the
`original_dimensions` of the 38 distinct photos in real iNaturalist API v1 responses
(INATURALIST_ORIGINALS: 509 x 460 up to 2048 x 1739, 22 of them with a short side of 1,024 or
more), because `original` is the size `fetch` asks iNaturalist for; `WxH` serves every photo at
one size (`1024x768`: this benchmark's figures before 2026-12-07). Both tools download all N,
decode, resize so the short side is 512 px (never upscaling), re-encode JPEG at quality 90, hash
(sha256) and write Parquet shards of 500:

- ours: `biovita_data.media.materialize` (engine local: download threads + `--processes` worker
  processes, without content fingerprints: img2dataset makes none) over an image manifest
  listing the URLs;
- img2dataset: `download(..., processes_count=--processes, thread_count=16,
  resize_mode="keep_ratio", resize_only_if_bigger=True, output_format="parquet",
  compute_hash="sha256")`, run by `--img2dataset-python` (default: $IMG2DATASET_PYTHON or this
  interpreter), e.g. a virtual environment with `pip install img2dataset` (its pins, such as
  albumentations<2 and pandas<3, may not suit the project's environment).

Each tool runs in a fresh interpreter of its own and is timed there (imports excluded, worker
start-up included), the two alternating, best of --repeat. Also reported: CPU milliseconds per
image of each tool's process tree (the server excluded), sampled from /proc; on a busy machine
wall time follows the scheduler's share (img2dataset runs 16 busy threads per process), CPU time
much less: `ratio_cpu` = img2dataset's CPU ms per image / ours (each tool's least CPU over the
rounds). Target: ratio_cpu >= 2.0 (and ours >= 1.2 x img2dataset's images/s).

Where the time goes (`stages`): each tool's codec steps alone on the DISTINCT photos, in one
process, a few times each: ours (`store_image`'s steps for an RGB JPEG: Pillow reads the
header, OpenCV decodes at the JPEG's DCT scale nearest above 512 px, resizes (bilinear below a
factor of 2) and encodes; and store_image whole) and img2dataset's (OpenCV imdecode,
INTER_AREA resize, imencode, run by its interpreter); the rest of a tool's CPU per image is
download, hashing, writing and start-up. `quality`: PSNR (dB, RGB) and SSIM (luma, 7 x 7
windows) of each tool's stored 512 px JPEG against a reference resize (Pillow LANCZOS of the full
decode, unquantized).
stdout: a summary line, then one JSON line (with --json only the JSON line); stderr: progress.

    python3 benchmarks/images_vs_img2dataset.py [--images 2000] [--processes 2] [--repeat 2]
        [--json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from functools import partial
from pathlib import Path

import numpy as np
from harness import serve

# original_dimensions (width, height) of the 38 distinct photos in iNaturalist API v1 responses
# (observations, an observation with sounds, taxa' default photos), recorded in 2026: iNaturalist
# keeps originals at most 2,048 px on the long side, and most uploads are phone or camera photos.
INATURALIST_ORIGINALS = (
    (509, 460), (551, 473), (640, 480), (756, 567), (781, 925), (790, 557), (795, 1200),
    (800, 600), (800, 640), (800, 714), (819, 797), (832, 704), (1024, 768), (1024, 768),
    (1065, 795), (1080, 1080), (1188, 1188), (1200, 1200), (1280, 960), (1396, 1159),
    (1445, 1057), (1480, 1163), (1536, 2048), (1580, 1064), (1711, 1679), (1724, 1146),
    (2000, 2000), (2048, 1361), (2048, 1364), (2048, 1365), (2048, 1365), (2048, 1365),
    (2048, 1371), (2048, 1536), (2048, 1536), (2048, 1536), (2048, 1536), (2048, 1739),
)  # fmt: skip
DISTINCT = 2 * len(INATURALIST_ORIGINALS)
IMAGE_SIZE = 512
QUALITY = 90
SHARD = 500
TARGET_SPEEDUP = 1.2
TARGET_RATIO_CPU = 2.0
STAGE_REPS = 3
ROOT = Path(__file__).resolve().parents[1]


def photo_sizes(spec: str) -> tuple[tuple[int, int], ...]:
    """`inaturalist` or `WxH` as the sizes the photos cycle through."""
    if spec == "inaturalist":
        return INATURALIST_ORIGINALS
    width, _, height = spec.partition("x")
    if not (width.isdigit() and height.isdigit() and int(width) > 0 and int(height) > 0):
        raise SystemExit(f"--sizes: 'inaturalist' or WIDTHxHEIGHT (such as 1024x768), not {spec!r}")
    return ((int(width), int(height)),)


def photos(sizes: tuple[tuple[int, int], ...]) -> list[bytes]:
    """DISTINCT sample-world photos at `sizes` in turn (seeded: every run serves the same bytes)."""
    from biovita_data.sample import images
    from biovita_data.sample.taxonomy import generate_taxonomy

    species = generate_taxonomy("tiny", 0).species
    return [
        images.render_image(species[i % len(species)].look, width=sizes[i % len(sizes)][0],
                            height=sizes[i % len(sizes)][1], fmt="jpg", seed=1000 + i)
        for i in range(DISTINCT)
    ]  # fmt: skip


def unique(jpeg: bytes, i: int) -> bytes:
    """The same picture with a COM segment naming `i` after SOI: different bytes, same pixels."""
    text = f"benchmark photo {i}".encode()
    return jpeg[:2] + b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text + jpeg[2:]


def bodies(n: int, sizes: tuple[tuple[int, int], ...]) -> list[bytes]:
    """The n served bodies: the DISTINCT photos in turn, each made unique."""
    base = photos(sizes)
    return [unique(base[i % DISTINCT], i) for i in range(n)]


OURS = textwrap.dedent(
    """
    import json, sys, tempfile, time
    from harness import TreeCpu
    from pathlib import Path
    import pyarrow as pa, pyarrow.parquet as pq
    from rich.console import Console
    from biovita_data.crawl.http import HostPolicy, HttpClient
    from biovita_data.media import MaterializeSettings, materialize
    from biovita_data.core.schemas import MEDIA

    if __name__ == "__main__":
        url_file, processes, size, quality, shard = sys.argv[1:6]
        urls = Path(url_file).read_text().split()
        rows = [
            {"source": "inaturalist", "record_id": str(i), "modality": "image",
             "species_id": 1, "scientific_name": "Benchmark photo", "match_kind": "exact",
             "media_url": url, "file_format": "jpg"}
            for i, url in enumerate(urls)
        ]
        with tempfile.TemporaryDirectory(prefix="bench-ours-") as out:
            path = Path(out) / "manifests" / "image.parquet"
            path.parent.mkdir(parents=True)
            pq.write_table(pa.Table.from_pylist(rows, schema=MEDIA), path)
            settings = MaterializeSettings(
                modalities=("image",), workers=int(processes), image_size=int(size),
                jpeg_quality=int(quality), shard_size=int(shard), throttle=False,
                download_threads=16, fingerprints=False,  # img2dataset makes none either
            )
            http = HttpClient({"127.0.0.1": HostPolicy(None, 16)}, throttle=False, retries=0,
                              allow_loopback=True)
            cpu = TreeCpu()
            t0 = time.perf_counter()
            result = materialize(Path(out), settings, console=Console(stderr=True), http=http)
            seconds = time.perf_counter() - t0
            cpu_s = cpu.stop()
        m = result.by_modality("image")
        ok = m.kept + m.failed.get("duplicate", 0)
        print(json.dumps({"seconds": seconds, "ok": ok, "cpu_s": cpu_s}))
    """
)

IMG2DATASET = textwrap.dedent(
    """
    import glob, json, sys, tempfile, time
    from harness import TreeCpu
    import pyarrow.parquet as pq
    from img2dataset import download

    if __name__ == "__main__":
        url_file, processes, size, quality, shard = sys.argv[1:6]
        with tempfile.TemporaryDirectory(prefix="bench-i2d-") as out:
            cpu = TreeCpu()
            t0 = time.perf_counter()
            download(url_list=url_file, input_format="txt", output_folder=out + "/out",
                     output_format="parquet", processes_count=int(processes), thread_count=16,
                     image_size=int(size), resize_mode="keep_ratio", resize_only_if_bigger=True,
                     encode_format="jpg", encode_quality=int(quality), compute_hash="sha256",
                     number_sample_per_shard=int(shard), distributor="multiprocessing",
                     timeout=30, retries=0, enable_wandb=False, disallowed_header_directives=[])
            seconds = time.perf_counter() - t0
            cpu_s = cpu.stop()
            ok = 0
            for f in glob.glob(out + "/out/*.parquet"):
                status = pq.read_table(f, columns=["status"])["status"].to_pylist()
                ok += sum(s == "success" for s in status)
        print(json.dumps({"seconds": seconds, "ok": ok, "cpu_s": cpu_s}))
    """
)


THEIR_STAGES = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    import cv2
    import numpy as np

    cv2.setNumThreads(1)
    folder = Path(sys.argv[1])
    size, quality, reps = (int(x) for x in sys.argv[2:5])
    photos = sorted(folder.glob("*.jpg"))
    spent = {"decode": 0.0, "resize": 0.0, "encode": 0.0}
    for r in range(reps):
        for k, path in enumerate(photos):
            data = path.read_bytes()
            t0 = time.process_time()
            img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
            t1 = time.process_time()
            h, w = img.shape[:2]
            scale = size / min(h, w)
            new = (round(w * scale), round(h * scale))
            img = cv2.resize(img, new, interpolation=cv2.INTER_AREA)
            t2 = time.process_time()
            ok, out = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
            t3 = time.process_time()
            spent["decode"] += t1 - t0; spent["resize"] += t2 - t1; spent["encode"] += t3 - t2
            if r == 0:
                (folder / f"theirs-{k:03d}.out").write_bytes(out.tobytes())
    n = reps * len(photos)
    print(json.dumps({k: 1000 * v / n for k, v in spent.items()}))
    """
)


def our_stages(photos: list[bytes], reps: int) -> tuple[dict[str, float], list[bytes]]:
    """CPU ms per photo of store_image's steps (an RGB JPEG's: OpenCV) and of store_image
    whole; its outputs."""
    import io

    from PIL import Image

    from biovita_data.media.image import dct_scale, opencv, resized, store_image, target_size

    cv2, read_flags = opencv()
    spent = {"decode": 0.0, "resize": 0.0, "encode": 0.0, "store_image": 0.0}
    outputs: list[bytes] = []
    for r in range(reps):
        for data in photos:
            t0 = time.process_time()
            size = Image.open(io.BytesIO(data)).size  # the header: format, size, EXIF
            out_size = target_size(*size, IMAGE_SIZE)
            pixels = cv2.imdecode(
                np.frombuffer(data, np.uint8), read_flags[dct_scale(size, out_size)]
            )
            t1 = time.process_time()
            pixels = resized(pixels, out_size)
            t2 = time.process_time()
            cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, QUALITY])
            t3 = time.process_time()
            stored = store_image(data, IMAGE_SIZE, QUALITY).data
            t4 = time.process_time()
            spent["decode"] += t1 - t0
            spent["resize"] += t2 - t1
            spent["encode"] += t3 - t2
            spent["store_image"] += t4 - t3
            if r == 0:
                outputs.append(stored)
    return {k: 1000 * v / (reps * len(photos)) for k, v in spent.items()}, outputs


def ssim_luma(a: np.ndarray, b: np.ndarray, win: int = 7) -> float:
    """Mean SSIM of two RGB images' luma (BT.601), over win x win uniform windows."""

    def luma(x: np.ndarray) -> np.ndarray:
        return x[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])

    def box(x: np.ndarray) -> np.ndarray:
        c = np.cumsum(np.cumsum(np.pad(x, ((1, 0), (1, 0))), 0), 1)
        return (c[win:, win:] - c[:-win, win:] - c[win:, :-win] + c[:-win, :-win]) / win**2

    x, y = luma(a), luma(b)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = box(x), box(y)
    vx, vy, cxy = box(x * x) - mx**2, box(y * y) - my**2, box(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(s.mean())


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8-range RGB images."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255**2 / mse)


def quality(sources: list[bytes], outputs: list[bytes]) -> dict[str, float]:
    """Mean PSNR / SSIM of stored JPEGs against the reference resize of their sources."""
    import io

    from PIL import Image

    from biovita_data.media.image import target_size

    p, q = [], []
    for src, out in zip(sources, outputs, strict=True):
        full = Image.open(io.BytesIO(src)).convert("RGB")
        size = target_size(*full.size, IMAGE_SIZE)
        ref = np.asarray(full.resize(size, Image.Resampling.LANCZOS))
        got = np.asarray(Image.open(io.BytesIO(out)).convert("RGB"))
        if got.shape != ref.shape:  # a pixel of rounding: compare the common part
            h, w = min(got.shape[0], ref.shape[0]), min(got.shape[1], ref.shape[1])
            got, ref = got[:h, :w], ref[:h, :w]
        p.append(psnr(got, ref))
        q.append(ssim_luma(got, ref))
    return {"psnr_db": round(float(np.mean(p)), 2), "ssim": round(float(np.mean(q)), 4)}


def stages(python: str | None, sizes: tuple[tuple[int, int], ...]) -> dict:
    """Where each tool's codec time goes, and the quality of what it stores."""
    distinct = photos(sizes)
    ours, outputs = our_stages(distinct, STAGE_REPS)
    result: dict = {"ours": {k: round(v, 2) for k, v in ours.items()}}
    result["quality"] = {"ours": quality(distinct, outputs)}
    if python is None:
        return result
    with tempfile.TemporaryDirectory(prefix="bench-stages-") as tmp:
        folder = Path(tmp)
        for k, data in enumerate(distinct):
            (folder / f"{k:03d}.jpg").write_bytes(data)
        script = folder / "stages.py"
        script.write_text(THEIR_STAGES)
        args = [str(folder), str(IMAGE_SIZE), str(QUALITY), str(STAGE_REPS)]
        proc = subprocess.run([python, str(script), *args], capture_output=True, text=True)
        if proc.returncode != 0:
            result["img2dataset_error"] = proc.stderr[-2000:]
            return result
        theirs = json.loads(proc.stdout.strip().splitlines()[-1])
        outs = [(folder / f"theirs-{k:03d}.out").read_bytes() for k in range(len(distinct))]
    result["img2dataset"] = {k: round(v, 2) for k, v in theirs.items()}
    result["quality"]["img2dataset"] = quality(distinct, outs)
    return result


def run_child(python: str, code: str, urls: list[str], processes: int) -> dict:
    """Run one tool in a fresh interpreter (its imports untimed, its pool start-up timed)."""
    with tempfile.TemporaryDirectory(prefix="bench-urls-") as tmp:
        url_file = Path(tmp) / "urls.txt"
        url_file.write_text("\n".join(urls) + "\n")
        script = Path(tmp) / "run.py"  # a file, so spawned/forkserver workers can import main
        script.write_text(code)
        args = [str(url_file), str(processes), str(IMAGE_SIZE), str(QUALITY), str(SHARD)]
        path = os.pathsep.join([str(ROOT), str(ROOT / "benchmarks")])  # biovita, harness
        env = {**os.environ, "PYTHONPATH": path, "NO_ALBUMENTATIONS_UPDATE": "1"}
        proc = subprocess.run(
            [python, str(script), *args], capture_output=True, text=True, cwd=tmp, env=env
        )
    if proc.returncode != 0:
        raise RuntimeError(f"{python} failed: {proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def img2dataset_version(python: str) -> str | None:
    code = "import importlib.metadata as m; print(m.version('img2dataset'))"
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--processes", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--repeat", type=int, default=2)
    default_python = os.environ.get("IMG2DATASET_PYTHON", sys.executable)
    ap.add_argument("--img2dataset-python", default=default_python)
    ap.add_argument("--sizes", default="inaturalist", help="inaturalist or WIDTHxHEIGHT")
    ap.add_argument("--json", action="store_true", help="only the JSON line on stdout")
    args = ap.parse_args()
    sizes = photo_sizes(args.sizes)

    version = img2dataset_version(args.img2dataset_python)
    if version is None:
        print(f"img2dataset is not importable by {args.img2dataset_python}", file=sys.stderr)
    parent, child = mp.Pipe()
    server = mp.get_context("spawn").Process(
        target=serve,
        args=(child, partial(bodies, sizes=sizes), args.images, "image/jpeg"),
        daemon=True,
    )
    server.start()
    root, mean_bytes = parent.recv()
    urls = [f"{root}/photos/{i}.jpg" for i in range(args.images)]
    load = os.getloadavg()[0]
    ours, theirs = [], []
    try:
        for r in range(args.repeat):
            print(f"round {r + 1}: ours", file=sys.stderr)
            ours.append(run_child(sys.executable, OURS, urls, args.processes))
            if version:
                print(f"round {r + 1}: img2dataset", file=sys.stderr)
                theirs.append(run_child(args.img2dataset_python, IMG2DATASET, urls, args.processes))
    finally:
        parent.send("stop")
        server.join(5)
    print("codec stages and quality", file=sys.stderr)
    staged = stages(args.img2dataset_python if version else None, sizes)
    best_ours = min(ours, key=lambda x: x["seconds"])
    ours_rate = args.images / best_ours["seconds"]
    result = {
        "benchmark": "images_vs_img2dataset",
        "images": args.images,
        "mean_kb": round(mean_bytes / 1024, 1),
        "sizes": args.sizes,
        "mean_megapixels": round(float(np.mean([w * h for w, h in sizes])) / 1e6, 2),
        "share_short_side_2x": round(sum(min(x) >= 2 * IMAGE_SIZE for x in sizes) / len(sizes), 2),
        "short_side": IMAGE_SIZE,
        "processes": args.processes,
        "cores": os.cpu_count(),
        "ours_images_per_s": round(ours_rate, 1),
        "ours_ok": best_ours["ok"],
        "ours_seconds": [round(x["seconds"], 2) for x in ours],
        "ours_cpu_ms_per_image": round(1000 * best_ours["cpu_s"] / args.images, 2),
        "load_average_at_start": round(load, 2),
        "stages_cpu_ms_per_image": {k: v for k, v in staged.items() if k != "quality"},
        "quality_vs_reference": staged["quality"],
    }
    if theirs:
        best = min(theirs, key=lambda x: x["seconds"])
        rate = args.images / best["seconds"]
        result |= {
            "img2dataset_version": version,
            "img2dataset_images_per_s": round(rate, 1),
            "img2dataset_ok": best["ok"],
            "img2dataset_seconds": [round(x["seconds"], 2) for x in theirs],
            "img2dataset_cpu_ms_per_image": round(1000 * best["cpu_s"] / args.images, 2),
            "cpu_efficiency_ratio": round(best["cpu_s"] / best_ours["cpu_s"], 2),
            "ratio_cpu": round(min(x["cpu_s"] for x in theirs) / min(x["cpu_s"] for x in ours), 2),
            "ours_min_cpu_ms_per_image": round(
                1000 * min(x["cpu_s"] for x in ours) / args.images, 2
            ),
            "img2dataset_min_cpu_ms_per_image": round(
                1000 * min(x["cpu_s"] for x in theirs) / args.images, 2
            ),
            "target_ratio_cpu": TARGET_RATIO_CPU,
            "speedup": round(ours_rate / rate, 2),
            "target_speedup": TARGET_SPEEDUP,
            "meets_target": ours_rate / rate >= TARGET_SPEEDUP,
        }
    if not args.json:
        print(
            f"ours {result['ours_cpu_ms_per_image']} CPU ms/image,"
            f" img2dataset {result.get('img2dataset_cpu_ms_per_image')}:"
            f" ratio_cpu {result.get('ratio_cpu')}; stages {json.dumps(staged)}"
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
