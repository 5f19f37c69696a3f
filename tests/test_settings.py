"""Pipeline files are checked against the stages' typed settings before anything runs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from typer.testing import CliRunner

from biovita_data.app.cli import app
from biovita_data.app.pipeline import load_pipeline
from biovita_data.app.settings import SECTIONS, SettingsError, section
from biovita_data.curate.settings import BenchSettings, SplitSettings

HEAD = '[fetch]\ntaxa = ["Aves"]\n'


def _pipeline(tmp_path: Path, body: str, head: str = HEAD) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(head + body)
    return path


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[publish]\nrepo_id = "a/b"\nprety_name = "x"\n', "[publish] prety_name: unknown setting"),
        ("[publish]\nlarge_uplod = true\n", "[publish] large_uplod: unknown setting"),
        ("[frobnicate]\nx = 1\n", "[frobnicate]: unknown section"),
        (
            '[split]\ntest_fraction = "ten"\n',
            "[split] test_fraction: input should be a valid number",
        ),
        ("[align]\nmin_audio = 1.5\n", "[align] min_audio: input should be a valid integer"),
        ('[materialize]\nengine = "spark"\n', "[materialize] engine must be one of"),
        ("[bench]\ncandidates = [1]\n", "[bench] candidates: input should be a valid integer"),
        ('[publish]\nmedia = "embed"\n', "[publish] repo_id: field required"),
        ('[publish]\nrepo_id = "a/b"\nmedia = "zip"\n', "[publish] media: input should be"),
        ('[sample]\nduplicates = "yes"\n', "[sample] duplicates: true or false, got 'yes'"),
        ('[publish]\nrepo_id = "a/b"\nlarge_upload = 1\n', "[publish] large_upload: true or"),
        ('[align]\nthrottle = "false"\n', "[align] throttle: true or false, got 'false'"),
    ],
)
def test_pipeline_file_refuses_what_it_does_not_know(
    tmp_path: Path, body: str, message: str
) -> None:
    path = _pipeline(tmp_path, body)
    with pytest.raises(SettingsError) as err:
        load_pipeline(path)
    text = str(err.value)
    assert text.startswith(f"{path}: ") and message in text
    assert "\n" not in text  # one line


def test_fetch_section_checked_too(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"\[fetch\] taxa: input should be a valid list"):
        load_pipeline(_pipeline(tmp_path, "", head='[fetch]\ntaxa = "Aves"\n'))
    bad_url = HEAD + '[fetch.urls]\nxenocanto = "http://127.0.0.1:1"\n'
    with pytest.raises(SettingsError, match=r"\[fetch\] urls\.xenocanto"):
        load_pipeline(_pipeline(tmp_path, "", head=bad_url))
    with pytest.raises(SettingsError, match=r"split must be a \[split\] section"):
        load_pipeline(_pipeline(tmp_path, "", head="split = 3\n" + HEAD))


def test_cli_run_says_one_line_and_exits_nonzero(tmp_path: Path) -> None:
    path = _pipeline(tmp_path, '[publish]\nrepo_id = "a/b"\npretty_nam = "BioVITA"\n')
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code != 0
    assert "[publish] pretty_nam: unknown setting" in result.output
    assert "pretty_name" in result.output  # the keys it knows
    assert not (tmp_path / "out").exists()  # nothing ran


def test_every_key_of_the_shipped_pipelines_is_known_and_typed() -> None:
    for path in sorted(Path("pipelines").glob("*.toml")):
        p = load_pipeline(path)
        for name, cfg in p.extra.items():
            section(name, cfg)  # no error
    publish = section("publish", {"repo_id": "a/b", "pretty_name": "X", "large_upload": False})
    assert (publish.pretty_name, publish.large_upload) == ("X", False)


def test_sections_hold_the_defaults_the_stages_use() -> None:
    import inspect

    from biovita_data.curate.bench.build import build_bench
    from biovita_data.curate.split import split

    for fn, cls in ((build_bench, BenchSettings), (split, SplitSettings)):
        params = inspect.signature(fn).parameters
        for f in dataclasses.fields(cls):
            assert params[f.name].default == f.default, (fn.__name__, f.name)
    assert set(SECTIONS) >= {"align", "split", "bench", "materialize", "publish", "tol"}
    got = section("split", {"test_fraction": 0.2, "previous": "old"})
    assert got == SplitSettings(test_fraction=0.2, previous=Path("old"))
