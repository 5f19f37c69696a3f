"""Failure budgets: a stage whose share of failed items exceeds `--max-failed` ends non-zero.

A record a stage leaves out by policy (a duplicate, a licence not allowed, a cap, a takedown)
is not a failure; everything else in the failures table is. What the stage wrote stays in OUT:
the shards, the raw records and the failure rows, so a rerun resumes.
"""

from __future__ import annotations

from collections.abc import Mapping

DEFAULT_MAX_FAILED = 0.5
# Failure-table reasons that are decisions, not failures: they never count against the budget.
NOT_FAILURES = frozenset(
    {
        "duplicate",
        "over_cap",
        "license_not_allowed",
        "restricted",
        "image_source_excluded",
        "lineage_conflict",
        "withdrawn",
        "takedown",
    }
)
EXIT_OVER_BUDGET = 3  # the exit status of a command that ran but failed more than its budget


class BudgetExceeded(RuntimeError):
    """A stage ran to the end (its output is kept) but failed more items than its budget."""


def check_max_failed(value: float) -> float:
    """`--max-failed`, a share within 0..1."""
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"--max-failed must be a share within 0..1 (0.5: half), not {value}")
    return value


def failed_counts(reasons: Mapping[str, int]) -> dict[str, int]:
    """The reasons that count as failures, most frequent first."""
    kept = {r: int(n) for r, n in reasons.items() if r not in NOT_FAILURES and n}
    return dict(sorted(kept.items(), key=lambda kv: (-kv[1], kv[0])))


def _top(counts: Mapping[str, int], n: int = 3) -> str:
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    shown = ", ".join(f"{k} {v}" for k, v in items[:n])
    return shown + (f", {len(items) - n} more" if len(items) > n else "")


def budget_line(what: str, kept: int, dropped: Mapping[str, int], max_failed: float) -> str | None:
    """over_budget of a stage that kept `kept` items and dropped `dropped` (reason -> items),
    with what to do about it; None within the budget."""
    line = over_budget(what, kept + sum(dropped.values()), dropped, max_failed)
    if line is None:
        return None
    return f"{line}. What was kept stays in OUT (--max-failed 1.0 accepts the losses)"


def over_budget(
    what: str,
    total: int,
    reasons: Mapping[str, int],
    max_failed: float,
    hosts: Mapping[str, int] | None = None,
) -> str | None:
    """One line when the failed share of `total` items exceeds `max_failed`, else None.

    `reasons`: failure reason -> items (policy reasons are ignored); `hosts`: host -> failed
    items, named in the line (the top three)."""
    failed = failed_counts(reasons)
    n = sum(failed.values())
    if total <= 0 or n / total <= max_failed:
        return None
    line = (
        f"{what}: {n} of {total} items failed ({n / total:.0%} > --max-failed {max_failed:g}): "
        f"{_top(failed)}"
    )
    if hosts:
        line += f"; hosts: {_top(hosts)}"
    return line
