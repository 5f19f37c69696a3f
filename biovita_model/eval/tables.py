"""An eval report as Rich tables: Top-k (%) per subset, level, k and direction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich import box
from rich.table import Table

from biovita_data.curate.bench.csv_layout import LEVELS, SUBSETS, TASKS
from biovita_model.eval.scoring import COMMON, KS


def _cell(entry: dict[str, Any] | None, k: int) -> str:
    """A Top-k cell: `-` without the task, `n/a` where k >= the candidates (not meaningful)."""
    if entry is None:
        return "-"
    value = entry.get(f"top{k}")
    return "n/a" if value is None else f"{100 * value:.0f}"


def eval_table(report: dict[str, Any], ks: Sequence[int] = KS) -> list[Table]:
    """Rich tables of a report: Top-k (%) per subset, level, k and direction (+ the mean);
    the common-name variant of the species-level text tasks in a second table."""
    tables = []
    sections = [("scientific names", report)]
    if COMMON in report:
        sections.append(("common names, species-level text tasks", report[COMMON]))
    codes = [t.code for t in TASKS]
    for title, data in sections:
        res = data["results"]
        table = Table(title=f"BioVITA-Bench, {title}: Top-k (%)", box=box.SIMPLE_HEAD)
        for name in ("subset", "level", "k"):
            table.add_column(name, no_wrap=True)
        for code in [*codes, "mean"]:
            table.add_column(code, justify="right", no_wrap=True)
        for subset in (*SUBSETS, "bench"):
            for level in LEVELS:
                if not any(f"{subset}/{level}/{c}" in res for c in codes):
                    continue
                entries = [res.get(f"{subset}/{level}/{c}") for c in codes]
                entries.append(data.get("summary", {}).get(f"{subset}/{level}"))
                for i, k in enumerate(ks):
                    table.add_row(
                        subset if i == 0 else "",
                        level if i == 0 else "",
                        f"top{k}",
                        *[_cell(e, k) for e in entries],
                        end_section=i == len(ks) - 1,
                    )
        tables.append(table)
    return tables
