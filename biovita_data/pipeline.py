"""Pipeline files (TOML): which taxa, sources and filters; `run` executes the stages that exist."""

from __future__ import annotations

import os
import tomllib
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from biovita_data.fetch import FetchSettings, settings_from_env
from biovita_data.licenses import DEFAULT_ALLOWED

STAGES = ("fetch",)


@dataclass
class Pipeline:
    name: str
    out: Path
    fetch: dict[str, Any]
    sample: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def fetch_settings(self, **overrides: Any) -> FetchSettings:
        f = self.fetch
        urls = f.get("urls", {})
        settings = settings_from_env(
            taxa=list(f["taxa"]),
            sources=list(f.get("sources", ["xeno-canto", "inaturalist"])),
            since=f.get("since"),
            licenses=tuple(f.get("licenses", DEFAULT_ALLOWED)),
            max_per_species=f.get("max_per_species"),
            max_records=f.get("max_records"),
            throttle=bool(f.get("throttle", True)),
        )
        # the pipeline file may pin URLs; the environment still wins
        for key, env in (
            ("xeno_canto", "XENO_CANTO_API_URL"),
            ("inaturalist", "INATURALIST_API_URL"),
            ("open_data", "INATURALIST_OPEN_DATA_URL"),
        ):
            if key in urls and not os.environ.get(env):
                setattr(
                    settings, f"{key}_url" if key != "open_data" else "open_data_url", urls[key]
                )
        for k, v in overrides.items():
            setattr(settings, k, v)
        return settings


def load_pipeline(path: Path) -> Pipeline:
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from None
    if "fetch" not in data or "taxa" not in data["fetch"]:
        raise ValueError(f"{path}: a pipeline needs [fetch] with taxa = [...]")
    meta = data.get("pipeline", {})
    return Pipeline(
        name=meta.get("name", path.stem),
        out=Path(meta.get("out", f"build/{path.stem}")),
        fetch=data["fetch"],
        sample=data.get("sample"),
        extra={k: v for k, v in data.items() if k not in ("pipeline", "fetch", "sample")},
    )


def sample_environment(stack: ExitStack, size: str, seed: int, faults: str) -> dict[str, str]:
    """Start the sample world's server for the duration of `stack`; returns its env vars."""
    from biovita_data.sample.server import DEFAULT_XC_KEY, SampleServer
    from biovita_data.sample.world import World

    server = stack.enter_context(SampleServer(World(size, seed), faults=faults))
    env = {**server.urls, "XENO_CANTO_API_KEY": DEFAULT_XC_KEY}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)

    def restore() -> None:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    stack.callback(restore)
    return env
