"""One progress bar for every long task (synth, prepare, train, evaluate, score).

Bars go to stderr so stdout stays clean for tables and paths, and they are hidden when stderr
is not a terminal, so logs and pipes get no bar redraws, and with `amoseg --quiet`.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Task as ProgressTask
from rich.text import Text


class StageColumn(ProgressColumn):
    """`<scan>: <stage> <seconds> s` from the task's fields `scan`, `stage`, `started`
    (a `time.perf_counter()` value): what the item now running does, and for how long."""

    def render(self, task: ProgressTask) -> Text:
        name, started = task.fields.get("scan"), task.fields.get("started")
        if name is None or started is None:
            return Text("")
        seconds = time.perf_counter() - started
        return Text(f"{name}: {task.fields.get('stage', '')} {seconds:.0f} s")


QUIET, VERBOSE = -1, 1
_verbosity = 0


def set_verbosity(level: int) -> None:
    """The CLI's --quiet (QUIET) / --verbose (VERBOSE) for every command; 0 is normal."""
    global _verbosity
    _verbosity = level


def quiet() -> bool:
    return _verbosity <= QUIET


def verbose() -> bool:
    return _verbosity >= VERBOSE


def progress_bar(
    label: str = "", *, enabled: bool = True, transient: bool = False, eta: bool = True
) -> Progress:
    """A rich bar: 'label description ━━━ n/N elapsed [ETA remaining]'."""
    console = Console(stderr=True)
    prefix = f"[bold]{label}[/bold] " if label else ""
    columns: list[ProgressColumn | str] = [
        TextColumn(prefix + "{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    ]
    if eta:
        columns += [TextColumn("ETA"), TimeRemainingColumn()]
    return Progress(
        *columns,
        console=console,
        transient=transient,
        disable=not (enabled and console.is_terminal) or quiet(),
    )
