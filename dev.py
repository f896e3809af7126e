#!/usr/bin/env python3
"""Set-up and entry points for a fresh checkout; needs only Python >= 3.11 and pip.

    python3 dev.py demo [ARGS...]   create/refresh .venv, then run `amoseg demo ARGS...`
    python3 dev.py test [ARGS...]   create/refresh .venv, then ruff, lint-imports (the package
                                    layers) and pytest ARGS... (one pytest worker per core
                                    unless ARGS choose)
    python3 dev.py setup            create/refresh .venv only

The virtual environment lives at .venv; it is rebuilt only when pyproject.toml or
constraints.txt change (a hash stamp in .venv records what was installed).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".amoseg-install-stamp"


def _inputs_hash() -> str:
    h = hashlib.sha256()
    for name in ("pyproject.toml", "constraints.txt"):
        h.update((ROOT / name).read_bytes())
    return h.hexdigest()


def _run(cmd: list[str]) -> int:
    print("+", " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=ROOT)


def setup() -> None:
    """Create .venv and install amoseg (editable) with pinned dependencies, if stale."""
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py may be run by an older python3
        sys.exit(f"amoseg needs Python >= 3.11; this is {sys.version.split()[0]}")
    if not (BIN / "python").exists():
        print(f"creating virtual environment at {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
        STAMP.unlink(missing_ok=True)
    wanted = _inputs_hash()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    pip = [str(BIN / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    cmd = [*pip, "-c", "constraints.txt", "-e", ".[dev]"]
    if _run(cmd) != 0:
        sys.exit("dependency installation failed (see pip's message above)")
    STAMP.write_text(wanted)


def _parallel(args: list[str]) -> list[str]:
    """One pytest worker per core (pytest-xdist), each file on one worker (its module
    fixtures built once): most tests use one core, so two workers halve the suite on 2 cores.
    Left out when the caller chose (`-n …`, `-p no:xdist`)."""
    if any(a == "-n" or a.startswith(("-n", "--numprocesses")) or "xdist" in a for a in args):
        return []
    workers = os.cpu_count() or 1
    # files in collection order (tests/conftest.py puts the longest first), not by test count
    order = ["--no-loadscope-reorder"]
    return [] if workers < 2 else ["-n", str(workers), "--dist", "loadfile", *order]


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"demo", "test", "setup"}:
        print(__doc__)
        return 2
    setup()
    what, rest = argv[0], argv[1:]
    if what == "demo":
        return _run([str(BIN / "amoseg"), "demo", *rest])
    if what == "test":
        rc = _run([str(BIN / "ruff"), "check", "."])
        rc = rc or _run([str(BIN / "ruff"), "format", "--check", "."])
        rc = rc or _run([str(BIN / "lint-imports")])  # the package layers (.importlinter)
        if rc:
            return rc
        rc = _run([str(BIN / "python"), "-m", "pytest", *_parallel(rest), *rest])
        # pytest exits 5 when it collected nothing: that is a failure for us.
        return 1 if rc == 5 else rc
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
