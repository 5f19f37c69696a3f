"""How much species signal a front end leaves in the audio: a linear probe on mel statistics.

    python scripts/mel_stats_probe.py OUT/hf [--frontend tiny] [--frontend htsat-unfused]

Each clip of the published dataset's train and test splits is decoded as the evaluation does (10 s,
onset-aligned), turned into log-mel by the named tower config's front end, and summarised per mel
band by its mean, standard deviation and maximum (3 x n_mels numbers; `stats4` adds the standard
deviation of the frame-to-frame difference). A multinomial logistic regression (L-BFGS, L2) fitted
on train scores species Top-1 on test over all training species. Prints one JSON line per front end.
If the audio tower learns far less than this probe, the front end is not what holds it back.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from biovita_data.loader.audio import decode_clip  # noqa: E402
from biovita_data.loader.index import RowReader  # noqa: E402
from biovita_model.audio_frontend import AudioFrontend, FrontendConfig  # noqa: E402
from biovita_model.embed import split_items  # noqa: E402
from biovita_model.towers import read_config  # noqa: E402


def features(folder: Path, split: str, fe: AudioFrontend) -> tuple[np.ndarray, np.ndarray]:
    """(stats, labels) of a split: per mel band mean, std, max and std of the frame delta."""
    index, meta = split_items(folder, "audio", split)
    reader = RowReader(index, ["audio"])
    rows = []
    for i in range(len(index)):
        clip = decode_clip(reader.media(i), mode="onset", seconds=10.0, target_rate=48_000)
        wave = torch.from_numpy(clip.samples)[None]
        with torch.no_grad():
            mel = fe(wave, torch.tensor([min(max(1, clip.valid), wave.shape[1])]))[0, 0]
        delta = mel[1:] - mel[:-1]
        rows.append(torch.cat([mel.mean(0), mel.std(0), mel.amax(0), delta.std(0)]).numpy())
    return np.stack(rows), meta["label"].to_numpy()


def probe(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray) -> float:
    """Test Top-1 of a multinomial logistic regression fitted on standardised train features."""
    classes = np.unique(ytr)
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    x = torch.tensor((xtr - mu) / sd, dtype=torch.float32)
    xt = torch.tensor((xte - mu) / sd, dtype=torch.float32)
    y = torch.tensor(np.searchsorted(classes, ytr))
    w = torch.zeros(x.shape[1], classes.size, requires_grad=True)
    b = torch.zeros(classes.size, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=300, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w + b, y) + 1e-3 * w.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    return float((classes[(xt @ w + b).argmax(1).numpy()] == yte).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--frontend", action="append", help="tower config name (tiny)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name in args.frontend or ["tiny"]:
        cfg = FrontendConfig.from_dict(read_config(name)["frontend"])
        fe = AudioFrontend(cfg)
        t0 = time.monotonic()
        xtr, ytr = features(args.dataset, "train", fe)
        xte, yte = features(args.dataset, "test", fe)
        n = 3 * cfg.n_mels
        out = {
            "frontend": name,
            "n_mels": cfg.n_mels,
            "hop_length": cfg.hop_length,
            "train_clips": int(ytr.size),
            "test_clips": int(yte.size),
            "species": int(np.unique(ytr).size),
            "stats3_top1": round(probe(xtr[:, :n], ytr, xte[:, :n], yte), 3),
            "stats4_top1": round(probe(xtr, ytr, xte, yte), 3),
            "seconds": round(time.monotonic() - t0, 1),
        }
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
