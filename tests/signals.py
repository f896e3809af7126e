"""Interrupt a real `amoseg` process once it has started working, and report how it ended."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def interrupt_when(
    args: list[str],
    ready: Callable[[], bool],
    sig: int = signal.SIGINT,
    timeout: float = 120.0,
    env: dict[str, str] | None = None,
) -> tuple[int, str, str]:
    """Start `python -m amoseg ARGS`, send `sig` as soon as `ready()` is true (polled), and
    return (exit status, stdout, stderr). Fails if the process ends before it was ready."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "amoseg", *args],
        cwd=REPO,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            if proc.poll() is not None:
                out, err = proc.communicate()
                raise AssertionError(f"ended (rc {proc.returncode}) before ready:\n{out}\n{err}")
            if time.monotonic() > deadline:
                raise AssertionError("never became ready")
            time.sleep(0.02)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""
