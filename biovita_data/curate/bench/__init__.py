"""BioVITA-Bench: the bench stage (`build_bench`) and the official CSV layout (`read_official`)."""

from biovita_data.curate.bench.build import BenchResult, BenchSettings, TaskStats, build_bench
from biovita_data.curate.bench.csv_layout import (
    LEVELS,
    SUBSETS,
    TASK_BY_CODE,
    TASK_COLUMNS,
    TASKS,
    OfficialBench,
    Task,
    index_csv_path,
    index_parquet_path,
    read_official,
    task_csv_path,
    tasks_parquet_path,
)
from biovita_data.curate.bench.summary import print_summary, summary_table

__all__ = [
    "LEVELS",
    "SUBSETS",
    "TASKS",
    "TASK_BY_CODE",
    "TASK_COLUMNS",
    "BenchResult",
    "BenchSettings",
    "OfficialBench",
    "Task",
    "TaskStats",
    "build_bench",
    "index_csv_path",
    "index_parquet_path",
    "print_summary",
    "read_official",
    "summary_table",
    "task_csv_path",
    "tasks_parquet_path",
]
