"""What both command-line programs share: the `--version` option."""

from __future__ import annotations

import typer

from biovita_data import __version__


def version_option(prog: str) -> typer.models.OptionInfo:
    """A `--version` option that prints `<prog> <version>` and exits."""

    def show(value: bool) -> None:
        if value:
            typer.echo(f"{prog} {__version__}")
            raise typer.Exit()

    return typer.Option("--version", callback=show, is_eager=True, help="Show version.")
