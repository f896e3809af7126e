"""Nothing a user made is replaced unless asked: the checks every writing command runs first.

`check_new_outputs` is called before any work, with every path the command will write, so a
refusal costs nothing and leaves nothing half-done. An input file is never an output, even
with `--overwrite` (`amoseg score --json` onto a label map, `predict -o` the scans' folder).
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
