"""A short rich table of what the bench stage wrote."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from biovita_data.curate.bench.build import BenchResult
from biovita_data.curate.bench.csv_layout import LEVELS, SUBSETS, TASKS


def summary_table(result: BenchResult) -> Table:
    """One row per subset x level; per task: queries (mean candidates)."""
    table = Table(title=f"bench (seed {result.settings.seed}): queries (mean candidates)")
    table.add_column("subset")
    table.add_column("level")
    for task in TASKS:
        table.add_column(task.code, justify="right")
    table.add_column("skipped", justify="right")
    for subset in SUBSETS:
        for level in LEVELS:
            cells, skipped = [], 0
            for task in TASKS:
                try:
                    st = result.stats(subset, level, task.code)
                except KeyError:
                    cells.append("-")
                    continue
                cells.append(f"{st.queries:,} ({st.mean_candidates:.0f})")
                skipped += st.skipped
            table.add_row(subset, level, *cells, f"{skipped:,}")
    return table


def print_summary(result: BenchResult, console: Console | None = None) -> None:
    (console or Console()).print(summary_table(result))
