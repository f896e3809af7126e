"""The `amoseg` command: a typer app assembled from the command modules in this package.

Each command module defines `register(app: typer.Typer)` and imports heavy libraries inside
its command function, so `amoseg --help` stays fast. User errors (`AmosegError`) become one
line on stderr and exit code 2; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import typer

import amoseg
from amoseg.errors import AmosegError

app = typer.Typer(
    name="amoseg",
    help="Abdominal multi-organ segmentation of CT/MRI (AMOS22): prepare, train, tune, "
    "evaluate, compare, predict.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"amoseg {amoseg.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
) -> None:
    """--debug is read by `main()` before the app runs (errors are handled there)."""


def _register_commands() -> None:
    package = importlib.import_module("amoseg.cli")
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.name in {"main"} or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"amoseg.cli.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


_register_commands()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        app(args=argv, standalone_mode=False)
    except AmosegError as exc:
        if debug:
            raise
        typer.secho(f"error: {exc.line()}", err=True, fg=typer.colors.RED)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(1)
    except Exception as exc:  # usage errors arrive here in non-standalone mode
        # typer >= 0.2x vendors click (typer._click, no `click` package); its usage errors
        # are TyperException subclasses with .show(). Older typer raises click's own.
        usage = getattr(typer, "TyperException", ())
        if isinstance(exc, usage) or type(exc).__module__.startswith("click"):
            exc.show()
            sys.exit(exc.exit_code)
        raise
