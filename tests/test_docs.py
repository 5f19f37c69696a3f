"""The clone explains itself: no tracked file outside tests cites the shared folder, the design
document exists with its sections, and every section a file cites is there."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "design.md"


def tracked_files() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [ROOT / line for line in out.splitlines() if line and (ROOT / line).is_file()]


def headings() -> set[str]:
    return {m.group(1).strip() for m in re.finditer(r"^#+ (.+)$", DESIGN.read_text(), re.M)}


def test_no_file_outside_tests_cites_the_shared_folder() -> None:
    wrong = []
    for path in tracked_files():
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("tests/") or path.suffix not in {".py", ".md", ".toml", ".txt", ""}:
            continue
        text = path.read_text(errors="replace")
        for pattern in ("../shared", "/work/shared", "DESIGN.md"):
            if pattern in text:
                wrong.append(f"{rel}: cites {pattern}")
    assert not wrong, "\n".join(wrong)


def test_design_document_covers_what_it_promises() -> None:
    found = headings()
    for section in (
        "Architecture",
        "The flow from sources to model",
        "File contracts of OUT",
        "Trait vocabulary",
        "Bench format",
        "Releases",
        "Decisions and their reasons",
    ):
        assert section in found, f"docs/design.md has no section {section!r}"
    text = DESIGN.read_text()
    from biovita_data.core.vocab import TRAIT_CATEGORIES

    for category, labels in TRAIT_CATEGORIES.items():
        row = next(line for line in text.splitlines() if line.startswith(f"| {category} ("))
        assert row == f"| {category} ({len(labels)}) | {', '.join(labels)} |"


def test_every_cited_design_section_exists() -> None:
    """`docs/design.md, "Section"` and `docs/design.md ("Section")` in code name real sections."""
    cite = re.compile(r'docs/design\.md(?:\'s)?,? \(?"([^"]+)"(?: and "([^"]+)")?')
    found, wrong = headings(), []
    for path in tracked_files():
        if path.suffix != ".py" or path.is_relative_to(ROOT / "tests"):
            continue
        for m in cite.finditer(path.read_text()):
            wrong += [f"{path.name}: {s!r}" for s in m.groups() if s and s not in found]
    assert not wrong, "\n".join(wrong)


def test_the_layout_paths_the_design_lists_exist() -> None:
    from biovita_data.core import layout

    out = Path("OUT")
    text = DESIGN.read_text()
    for path in (
        layout.failures_path(out),
        layout.removed_path(out),
        layout.takedown_path(out),
        layout.duplicates_path(out),
        layout.assignment_path(out),
        layout.unmatched_path(out),
        layout.species_path(out),
    ):
        assert f"`{path.relative_to(out).as_posix()}`" in text, path
