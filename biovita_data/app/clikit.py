"""What both command-line programs share: `--version`, `--debug`, one-line errors, wide logs."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import IO, Any, NoReturn

import typer
from rich.cells import cell_len
from rich.console import Console, ConsoleDimensions, Group
from rich.rule import Rule
from rich.table import Table
from rich.text import Text
from typer import rich_utils
from typer.core import TyperGroup

from biovita_data import __version__

# Written to a file or a pipe (a log, CI), output is never cut or wrapped: tables, summaries and
# commands stay whole, one line each. Rules and help panels, which fill the width, get these.
UNCUT_WIDTH = 100_000
LOG_RULE_WIDTH = 100
LOG_HELP_WIDTH = 160


class CliConsole(Console):
    """A rich Console that cuts nothing when it does not write to a terminal."""

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        if self._width is None and not self.is_terminal:
            return ConsoleDimensions(UNCUT_WIDTH, size.height)
        return size

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size

    def print(self, *objects: Any, **kwargs: Any) -> None:
        """Print; in a log a table is at least as wide as its title, which then never wraps."""
        if not self.is_terminal:
            for obj in objects:
                if isinstance(obj, Table) and isinstance(obj.title, str) and obj.title:
                    obj.min_width = max(obj.min_width or 0, cell_len(obj.title))
        super().print(*objects, **kwargs)

    def rule(self, title: Any = "", **kwargs: Any) -> None:
        """A rule across the terminal, or LOG_RULE_WIDTH wide in a log."""
        if self.is_terminal or self._width is not None:
            super().rule(title, **kwargs)
        else:
            self.print(Rule(title, **kwargs), width=LOG_RULE_WIDTH)


def _log_panel(renderable: Any, *, title: Any = None, **_: Any) -> Group:
    """A help panel in a log: its title on a line, then its content; no box to pad out."""
    head = [Text(f"{title}:" if isinstance(title, str) else title or "")] if title else []
    return Group(*head, renderable)


class _StripLines:
    """A text stream that writes every line without its trailing spaces."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream, self._pending = stream, ""

    def write(self, text: str) -> int:
        *lines, self._pending = (self._pending + text).split("\n")
        for line in lines:
            self.stream.write(line.rstrip() + "\n")
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self.stream.write(self._pending.rstrip())
            self._pending = ""
        self.stream.flush()

    def isatty(self) -> bool:
        return False


_typer_console = rich_utils._get_rich_console
_typer_panel = rich_utils.Panel
_typer_width = rich_utils.MAX_WIDTH  # TERMINAL_WIDTH, when set


def _log_help_console(stderr: bool = False) -> Console:
    """typer's help Console, writing lines without trailing spaces (help in a log)."""
    console = _typer_console(stderr=stderr)
    console.file = _StripLines(sys.stderr if stderr else sys.stdout)
    return console


def _help_for_logs(log: bool) -> None:
    """In a log, help sections without boxes and no line ending in spaces; typer's otherwise."""
    rich_utils.MAX_WIDTH = LOG_HELP_WIDTH if log else _typer_width  # help text whole in a log
    rich_utils.Panel = _log_panel if log else _typer_panel
    rich_utils._get_rich_console = _log_help_console if log else _typer_console


def cli_console(stderr: bool = False) -> CliConsole:
    """The Console a command prints through (stdout, or stderr for progress and messages)."""
    return CliConsole(stderr=stderr)


_err = CliConsole(stderr=True, highlight=False)
_state = {"debug": False}


def version_option(prog: str) -> typer.models.OptionInfo:
    """A `--version` option that prints `<prog> <version>` and exits."""

    def show(value: bool) -> None:
        if value:
            typer.echo(f"{prog} {__version__}")
            raise typer.Exit()

    return typer.Option("--version", callback=show, is_eager=True, help="Print the version.")


def debug_option() -> typer.models.OptionInfo:
    """The global `--debug` option: a failing command shows its traceback."""

    def remember(value: bool) -> None:
        _state["debug"] = bool(value)

    return typer.Option(
        "--debug", callback=remember, is_eager=True, help="On an error, show the full traceback."
    )


def error_text(exc: BaseException) -> str:
    """An exception as a user reads it: an OS error as `PATH: what went wrong` (no `[Errno N]`)."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        path = f"{exc.filename} -> {exc.filename2}" if exc.filename2 is not None else exc.filename
        return f"{path}: {exc.strerror}"
    return str(exc) or type(exc).__name__


def error_line(message: str | BaseException) -> None:
    """Print `error: MESSAGE` on one line of stderr (markup in MESSAGE is not interpreted)."""
    if isinstance(message, BaseException):
        message = error_text(message)
    text = " ".join(part.strip() for part in str(message).splitlines() if part.strip())
    _err.print(f"[red]error:[/red] {rich_escape(text)}", soft_wrap=True)


def fail(message: str | BaseException, code: int = 2) -> NoReturn:
    """End the command: `error: MESSAGE` on one line, exit `code` (2: a usage error)."""
    error_line(message)
    raise typer.Exit(code)


def rich_escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


# Errors a user can fix from the message alone (a path, a value, a network answer): no type name.
_USER_ERRORS = (OSError, ValueError, RuntimeError, TimeoutError)


class CliGroup(TyperGroup):
    """A Typer group whose commands fail with one line (`error: ...`) and a non-zero exit; the
    traceback only with `--debug`. Flags show no `<bool>` and help is not cut in a log."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        _state["debug"] = False
        _help_for_logs(not _isatty(sys.stdout))
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except Exception as exc:
            # by class name: typer >= 0.2x carries its own copy of click's exceptions
            kinds = {cls.__name__ for cls in type(exc).__mro__}
            if "NoArgsIsHelpError" in kinds:
                typer.echo(exc.ctx.get_help())  # type: ignore[attr-defined]
                code = 2
            elif "ClickException" in kinds:
                hint = ""
                ctx = getattr(exc, "ctx", None)
                if "UsageError" in kinds and ctx is not None:
                    hint = f" (see: {ctx.command_path} --help)"
                error_line(exc.format_message() + hint)  # type: ignore[attr-defined]
                code = int(getattr(exc, "exit_code", 2))
            elif "Abort" in kinds:
                error_line("aborted")
                code = 1
            elif _state["debug"]:
                raise
            else:
                name = "" if isinstance(exc, _USER_ERRORS) else f"{type(exc).__name__}: "
                error_line(f"{name}{error_text(exc)} (--debug shows the traceback)")
                code = 1
        else:
            code = rv if isinstance(rv, int) else 0
        if not standalone_mode:
            return code
        sys.exit(code)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None:
            _tidy_flags(cmd, ctx)
        return cmd

    def format_help(self, ctx: Any, formatter: Any) -> None:
        _tidy_flags(self, ctx)
        super().format_help(ctx, formatter)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _tidy_flags(cmd: Any, ctx: Any) -> None:
    """Flags take no value: show no `<bool>` type next to them in --help."""
    params = list(cmd.params)
    help_option = cmd.get_help_option(ctx)
    if help_option is not None:
        params.append(help_option)
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""


def cli_app(help: str, **kwargs: Any) -> typer.Typer:
    """A Typer app with the shared behaviour (CliGroup, no pretty tracebacks)."""
    return typer.Typer(
        help=help, cls=CliGroup, no_args_is_help=True, pretty_exceptions_enable=False, **kwargs
    )
