"""Progress a user can follow in a log: a rich Progress that, when it does not write to a
terminal (output to a file, CI), prints a plain line every few percent or every 30 s, the
latter also while a task does not advance (one long step: a genus block of dedup's search)."""

from __future__ import annotations

import threading
from typing import Any

from rich.progress import Progress, Task, TaskID

EVERY_PERCENT = 5.0
EVERY_SECONDS = 30.0
MIN_GAP_SECONDS = 1.0  # a task's lines at least this far apart (but the last): a fast one, one


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = round(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def plain_line(task: Task, unit: str = "") -> str:
    """`materialize audio: 1,200/4,000 (30 %), 85.2 items/s, 0m14s elapsed, 0m33s left`."""
    done, total = task.completed, task.total
    elapsed = task.elapsed or 0.0
    rate = task.speed or (done / elapsed if elapsed > 0 else None)
    if total:
        where = f"{done:,.0f}/{total:,.0f} ({100 * done / total:.0f} %)"
        left = task.time_remaining
        if left is None and rate:
            left = max(total - done, 0) / rate
    else:
        where, left = f"{done:,.0f}", None
    parts = [f"{task.description}: {where}"]
    if rate is not None:
        parts.append(f"{rate:,.1f} {unit or 'items'}/s")
    parts.append(f"{_duration(elapsed)} elapsed")
    if total:
        parts.append(f"{_duration(left)} left")
    return ", ".join(parts)


class LogProgress(Progress):
    """A rich Progress; in a log (no terminal) also a plain line per task every `every_percent`
    of its total (MIN_GAP_SECONDS apart at least) or `every_s` seconds, with rate and time left,
    and one when it completes."""

    def __init__(
        self,
        *columns: Any,
        every_percent: float = EVERY_PERCENT,
        every_s: float = EVERY_SECONDS,
        unit: str = "",
        **kwargs: Any,
    ) -> None:
        super().__init__(*columns, **kwargs)
        self.plain = not self.console.is_terminal and not self.disable
        self._every_percent, self._every_s, self._unit = every_percent, every_s, unit
        self._last: dict[TaskID, tuple[float, float]] = {}  # task -> (time, percent) last printed
        self._quiet: threading.Event | None = None  # set to stop the heartbeat

    def start(self) -> None:
        super().start()
        if self.plain and self._quiet is None:  # a line every `every_s` even with no advance
            self._quiet = threading.Event()
            threading.Thread(target=self._heartbeat, args=(self._quiet,), daemon=True).start()

    def stop(self) -> None:
        if self._quiet is not None:
            self._quiet.set()
            self._quiet = None
        super().stop()

    def _heartbeat(self, quiet: threading.Event) -> None:
        while not quiet.wait(min(1.0, self._every_s / 4)):
            with self._lock:
                running = [t.id for t in self._tasks.values() if not t.finished]
            for task_id in running:
                self._log(task_id)

    def add_task(self, *args: Any, **kwargs: Any) -> TaskID:
        task_id = super().add_task(*args, **kwargs)
        self._last.setdefault(task_id, (self.get_time(), self._percent(task_id)))
        return task_id

    def update(self, task_id: TaskID, **kwargs: Any) -> None:
        super().update(task_id, **kwargs)
        self._log(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._log(task_id)

    def _percent(self, task_id: TaskID) -> float:
        task = self._tasks[task_id]
        return 100.0 * task.completed / task.total if task.total else 0.0

    def _log(self, task_id: TaskID) -> None:
        with self._lock:  # the heartbeat's thread and the caller's may both print
            self._log_locked(task_id)

    def _log_locked(self, task_id: TaskID) -> None:
        if not self.plain or task_id not in self._tasks:
            return
        now, pct = self.get_time(), self._percent(task_id)
        last_t, last_pct = self._last.get(task_id, (now, 0.0))
        task = self._tasks[task_id]
        finished = bool(task.total) and task.completed >= task.total and last_pct < 100.0
        gap = now - last_t
        step = pct - last_pct >= self._every_percent and gap >= MIN_GAP_SECONDS
        if finished or step or gap >= self._every_s:
            self._last[task_id] = (now, pct)
            self.console.print(plain_line(task, self._unit), markup=False, highlight=False)
