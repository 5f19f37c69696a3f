"""materialize: the local engine vs a 2-node Ray cluster on this machine, same loopback URLs.

Serves N distinct 1024x768 JPEG photos on 127.0.0.1 (benchmarks/harness.py), then materializes
the same image manifest twice: `--engine local` into OUT/media, and `--engine ray` on a Ray
cluster of two nodes (ray.cluster_utils.Cluster, one head and one worker node, `--cpus-per-node`
CPUs each) whose workers write their shards to the media root themselves: a folder, or with
`--s3` an S3 bucket served by moto on 127.0.0.1 (through s3fs, as a real object store).

    python3 benchmarks/materialize_cluster.py [--photos 512] [--shard-size 64] [--s3]

stdout: one JSON line: images/s of each run, the media bytes stored, the bytes that crossed to
the driver (pickled shard reports; the media never do) and whether both runs wrote the same
shard bytes. On one machine the cluster shares the local engine's cores: the figure to watch is
the driver's share, not the speed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import serve
from images_vs_img2dataset import bodies

from biovita_data.core.schemas import MEDIA
from biovita_data.crawl.http import HostPolicy, HttpClient
from biovita_data.media import MaterializeSettings, materialize
from biovita_data.media.store import MediaStore


def manifest(out: Path, urls: list[str]) -> None:
    rows = [
        {"source": "inaturalist", "record_id": str(i), "modality": "image", "species_id": 1,
         "scientific_name": "Benchmark photo", "match_kind": "exact", "media_url": url,
         "file_format": "jpg"}
        for i, url in enumerate(urls)
    ]  # fmt: skip
    path = out / "manifests" / "image.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=MEDIA), path)


def run(out: Path, **kw) -> dict:
    settings = MaterializeSettings(modalities=("image",), throttle=False, **kw)
    http = HttpClient({"127.0.0.1": HostPolicy(None, 16)}, throttle=False, retries=0)
    t0 = time.perf_counter()
    result = materialize(out, settings, console=Console(stderr=True, quiet=True), http=http)
    seconds = time.perf_counter() - t0
    m = result.by_modality("image")
    store = MediaStore(result.media_root)
    shards = {p.rsplit("/", 1)[1]: _read(store, p) for p in store.glob("image", "shard-*")}
    return {
        "seconds": round(seconds, 2),
        "images_per_s": round(m.records / seconds, 1),
        "kept": m.kept,
        "media_mb": round(m.stored_new / 2**20, 2),
        "driver_kb": round(result.driver_bytes / 2**10, 1),
        "driver_share": round(result.driver_bytes / max(1, m.stored_new), 5),
        "nodes": result.nodes,
        "_shards": shards,
    }


def _read(store: MediaStore, path: str) -> bytes:
    with store.open(path) as f:
        return f.read()


def _s3() -> tuple[object, str]:
    """moto's S3 on 127.0.0.1 with bucket `bench`; AWS_* set for this process and the cluster."""
    import s3fs
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update(
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
    )  # fmt: skip
    s3fs.S3FileSystem().mkdir("bench")
    return server, "s3://bench/run"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--photos", type=int, default=512)
    ap.add_argument("--shard-size", type=int, default=64)
    ap.add_argument("--cpus-per-node", type=int, default=1)
    ap.add_argument("--s3", action="store_true", help="the cluster writes to S3 (moto server)")
    args = ap.parse_args()
    import ray
    from ray.cluster_utils import Cluster

    parent, child = multiprocessing.Pipe()
    server = multiprocessing.Process(target=serve, args=(child, bodies, args.photos, "image/jpeg"))
    server.start()
    root, _ = parent.recv()
    urls = [f"{root}/{i}.jpg" for i in range(args.photos)]
    moto = None
    workers = 2 * args.cpus_per_node
    try:
        with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
            local_out, ray_out = Path(tmp) / "local", Path(tmp) / "ray"
            manifest(local_out, urls)
            manifest(ray_out, urls)
            local = run(local_out, workers=workers, shard_size=args.shard_size)
            media_root = str(Path(tmp) / "shared-media")
            if args.s3:
                moto, media_root = _s3()
            cluster = Cluster(
                initialize_head=True,
                head_node_args={"num_cpus": args.cpus_per_node, "include_dashboard": False},
            )
            cluster.add_node(num_cpus=args.cpus_per_node)
            cluster.wait_for_nodes()
            ray.init(address=cluster.address, log_to_driver=False, logging_level="ERROR")
            try:
                on_cluster = run(
                    ray_out, engine="ray", workers=workers, shard_size=args.shard_size,
                    media_root=media_root,
                )  # fmt: skip
            finally:
                ray.shutdown()
                cluster.shutdown()
            same = local.pop("_shards") == on_cluster.pop("_shards")
    finally:
        parent.send("stop")
        server.join()
        if moto is not None:
            moto.stop()
    print(
        json.dumps(
            {
                "benchmark": "materialize_cluster",
                "photos": args.photos,
                "shard_size": args.shard_size,
                "media_root": "s3 (moto)" if args.s3 else "shared folder",
                "local": local,
                "ray_2_nodes": on_cluster,
                "same_shard_bytes": same,
                "pass": same and on_cluster["driver_share"] < 0.01 and on_cluster["nodes"] == 2,
                "cpus": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
