"""What `amoseg predict` adds over a batch of scans: resuming (`--continue`), one
`volumes.csv` for the whole batch, and the torch thread count.

Kept apart from the per-scan pipeline: it only looks at the files a scan's prediction
leaves in OUT (`predict.output_paths`), so it works whatever computes them.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from amoseg.atomic import write_text
from amoseg.errors import AmosegError
from amoseg.inference.inputs import ScanInput
from amoseg.inference.outputs import OutputSettings
from amoseg.inference.volumes import CSV_COLUMNS
from amoseg.outputs import check_new_outputs

BATCH_CSV = "volumes.csv"
MAX_JSON_BYTES = 16 << 20  # a scan's volumes JSON holds 15 organ rows and a few notes


def volumes_json(item: ScanInput, out_dir: Path) -> Path:
    return Path(out_dir) / f"{item.name}_volumes.json"


def read_volumes(item: ScanInput, out_dir: Path) -> dict | None:
    """A scan's volumes JSON, or None when it is missing, too large or not a finished
    table (an interrupted write leaves no file, but a user's edit or a foreign file may)."""
    path = volumes_json(item, out_dir)
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    organs = data.get("organs") if isinstance(data, dict) else None
    if not isinstance(organs, list) or not all(isinstance(row, dict) for row in organs):
        return None
    return data


def is_complete(item: ScanInput, out_dir: Path, *, overlay: bool, outputs: OutputSettings) -> bool:
    """Every output this scan would get exists and its volumes JSON parses: `--continue`
    skips it. A partial set (an interrupted run, or a new option such as --html) is redone."""
    from amoseg.inference.predict import output_paths

    paths = output_paths(item, out_dir, overlay, outputs)
    return all(p.is_file() for p in paths) and read_volumes(item, out_dir) is not None


def split_done(
    items: list[ScanInput], out_dir: Path, *, overlay: bool, outputs: OutputSettings
) -> tuple[list[ScanInput], list[ScanInput]]:
    """(scans to run, scans whose outputs are complete)."""
    todo: list[ScanInput] = []
    done: list[ScanInput] = []
    for item in items:
        (done if is_complete(item, out_dir, overlay=overlay, outputs=outputs) else todo).append(
            item
        )
    return todo, done


def _ours(path: Path) -> bool:
    """Whether an existing output file was written by amoseg (a label map with amoseg's
    header description); files of other kinds carry amoseg's own output names."""
    if not path.name.endswith(".nii.gz"):
        return True
    import nibabel as nib

    try:
        descrip = bytes(nib.load(str(path)).header.get("descrip", b""))
    except Exception:  # unreadable: not known to be ours
        return False
    return descrip.lower().startswith(b"amoseg")


def check_resumable(
    todo: list[ScanInput],
    out_dir: Path,
    *,
    overlay: bool,
    outputs: OutputSettings,
    overwrite: bool,
    resume: bool,
) -> None:
    """Refuse, before any work, outputs the run would replace without leave. With
    `--continue` the partial outputs of an earlier amoseg run are redone, but a label map
    amoseg did not write (a user's `ct_seg.nii.gz` beside the scan) still needs
    --overwrite."""
    from amoseg.inference.predict import check_outputs, output_paths

    theirs = [
        item
        for item in todo
        if not resume
        or not all(_ours(p) for p in output_paths(item, out_dir, overlay, outputs) if p.exists())
    ]
    check_outputs(theirs, out_dir, overlay=overlay, outputs=outputs, overwrite=overwrite)
    check_outputs(todo, out_dir, overlay=overlay, outputs=outputs, overwrite=True)


def check_batch_csv(
    items: list[ScanInput], out_dir: Path, *, overwrite: bool, resume: bool
) -> Path | None:
    """OUT/volumes.csv for a batch of two or more scans (None for one scan), refused up
    front like any output when it exists; `--continue` rewrites it, since it holds nothing
    but the scans' own volume tables."""
    if len(items) < 2:
        return None
    target = Path(out_dir) / BATCH_CSV
    check_new_outputs(
        [target],
        overwrite=overwrite or resume,
        inputs=[item.path for item in items],
        hint="pass --overwrite to replace it, --continue to resume the batch, "
        "or choose another -o folder",
    )
    return target


def write_batch_csv(items: list[ScanInput], out_dir: Path, target: Path) -> int:
    """One row per scan per organ, from each scan's volumes JSON (scans without one, e.g.
    failed, are left out), written atomically; returns the number of scans in it."""
    rows: list[dict] = []
    scans = 0
    for item in items:
        data = read_volumes(item, out_dir)
        if data is None:
            continue
        scans += 1
        source = str(data.get("input", item.path))
        rows += [{"scan": item.name, "input": source, **row} for row in data["organs"]]
    columns = ["scan", "input", *CSV_COLUMNS]
    for row in rows:  # columns a newer per-scan table adds come after the known ones
        columns += [key for key in row if key not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", restval="")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    write_text(target, buffer.getvalue())
    return scans


def set_threads(threads: int | None) -> None:
    """Torch's intra-op thread count for this run (None: torch's default)."""
    if threads is None:
        return
    if threads < 1:
        raise AmosegError(f"--threads must be >= 1, got {threads}", None, "e.g. --threads 4")
    import torch

    torch.set_num_threads(threads)
