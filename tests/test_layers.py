"""The import graph follows the layers (biovita_data/architecture.md): each package imports only
packages below it, the model library never imports its training code, and nothing but the
command-line entry points imports the app layer."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# biovita_data's packages, lowest first; a module may import its own package and those before it
LAYERS = ["core", "crawl", "curate", "media", "publish", "loader", "sample", "app"]
ENTRY_POINTS = {"biovita_model.cli"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every biovita module a file imports, at any depth of the file (lazy imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith(("biovita_data", "biovita_model"))}


def graph() -> dict[str, set[str]]:
    files = sorted((ROOT / "biovita_data").rglob("*.py")) + sorted(
        (ROOT / "biovita_model").rglob("*.py")
    )
    return {module_name(f): imports_of(f) for f in files}


def layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "biovita_data" or len(parts) < 2 or parts[1] not in LAYERS:
        return None
    return LAYERS.index(parts[1])


def test_biovita_data_imports_only_lower_layers() -> None:
    wrong = [
        f"{mod} imports {dep}"
        for mod, deps in graph().items()
        if (own := layer(mod)) is not None
        for dep in deps
        if (other := layer(dep)) is not None and other > own
    ]
    assert not wrong, "\n".join(wrong)


def test_only_entry_points_import_the_app_layer() -> None:
    wrong = [
        f"{mod} imports {dep}"
        for mod, deps in graph().items()
        if not mod.startswith("biovita_data.app") and mod not in ENTRY_POINTS
        for dep in deps
        if dep.startswith("biovita_data.app")
    ]
    assert not wrong, "\n".join(wrong)


def test_sources_and_build_stages_do_not_import_the_crawl_stage() -> None:
    wrong = [
        f"{mod} imports {dep}"
        for mod, deps in graph().items()
        if mod.startswith(("biovita_data.crawl.sources", "biovita_data.curate"))
        for dep in deps
        if dep.startswith("biovita_data.crawl.fetch")
    ]
    assert not wrong, "\n".join(wrong)


def test_http_client_knows_no_sample_world_path() -> None:
    text = (ROOT / "biovita_data" / "crawl" / "http.py").read_text()
    for marker in ("/xeno-canto", "/inaturalist", "/gbif", "sample"):
        assert marker not in text


def test_model_library_does_not_import_training() -> None:
    library = [
        mod
        for mod in graph()
        if mod.startswith("biovita_model.")
        and not mod.startswith("biovita_model.training")
        and mod not in ENTRY_POINTS
    ]
    code = (
        "import importlib, sys\n"
        f"for name in {library!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.startswith('biovita_model.training')))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    assert res.stdout.strip() == "[]", f"the model library loads training code: {res.stdout}"


def test_data_package_never_imports_the_model_package() -> None:
    wrong = [
        f"{mod} imports {dep}"
        for mod, deps in graph().items()
        if mod.startswith("biovita_data")
        for dep in deps
        if dep.startswith("biovita_model")
    ]
    assert not wrong, "\n".join(wrong)


# Names that say a module makes up data for tests and demos rather than reading real data.
FIXTURE_WORDS = ("synthetic", "fake", "dummy", "fixture", "mock")


def test_fixture_code_lives_only_in_sample() -> None:
    misplaced = [
        mod
        for mod in graph()
        if any(w in mod.rsplit(".", 1)[-1] for w in FIXTURE_WORDS)
        and not mod.startswith("biovita_data.sample")
    ]
    assert not misplaced, f"fixture modules outside biovita_data/sample/: {misplaced}"
    # the runtime (every layer below app, and the model package) never reaches for the fixtures
    wrong = [
        f"{mod} imports {dep}"
        for mod, deps in graph().items()
        if not mod.startswith(("biovita_data.sample", "biovita_data.app")) and mod != "biovita_data"
        for dep in deps
        if dep.startswith("biovita_data.sample")
    ]
    assert not wrong, "\n".join(wrong)


def _package_files() -> list[Path]:
    return sorted((ROOT / "biovita_data").rglob("*.py")) + sorted(
        (ROOT / "biovita_model").rglob("*.py")
    )


def test_atomic_writes_and_failures_path_are_defined_once() -> None:
    """Temp files for atomic writes come from core/tables.py; failures.parquet's path from
    core/layout.py (a module that builds either by hand drifts from the others)."""
    wrong = []
    for path in _package_files():
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if (  # a temp file beside a target (dir=...): an atomic write
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "mkstemp"
                and any(k.arg == "dir" for k in node.keywords)
                and rel != "biovita_data/core/tables.py"
            ):
                wrong.append(f"{rel}:{node.lineno}: tempfile.mkstemp (use core.tables.atomic_path)")
            if (
                isinstance(node, ast.BinOp)
                and isinstance(node.op, ast.Div)
                and isinstance(node.right, ast.Constant)
                and node.right.value == "failures.parquet"
                and rel != "biovita_data/core/layout.py"
            ):
                wrong.append(
                    f"{rel}:{node.lineno}: failures.parquet by hand (layout.failures_path)"
                )
    assert not wrong, "\n".join(wrong)


def test_no_package_folder_is_named_like_build_output() -> None:
    """`build/`, `dist/` at any depth are ignored by the common .gitignore templates."""
    packages = [ROOT / "biovita_data", ROOT / "biovita_model"]
    named = [p for pkg in packages for p in pkg.rglob("*")
             if p.is_dir() and p.name in ("build", "dist")]  # fmt: skip
    assert not named, named
