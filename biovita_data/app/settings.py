"""Every stage's settings, typed once: a pipeline file's sections and the CLI's options build these.

A section's defaults live in its dataclass: the stage's own settings class where one exists
(`AlignSettings`, `SplitSettings`, `BenchSettings` in curate/settings.py, `MaterializeSettings`),
else a section class here; the CLI takes its option defaults from these. `check_pipeline`
refuses an unknown section, an unknown key or a value of the wrong type with one line naming
it (pydantic checks the types).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from biovita_data.core.budget import DEFAULT_MAX_FAILED, check_max_failed
from biovita_data.curate.settings import AlignSettings, BenchSettings, SplitSettings
from biovita_data.media.settings import MaterializeSettings


class SettingsError(ValueError):
    """A setting a pipeline file (or a caller) gave that its stage does not know or cannot use."""


@dataclass
class PipelineSection:
    name: str | None = None  # default: the file's stem
    out: str | None = None  # default: build/<name>


@dataclass
class FetchSection:
    taxa: list[str]
    sources: list[str] = field(default_factory=lambda: ["xeno-canto", "inaturalist"])
    since: str | None = None  # YYYY-MM-DD: records added or changed since then
    licenses: list[str] | str | None = None  # None: the default allowed set
    max_per_species: int | None = None
    max_records: int | None = None
    throttle: bool = True
    gbif_datasets: list[str] | None = None
    media: Literal["sound", "image", "both"] | None = None  # GBIF: which media
    # pinned service URLs (the environment still wins)
    urls: dict[Literal["xeno_canto", "inaturalist", "open_data", "gbif"], str] = field(
        default_factory=dict
    )
    max_failed: float = DEFAULT_MAX_FAILED  # per source: a larger failed share stops the run

    def __post_init__(self) -> None:
        check_max_failed(self.max_failed)


@dataclass
class SampleSection:
    size: Literal["tiny", "default"] = "default"
    seed: int = 0
    faults: str = "none"
    epoch: int = 0
    duplicates: bool = False  # planted audio copies and near-miss negatives (`dedup` finds them)


@dataclass
class TolSection:
    catalog: str  # a path, or "sample" in a sample-world pipeline
    provenance: str | None = None  # required unless catalog = "sample"
    per_species: int = 200
    seed: int = 0
    taxa: list[str] = field(default_factory=list)
    licenses: list[str] | str | None = None
    exclusive: bool = False
    max_failed: float = DEFAULT_MAX_FAILED  # a larger failed share of the drawn rows stops the run

    def __post_init__(self) -> None:
        check_max_failed(self.max_failed)


@dataclass
class TraitsSection:
    tables: list[str] | Literal["sample"] = field(default_factory=list)
    cache: Path | None = None  # default: OUT/raw/traits
    throttle: bool = True
    refresh: bool = False


@dataclass
class StatsSection:
    class_coverage: bool = True


@dataclass
class DedupSection:
    workers: int | None = None  # processes for the near audio search; None: cores
    engine: Literal["local", "ray"] = "local"  # ray: the near search's buckets as Ray tasks
    ray_address: str | None = None  # a Ray cluster for engine ray; None: a local Ray


@dataclass
class PublishSection:
    repo_id: str
    media: Literal["embed", "urls"] = "embed"
    folder_only: bool = False
    git_remote: str | None = None
    private: bool = False
    max_shard_mb: int = 500
    pretty_name: str | None = None  # the card's title
    large_upload: bool | None = None  # None: upload_large_folder from 2 GB
    tag: str | None = None
    previous_release: Path | None = None
    allow_empty: bool = False


SECTIONS: dict[str, type] = {
    "pipeline": PipelineSection,
    "fetch": FetchSection,
    "sample": SampleSection,
    "tol": TolSection,
    "align": AlignSettings,
    "traits": TraitsSection,
    "split": SplitSettings,
    "bench": BenchSettings,
    "stats": StatsSection,
    "materialize": MaterializeSettings,
    "dedup": DedupSection,
    "publish": PublishSection,
}


def section(name: str, cfg: Any) -> Any:
    """`cfg` (a dict from a pipeline file or the CLI, or already the settings object) as the
    section's typed settings; an unknown key or a wrong type -> SettingsError naming it."""
    cls = SECTIONS[name]
    if isinstance(cfg, cls):
        return cfg
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in cfg if k not in known]
    if unknown:
        raise SettingsError(
            f"[{name}] {unknown[0]}: unknown setting (known: {', '.join(known) or 'none'})"
        )
    hints = typing.get_type_hints(cls)
    for key, value in cfg.items():  # pydantic would take "yes", "off" or 1 for a bool
        if value is not None and not isinstance(value, bool) and _is_bool(hints[key]):
            raise SettingsError(f"[{name}] {key}: true or false, got {value!r}")
    from pydantic import TypeAdapter, ValidationError

    try:
        return TypeAdapter(cls).validate_python(dict(cfg))
    except ValidationError as exc:
        err = exc.errors()[0]
        if not err["loc"]:  # the settings class's own check (__post_init__) refused a value
            raise SettingsError(f"[{name}] {err['ctx']['error']}") from None
        where = ".".join(str(p) for p in err["loc"])
        got = f", got {err['input']!r}" if err["type"] != "missing" else ""
        msg = err["msg"][:1].lower() + err["msg"][1:]
        raise SettingsError(f"[{name}] {where}: {msg}{got}") from None


def _is_bool(hint: Any) -> bool:
    """Whether a field's type is bool or bool | None."""
    return hint is bool or (
        typing.get_origin(hint) in (typing.Union, types.UnionType)
        and set(typing.get_args(hint)) == {bool, type(None)}
    )


def check_pipeline(data: dict[str, Any], source: str) -> dict[str, Any]:
    """Every section of a parsed pipeline file checked against its settings; returns `data`."""
    for name, cfg in data.items():
        if name not in SECTIONS:
            raise SettingsError(
                f"{source}: [{name}]: unknown section (known: {', '.join(SECTIONS)})"
            )
        if not isinstance(cfg, dict):
            raise SettingsError(f"{source}: {name} must be a [{name}] section, not a value")
        try:
            section(name, cfg)
        except SettingsError as exc:
            raise SettingsError(f"{source}: {exc}") from None
    return data
