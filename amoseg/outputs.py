"""Nothing a user made is replaced unless asked: the checks every writing command runs first.

`check_new_outputs` is called before any work, with every path the command will write, so a
refusal costs nothing and leaves nothing half-done. An input file is never an output, even
with `--overwrite` (`amoseg score --json` onto a label map, `predict -o` the scans' folder).
`claim_output_folder` makes that check hold while the command runs: one writer per folder.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from amoseg.errors import AmosegError

OVERWRITE_HINT = "pass --overwrite to replace it, or choose another output"


def check_new_outputs(
    outputs: Iterable[str | Path],
    *,
    overwrite: bool = False,
    inputs: Iterable[str | Path] = (),
    hint: str = OVERWRITE_HINT,
) -> None:
    """Refuse outputs that would replace an input (always), repeat one another, or exist
    (unless `overwrite`); folders are never outputs here."""
    protected = {Path(p).resolve() for p in inputs}
    seen: set[Path] = set()
    existing: list[Path] = []
    for output in outputs:
        path = Path(output)
        resolved = path.resolve()
        if resolved in protected:
            raise AmosegError(
                "an output would replace an input file", path, "choose another output"
            )
        if resolved in seen:
            raise AmosegError(
                "two outputs would be written to one file", path, "give them distinct names"
            )
        seen.add(resolved)
        if path.is_dir():
            raise AmosegError("output path is a folder, expected a file", path)
        if path.exists() and not overwrite:
            existing.append(path)
    if existing:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise AmosegError(f"output exists{more}", existing[0], hint)


def input_files(*paths: str | Path) -> list[Path]:
    """The files an input argument stands for: itself, or the files directly in a folder."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += [q for q in p.iterdir() if q.is_file()]
        elif p.exists():
            found.append(p)
    return found


# --- one writer per output folder ---------------------------------------------------------

#: folders this process holds for the running command: resolved path → (fd, created by us)
_claims: dict[Path, tuple[int | None, bool]] = {}


def _lock_folder(folder: Path, command: str) -> tuple[int | None, bool]:
    """An exclusive, non-blocking lock on the folder itself (flock on its descriptor: no lock
    file is left in the user's folder, and the OS drops it when the holder dies). Where the
    folder cannot be opened or locked (no read permission, a file system without locks) the
    command goes on unlocked: the existence check still runs, and a write that fails is one
    line of its own."""
    import errno
    import fcntl
    import os

    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AmosegError(
            f"cannot create output folder ({exc.strerror or exc})",
            folder,
            "choose a writable location",
        ) from None
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return None, created
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return None, created
        raise AmosegError(
            f"another amoseg {command} is writing into this folder",
            folder,
            "wait for it to finish, or choose another output folder",
        ) from None
    return fd, created


def _unlock_folder(folder: Path, fd: int | None, created: bool) -> None:
    import contextlib
    import os

    if fd is not None:
        os.close(fd)
    if created:  # a batch that wrote nothing leaves no empty folder it made
        with contextlib.suppress(OSError):
            folder.rmdir()


def claim_output_folder(folder: str | Path, command: str = "predict") -> None:
    """Hold `folder` for this command: a second amoseg writing into it at the same time gets
    one line instead of both passing the 'output exists' check and the later replacing the
    earlier's files. Call it before `check_new_outputs`; the CLI releases every claim when the
    command ends (`release_output_folders`), the OS when the process dies."""
    try:
        import fcntl  # noqa: F401 - POSIX only
    except ImportError:  # Windows: no advisory folder locks; the existence check still runs
        return
    path = Path(folder).resolve()
    if path not in _claims:
        _claims[path] = _lock_folder(path, command)


def release_output_folders() -> None:
    """Release every folder `claim_output_folder` took (end of a CLI command)."""
    while _claims:
        path, (fd, created) = _claims.popitem()
        _unlock_folder(path, fd, created)
