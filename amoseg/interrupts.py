"""Ctrl-C and SIGTERM: exit 130 / 143 with one line saying what was finished.

A long command records what is complete as it goes (`note_finished`); `amoseg.cli.main`
prints it when the command is interrupted, so `amoseg predict … && next-step` stops, and the
user knows which scans, cases or epochs are safely on disk. SIGTERM (a scheduler, `kill`,
torchrun tearing down) raises `Terminated`, a KeyboardInterrupt, so every clean-up path that
handles Ctrl-C (DataLoader workers, Optuna marking the trial failed, temp files) handles it too.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

SIGINT_EXIT = 130  # 128 + SIGINT, what shells report for Ctrl-C
SIGTERM_EXIT = 143  # 128 + SIGTERM

_finished: str | None = None
_nested = 0  # > 0 while an outer command runs an inner one (tune running train)
_pending: KeyboardInterrupt | None = None  # raised by a handler, not yet seen by the CLI


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt."""

    exit_code = SIGTERM_EXIT


def _on_signal(signum: int, frame: FrameType | None) -> None:
    # Remembered as well as raised: Python drops an exception raised while a destructor
    # (`__del__`, e.g. nibabel's) runs, and the command would then finish with exit 0.
    global _pending
    _pending = Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
    raise _pending


def install_signal_handlers() -> None:
    """SIGINT → KeyboardInterrupt, SIGTERM → `Terminated`, both remembered (main thread
    only; signal handlers cannot be set elsewhere)."""
    global _pending
    _pending = None
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_signal)
        signal.signal(signal.SIGTERM, _on_signal)


def pending() -> KeyboardInterrupt | None:
    """An interrupt that was signalled but swallowed on its way (see `_on_signal`)."""
    return _pending


def clear_pending() -> None:
    global _pending
    _pending = None


def note_finished(text: str | None) -> None:
    """Record what the running command has finished, e.g. 'epoch 3 saved in runs/unet'.

    Also a safe point: an interrupt that was swallowed since is raised again here."""
    global _finished
    if not _nested:
        _finished = text
    if _pending is not None:
        raise _pending


@contextmanager
def nested() -> Iterator[None]:
    """Run an inner command (train inside a tune trial) whose notes must not replace the
    outer command's: the user ran `tune`, so the line says how many trials finished."""
    global _nested
    _nested += 1
    try:
        yield
    finally:
        _nested -= 1


def finished() -> str | None:
    return _finished


def exit_code_of(exc: KeyboardInterrupt) -> int:
    return getattr(exc, "exit_code", SIGINT_EXIT)


def interrupted_line(exc: KeyboardInterrupt) -> str:
    """'interrupted (SIGTERM); finished: …' — the one line the CLI prints."""
    name = "SIGTERM" if isinstance(exc, Terminated) else "Ctrl-C"
    done = _finished or "nothing finished yet"
    return f"interrupted ({name}); {done}"


def listing(names: list[str], limit: int = 8) -> str:
    """'a, b, c' or 'a, b, … (12 in all)' for a one-line report."""
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit]) + f", … ({len(names)} in all)"


#: Linux prctl option: the signal a process gets when its parent dies
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Make a worker process end when `parent` (the process that started it) ends, even by
    kill -9, instead of living on with parent 1, writing and holding memory.

    Linux: the kernel sends SIGKILL (PR_SET_PDEATHSIG; workers write atomically, so nothing
    is left half-written); elsewhere a daemon thread checks the parent once a second. A
    parent that died before this call is caught by the parent-id check."""
    import ctypes
    import os
    import sys

    armed = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if os.getppid() != parent:
        os._exit(1)
    if armed:
        return

    def watch() -> None:
        import time

        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()
