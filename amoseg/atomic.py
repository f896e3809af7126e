"""Crash-safe writes: every file a later step trusts is written to a temp name, then renamed.

`os.replace` is atomic on POSIX within one filesystem, so a reader sees either the old file
or the complete new one, never a half-written file, even after kill -9 or a full disk. For a
power cut too, the data is fsynced before the rename (else the rename can reach the disk
before the data, leaving an empty file under the final name) and the folder after it (else
the rename itself can be lost).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from amoseg.errors import AmosegError


def _process_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp/mkdtemp create owner-only entries (0o600/0o700); give results the modes a plain
# open()/mkdir() would, so other users of a shared store can read it.
_UMASK = _process_umask()
_FILE_MODE = 0o666 & ~_UMASK
_DIR_MODE = 0o777 & ~_UMASK


def _reason(exc: OSError) -> str:
    """errno text when there is one; numpy's short-write OSError carries only a message."""
    return exc.strerror or str(exc) or type(exc).__name__


def fsync_file(path: Path) -> None:
    """Flush a written file's data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (a rename, a new file) to the disk. Some filesystems (and
    Windows) cannot fsync a folder; there the rename is as durable as the OS makes it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """fsync every file under `folder`, then every folder, deepest first."""
    dirs = [folder]
    for path in folder.rglob("*"):
        if path.is_dir():
            dirs.append(path)
        elif path.is_file():
            fsync_file(path)
    for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
        fsync_dir(d)


def _disk_full_error(exc: Exception, folder: Path, target: Path) -> AmosegError | None:
    """Some writers report a full disk as another exception (torch.save: RuntimeError
    'unexpected pos ...'); if the folder's disk is (nearly) full, say so in one line."""
    if isinstance(exc, AmosegError):
        return None
    try:
        full = shutil.disk_usage(folder).free < (1 << 20)
    except OSError:
        return None
    if not full:
        return None
    return AmosegError("could not write (no space left on device)", target, "free some disk space")


@contextlib.contextmanager
def atomic_path(target: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` only on success.

    `suffix` keeps a meaningful extension on the temp name (some writers choose the format
    from it, e.g. '.nii.gz').
    """
    target = Path(target)
    parent = target.parent
    if target.exists() and not target.is_file():
        # A rename onto /dev/null (say, `--json /dev/null` as root) would replace the device
        # with a plain file; a folder cannot take a file's place either.
        raise AmosegError(
            "output path exists and is not a regular file", target, "choose a file path"
        )
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AmosegError(
            f"cannot create output folder ({_reason(exc)})", parent, "choose a writable location"
        ) from exc
    suffix = suffix if suffix is not None else "".join(target.suffixes)
    try:
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=parent
        )
    except OSError as exc:  # an unwritable folder, a read-only file system
        raise AmosegError(
            f"cannot write into the output folder ({_reason(exc)})",
            parent,
            "choose a writable location",
        ) from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, _FILE_MODE)
            fsync_file(tmp)
        os.replace(tmp, target)
        fsync_dir(parent)
    except OSError as exc:
        raise AmosegError(
            f"could not write ({_reason(exc)})", target, "check free disk space and permissions"
        ) from exc
    except Exception as exc:
        error = _disk_full_error(exc, parent, target)
        if error is None:
            raise
        raise error from exc
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside `target`; it becomes `target` only when complete."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    except OSError as exc:
        raise AmosegError(
            f"cannot create output folder ({_reason(exc)})",
            target.parent,
            "choose a writable location",
        ) from exc
    try:
        yield tmp
        os.chmod(tmp, _DIR_MODE)
        fsync_tree(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except OSError as exc:
        raise AmosegError(
            f"could not write ({_reason(exc)})", target, "check free disk space and permissions"
        ) from exc
    except Exception as exc:
        error = _disk_full_error(exc, target.parent, target)
        if error is None:
            raise
        raise error from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_bytes(target: str | Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text(target: str | Path, text: str) -> None:
    write_bytes(target, text.encode("utf-8"))


def write_json(target: str | Path, obj: Any) -> None:
    write_text(target, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path, what: str = "JSON file") -> Any:
    """Read JSON with a clear one-line error for missing or broken files."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise AmosegError(f"{what} not found", path) from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AmosegError(
            f"{what} is not valid JSON ({exc})", path, "fix or regenerate it"
        ) from exc
    except RecursionError as exc:  # json recurses per nesting level
        raise AmosegError(
            f"{what} is nested too deeply to read", path, "fix or regenerate it"
        ) from exc
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise AmosegError(
            f"{what} is not valid JSON ({str(exc)[:120]})", path, "fix or regenerate it"
        ) from exc
    except OSError as exc:  # a folder, no permission, I/O error
        raise AmosegError(f"{what} cannot be read ({_reason(exc)})", path) from exc
