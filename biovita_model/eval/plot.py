"""A report's picture: Top-1/5/10 bars per direction, one panel per subset and level, chance."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from biovita_data.curate.bench.csv_layout import LEVELS, TASKS


def plot_results(results: Mapping[str, Any], path: Path) -> Path:
    """Bar charts of Top-1/5/10 per direction, one panel per subset and level, as a PNG; a black
    tick over each bar marks its chance level (k / candidates), `n/a` where k >= the candidates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = results.get("results", results)
    panels: dict[tuple[str, str], dict[str, Mapping[str, Any]]] = {}
    for key, entry in res.items():
        subset, level, code = key.split("/")
        panels.setdefault((subset, level), {})[code] = entry
    subsets = sorted({s for s, _ in panels})
    levels = [lv for lv in LEVELS if any(lv == l2 for _, l2 in panels)]
    rows, cols = max(len(subsets), 1), max(len(levels), 1)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    codes = [t.code for t in TASKS]
    for i, subset in enumerate(subsets):
        for j, level in enumerate(levels):
            ax = axes[i][j]
            entries = panels.get((subset, level), {})
            x = np.arange(len(codes))
            tops = [k for k in ("top1", "top5", "top10") if any(k in e for e in entries.values())]
            width = 0.8 / max(len(tops), 1)
            for n, k in enumerate(tops):
                pos = x + (n - (len(tops) - 1) / 2) * width
                vals = [entries.get(c, {}).get(k) for c in codes]
                ax.bar(pos, [0.0 if v is None else 100 * v for v in vals], width, label=k)
                for c, xp, v in zip(codes, pos, vals, strict=True):
                    e = entries.get(c)
                    if e is None:
                        continue
                    if v is None:
                        ax.text(xp, 2, "n/a", rotation=90, ha="center", va="bottom", fontsize=6)
                        continue
                    level_pct = 100 * min(1.0, int(k[3:]) / max(1, e["n_candidates"]))
                    label = "chance" if c == codes[0] and n == 0 else None
                    ax.hlines(level_pct, xp - width / 2, xp + width / 2, "black", label=label)
            ax.set_xticks(x, codes)
            ax.set_ylim(0, 100)
            ax.set_title(f"{subset} / {level}")
            ax.set_ylabel("%")
    if not panels:
        axes[0][0].set_title("no results")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:  # one legend for every panel, in a band above them (never over a bar)
        fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize="small",
                   frameon=False, bbox_to_anchor=(0.5, 1.0))  # fmt: skip
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    else:
        fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
