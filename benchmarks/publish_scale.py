"""`publish --media urls` at the paper's scale: 1.3 M recordings + 2.3 M photos, 14,133 species.

Builds the synthetic manifests of benchmarks/build_scale.py (generate + align, traits, split,
bench, stats), then runs `publish(..., media="urls", folder_only=True)` in a child process (so
its peak RSS is its own) and measures it: the card, plots and every config's Parquet shards.

    python3 benchmarks/publish_scale.py [--scale 1.0] [--workdir DIR] [--keep] [--quiet]

With --workdir and --keep, a second run reuses the built manifests. stdout: one JSON line: the
publish seconds and peak RSS, rows per config, files and MB written. Target (2 cores): under
120 s and 4 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_scale

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from biovita_data.publish import publish
t = time.perf_counter()
result = publish(Path(sys.argv[1]), "biovita/scale", media="urls", folder_only=True)
seconds = time.perf_counter() - t
files = [p for p in result.folder.rglob("*") if p.is_file()]
print(json.dumps({
    "seconds": round(seconds, 2),
    "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    "rows": {c: sum(s.values()) for c, s in result.rows.items()},
    "files": len(files),
    "mb": round(sum(p.stat().st_size for p in files) / 2**20, 1),
}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=float, default=1.0, help="1.0 = the paper's size")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the generated build")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="biovita-publish-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    out = work / "out"
    try:
        t = time.perf_counter()
        if not (out / "stats.json").exists():
            build_scale.generate(work, args.scale)
            build_scale.run_stages(work, args.quiet)
        build_s = round(time.perf_counter() - t, 1)
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(out)], capture_output=True, text=True
        )
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            raise SystemExit("publish failed")
        got = json.loads(proc.stdout.strip().splitlines()[-1])
        print(
            json.dumps(
                {
                    "benchmark": "publish_scale",
                    "scale": args.scale,
                    "media": "urls",
                    **got,
                    "target_seconds": 120,
                    "target_peak_mb": 4096,
                    "pass": got["seconds"] < 120 and got["peak_rss_mb"] < 4096,
                    "cpus": os.cpu_count(),
                    "build_seconds": build_s,
                }
            )
        )
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
