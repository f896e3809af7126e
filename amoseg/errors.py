"""User-facing errors: one clear line, non-zero exit, no traceback.

Raise `AmosegError` for anything the user can fix (a bad file, a wrong option, a missing
folder). The CLI prints it as a single line and exits with code 2; any other exception is a
bug in amoseg and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class AmosegError(Exception):
    """A problem the user caused and can fix: what went wrong, which file, what to do."""

    exit_code = 2

    def __init__(self, what: str, path: str | Path | None = None, hint: str | None = None):
        self.what = what
        self.path = None if path is None else Path(path)
        self.hint = hint
        super().__init__(self.line())

    def line(self) -> str:
        text = _one_line(self.what)
        if self.path is not None:
            text += f": {self.path}"
        if self.hint:
            text += f" ({_one_line(self.hint)})"
        return text


def _one_line(text: str) -> str:
    """Library messages wrapped into `what` (nibabel, SimpleITK) may span lines; the CLI
    promises exactly one."""
    return " ".join(text.split()) if "\n" in text or "\r" in text else text
