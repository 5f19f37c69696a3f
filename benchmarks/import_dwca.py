"""import-dwca on a large synthetic GBIF download: seconds and peak memory of the streaming read.

The sample world's GBIF occurrences (223 real occurrence.txt columns, multimedia.txt, meta.xml as
`sample export-dwca` writes them) are replicated under new gbifIDs until N and streamed into a
zip. `biovita_data.crawl.dwca.read_archive` then reads it in a child process, which reports its
peak RSS; the raw text is never held, so memory grows with the parsed rows of one batch, not with
the download. With `--records` at two sizes the output shows whether time grows linearly.

    python3 benchmarks/import_dwca.py [--records 200000] [--records 400000] [--part-mb 512]

stdout: one JSON line per size: records, media, zip and text bytes, seconds, peak RSS.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from biovita_data.sample import gbif as G
from biovita_data.sample.world import World


def write_download(path: Path, n: int) -> dict:
    base = G.occurrences(World("tiny"), "http://127.0.0.1:9")
    text_bytes = media = 0
    # zipfile allows one open member at a time: occurrence.txt, then multimedia.txt
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("meta.xml", G.meta_xml())
        with zf.open("occurrence.txt", "w", force_zip64=True) as occ:
            occ.write(("\t".join(G.OCCURRENCE_COLUMNS) + "\n").encode())
            for i in range(n):
                o = base[i % len(base)]
                line = (G.occurrence_line({**o, "gbifID": str(10**10 + i)}) + "\n").encode()
                occ.write(line)
                text_bytes += len(line)
        with zf.open("multimedia.txt", "w", force_zip64=True) as med:
            med.write(("\t".join(G.MULTIMEDIA_COLUMNS) + "\n").encode())
            for i in range(n):
                o = base[i % len(base)]
                for m in o["media"]:
                    row = {**m, "gbifID": str(10**10 + i)}
                    line = "\t".join(G._cell(row.get(c)) for c in G.MULTIMEDIA_COLUMNS) + "\n"
                    med.write(line.encode())
                    text_bytes += len(line)
                    media += 1
    return {"media": media, "text_bytes": text_bytes, "zip_bytes": path.stat().st_size}


def _read(path: str, part_bytes: int, queue: mp.Queue) -> None:
    from biovita_data.crawl.dwca import read_archive

    t0 = time.perf_counter()
    rows = fails = 0
    for r, f in read_archive(Path(path), part_bytes=part_bytes):
        rows += len(r)
        fails += len(f)
    queue.put(
        {
            "seconds": round(time.perf_counter() - t0, 2),
            "rows": rows,
            "failures": fails,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--records", type=int, action="append")
    ap.add_argument("--part-mb", type=int, default=512, help="text per join partition")
    args = ap.parse_args()
    for n in args.records or [200_000]:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "download.zip"
            info = write_download(path, n)
            ctx = mp.get_context("spawn")
            queue = ctx.Queue()
            proc = ctx.Process(target=_read, args=(str(path), args.part_mb * 2**20, queue))
            proc.start()
            result = queue.get()
            proc.join()
        print(json.dumps({"records": n, "part_mb": args.part_mb, **info, **result}), flush=True)


if __name__ == "__main__":
    main()
