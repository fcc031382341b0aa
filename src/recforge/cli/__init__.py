"""The ``recforge`` command line. Each command is a thin call into the library: argument
parsing, messages and exit codes here; the work in :mod:`recforge.experiment.workflow`,
the experiment runner and the server.

Errors a user can cause (bad data, bad parameter, bad model directory) print one line on
stderr and exit with status 2, without a traceback.

Imports of torch, pandas and what imports them are made inside the commands, after the
arguments that need none of them are checked, so that ``recforge --help`` and a mistake
(an unknown model, a missing file) are answered at once.

Output that is not a terminal (a pipe, a file) is laid out ``COLUMNS`` wide, else
:data:`~recforge.cli.common.PIPE_WIDTH`: help and tables are not cut at 80 columns.
"""

from __future__ import annotations

import logging
import sys

import typer
import typer.rich_utils
from rich.logging import RichHandler
from rich.markup import escape

from recforge._version import __version__
from recforge.cli.common import (
    ModelListHelp,
    ParamsCommand,
    console,
    err_console,
    output_width,
)
from recforge.cli.datasets import datasets_app
from recforge.cli.experiments import models_cmd, quickstart, run, tune
from recforge.cli.forget import forget
from recforge.cli.scoring import evaluate_cmd, predict, recommend, similar
from recforge.cli.serve import serve
from recforge.cli.train import train
from recforge.errors import RecforgeError

__all__ = ["app", "main"]

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="recforge: build, evaluate and serve recommender systems.")
app.add_typer(datasets_app, name="datasets")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"recforge {__version__}")
        raise typer.Exit()


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
          quiet: bool = typer.Option(False, "--quiet", "-q", help="Warnings and errors only."),
          version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Show the version and exit.")) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    root = logging.getLogger("recforge")
    root.handlers[:] = [RichHandler(console=err_console, show_path=False, show_time=False)]
    root.setLevel(level)
    root.propagate = False


def _summary(command: object) -> str:
    """The first paragraph of a command's help as one line (``recforge --help`` keeps a
    docstring's line breaks otherwise), wrapped to the width by the help's layout."""
    return " ".join((getattr(command, "__doc__", None) or "").split("\n\n")[0].split())


app.command(cls=ParamsCommand, short_help=_summary(train))(train)  # -p KEY=VALUE
for command in (run, tune, serve, recommend, predict):
    app.command(short_help=_summary(command))(command)
app.command(cls=ModelListHelp, short_help=_summary(similar))(similar)
app.command("evaluate", short_help=_summary(evaluate_cmd))(evaluate_cmd)
app.command("models", short_help=_summary(models_cmd))(models_cmd)
app.command(short_help=_summary(quickstart))(quickstart)
app.command(short_help=_summary(forget))(forget)


def _os_error(exc: OSError) -> str:
    """``IsADirectoryError: [Errno 21] ...: 'x'`` as ``x: is a directory``."""
    what = (exc.strerror or str(exc)).rstrip(".").lower()
    return f"{exc.filename}: {what}" if exc.filename else str(exc)


#: Typer's help width from its ``TERMINAL_WIDTH`` variable, as it read it at import
_TYPER_MAX_WIDTH = typer.rich_utils.MAX_WIDTH


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning recforge errors into one line and exit status 2.

    Usage errors (unknown option, missing argument) are reported by Typer, also with
    status 2.
    """
    # TERMINAL_WIDTH (Typer's own setting, read when Typer is imported) wins; else the
    # width of this call's stdout and COLUMNS (None on a terminal), set on every call so
    # that a second call in one process does not keep the first one's width
    typer.rich_utils.MAX_WIDTH = (_TYPER_MAX_WIDTH if _TYPER_MAX_WIDTH is not None
                                  else output_width(sys.stdout))
    # the consoles that print tables and errors: the same, for this call's streams
    console.width = output_width(sys.stdout)  # type: ignore[assignment]
    err_console.width = output_width(sys.stderr)  # type: ignore[assignment]
    try:
        args = list(sys.argv[1:] if argv is None else argv)
        app(args=args, prog_name="recforge", obj={"argv": args})
    except (RecforgeError, OSError) as exc:  # bad input, options, paths: one line
        text = str(exc) if isinstance(exc, RecforgeError) else _os_error(exc)
        err_console.print(f"[bold red]error:[/bold red] {escape(text)}", highlight=False,
                          soft_wrap=True, markup=True)
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
