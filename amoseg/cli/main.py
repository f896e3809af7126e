"""The `amoseg` command: a typer app assembled from the command modules in this package.

Each command module defines `register(app: typer.Typer)` and imports heavy libraries inside
its command function, so `amoseg --help` stays fast. User errors (`AmosegError`) become one
line on stderr and exit code 2; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
import time
from collections.abc import Callable
from typing import Any

import typer

from amoseg import interrupts, progress
from amoseg._version import __version__
from amoseg.errors import AmosegError
from amoseg.outputs import release_output_folders

# typer >= 0.2x vendors click (typer._click); its usage errors are TyperExceptions with
# .show() and exit_code. Older typer raised the click package's own ClickException.
UsageErrors: type[Exception] = (
    getattr(typer, "TyperException", None) or importlib.import_module("click").ClickException
)

#: the environment variable the completion scripts set (click's rule: _PROG_COMPLETE)
COMPLETE_VAR = "_AMOSEG_COMPLETE"

app = typer.Typer(
    name="amoseg",
    help="Abdominal multi-organ segmentation of CT/MRI (AMOS22): prepare, train, tune, "
    "evaluate, compare, predict.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, pwsh)
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"amoseg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="No progress bars (every command; also after it)."
    ),
    verbose: bool = typer.Option(
        False,
        "--verbose",
        "-v",
        help="Library warnings too, and the command's wall time at the end (every command).",
    ),
) -> None:
    """--debug is read by `main()` before the app runs (errors are handled there)."""
    if quiet and verbose:
        raise AmosegError("--quiet and --verbose contradict each other", hint="pass one")
    progress.set_verbosity(progress.QUIET if quiet else progress.VERBOSE if verbose else 0)


#: the values of fixed-choice options, listed in each command's --help and offered by shell
#: completion; each command still parses and checks them itself, so the values accepted and
#: the one-line error for a bad one are unchanged ((command, option) entries win)
CHOICES: dict[str | tuple[str, str], tuple[str, ...]] = {
    "--device": ("auto", "cpu", "cuda", "cuda:N", "mps"),
    "--format": ("nifti", "dicom-seg", "both"),
    "--postprocess": ("auto", "none", "lcc"),
    "--backend": ("torch", "onnx"),
    "--precision": ("auto", "fp32", "bf16"),
    "--keep": ("organ", "all"),
    "--modality": ("ct", "mr", "all"),
    ("demo", "--modality"): ("ct", "mixed", "mr"),
    ("synth", "--modality"): ("ct", "mr", "mixed"),
    ("evaluate", "--split"): ("train", "val", "test"),
    ("compare", "--split"): ("train", "val", "test"),
}
#: options every command takes, wherever they stand on the command line
GLOBAL_FLAGS = ("--quiet", "-q", "--verbose", "-v")


def _list_choices(command: Any) -> None:
    """Show CHOICES in --help (the metavar) and complete them in the shell."""
    for name, sub in getattr(command, "commands", {}).items():
        for param in sub.params:
            for opt in getattr(param, "opts", []):
                choices = CHOICES.get((name, opt)) or CHOICES.get(opt)
                if choices is None or getattr(param, "is_flag", False):
                    continue
                param.metavar = "[" + "|".join(choices) + "]"
                if hasattr(param, "_custom_shell_complete"):
                    param._custom_shell_complete = _completer(choices)


def _completer(choices: tuple[str, ...]) -> Callable[[Any, Any, str], list[str]]:
    def complete(ctx: Any, param: Any, incomplete: str) -> list[str]:
        return [c for c in choices if c.startswith(incomplete) and not c.endswith(":N")]

    return complete


def _hoist_global_flags(command: Any, args: list[str]) -> list[str]:
    """`amoseg predict ... --quiet` as `amoseg --quiet predict ...`: a global flag after a
    command that does not declare it itself is the root's (prepare and plan keep their own
    --quiet, and the root's is set as well)."""
    commands = getattr(command, "commands", {})
    at = next((i for i, a in enumerate(args) if a in commands), None)
    if at is None:
        return args
    own = {o for p in commands[args[at]].params for o in getattr(p, "opts", [])}
    moved = [a for a in args[at + 1 :] if a in GLOBAL_FLAGS and a not in own]
    both = [a for a in args[at + 1 :] if a in GLOBAL_FLAGS and a in own]
    if not moved and not both:
        return args
    rest = [a for a in args[at + 1 :] if a not in moved]
    return [*args[:at], *moved, *both, args[at], *rest]


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


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A library warning as one `warning:` line on stderr, without file/line internals."""
    text = " ".join(str(message).split())
    print(f"warning: {text}", file=file or sys.stderr)


def install_warning_notes() -> None:
    """Library warnings become our own one-line notes; deprecation notices, which are for
    amoseg's developers and mean nothing to a user, are silenced (`--debug` keeps them)."""
    import warnings

    warnings.showwarning = _show_warning
    for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)


def _usage_error(exc: Exception) -> None:
    """One line, like our own errors: 'error: Invalid value for '--epochs': … (see --help)'."""
    code = int(getattr(exc, "exit_code", 2))
    if type(exc).__name__ == "NoArgsIsHelpError":  # bare `amoseg` / `amoseg CMD`: the help
        exc.show()  # type: ignore[attr-defined]
        sys.exit(code)
    ctx = getattr(exc, "ctx", None)
    where = f"{ctx.command_path} --help" if ctx is not None else "amoseg --help"
    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    message = " ".join(str(message).split())
    typer.secho(f"error: {message} (see `{where}`)", err=True, fg=typer.colors.RED)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: every outcome becomes an honest exit status.

    0 success; 2 a user error (one line) or a usage error; 130 Ctrl-C and 143 SIGTERM (one
    line saying what was finished); 1 a bug (traceback). The click command is invoked here
    rather than through typer's own main, which in non-standalone mode turns Ctrl-C and
    `typer.Exit(code)` into a return value that a caller can silently drop.
    """
    args = list(argv if argv is not None else sys.argv[1:])
    command = typer.main.get_command(app)
    _list_choices(command)
    if os.environ.get(COMPLETE_VAR):  # the shell asks for completions (see --install-completion)
        command.main(args, prog_name="amoseg", complete_var=COMPLETE_VAR)
    args = _hoist_global_flags(command, args)
    debug = "--debug" in args
    if not debug and not {"--verbose", "-v"} & set(args):
        install_warning_notes()
    interrupts.install_signal_handlers()
    interrupts.note_finished(None)
    progress.set_verbosity(0)  # the root callback sets it from --quiet / --verbose
    start = time.perf_counter()
    try:
        with command.make_context("amoseg", args) as ctx:
            command.invoke(ctx)
        if progress.verbose():
            typer.echo(f"done in {time.perf_counter() - start:.1f} s", err=True)
        swallowed = interrupts.pending()
        if swallowed is not None:  # the signal came while a destructor ran, and was lost
            raise swallowed
    except AmosegError as exc:
        if debug:
            raise
        typer.secho(f"error: {exc.line()}", err=True, fg=typer.colors.RED)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt as exc:
        interrupts.clear_pending()
        typer.echo(interrupts.interrupted_line(exc), err=True)
        sys.exit(interrupts.exit_code_of(exc))
    except typer.Exit as exc:  # typer.Exit / --version / --help
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(1)
    except UsageErrors as exc:  # usage errors (bad option value, missing argument)
        _usage_error(exc)
    except BrokenPipeError:  # `amoseg … | head`: the reader left; nothing to report
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - silences the flush at exit
        sys.exit(1)
    finally:
        release_output_folders()
