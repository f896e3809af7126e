"""One `find_cases` for every dataset layout: which labelled scans a folder holds, in AMOS terms.

Layouts: AMOS22 (`amoseg.data.amos`: dataset.json lists, or imagesTr/labelsTr scanned by
name) and nnU-Net v2 raw datasets (`amoseg.data.nnunet`). Whatever the layout, every case
then passes the same checks, so nothing downstream has to trust a file name or a JSON value:

- ids are safe file names (they name the store's case folders): letters, digits, `_`, `-`, `.`,
  starting with a letter or digit; never a path, `.` or `..`;
- image and label paths as written stay inside the dataset folder (no `../`, no absolute
  paths); symlinks in it are followed wherever they lead (the user made them; nothing is
  ever written or deleted through them);
- modality comes from the files' own statements, most specific first: the entry's own
  `modality`, AMOS's id rule for AMOS-named cases (`amos_0507` is MR; AMOS22's dataset.json
  says `{"0": "CT"}` for its MR scans too, so the id rule must beat the dataset-wide field),
  the dataset-wide `modality` / `channel_names`, then the caller's default;
- labels are mapped by dataset.json's `labels` (AMOS's id → name or nnU-Net's name → id):
  AMOS's own set passes as is, a differently numbered set of AMOS organs is remapped by
  name, any other set is refused with one line.
"""

from __future__ import annotations

import os
import re
import reprlib
import warnings
from pathlib import Path

from amoseg.atomic import read_json
from amoseg.data.amos import AmosCase, CaseEntry, read_amos_listing
from amoseg.data.nnunet import is_nnunet, read_nnunet_listing
from amoseg.errors import AmosegError
from amoseg.labels import amos_modality, modality_from_name, organ_id

SAFE_CASE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
MAX_DATASET_JSON_BYTES = 32 << 20  # AMOS22's own is ~100 KB; anything this big is not a listing
MAX_LABEL_ID = 65535  # label files are at most uint16
_SHOW = reprlib.Repr()  # user values in messages: short, whatever their size or depth
_SHOW.maxlevel, _SHOW.maxstring, _SHOW.maxother, _SHOW.maxdict, _SHOW.maxlist = 2, 40, 40, 4, 4


def find_cases(root: str | Path, default_modality: str = "ct") -> list[AmosCase]:
    """Every labelled case under a dataset folder (AMOS22 or nnU-Net layout), sorted by id.

    Files are not opened here. `default_modality` is taken for cases whose modality nothing
    states (a warning counts them).
    """
    root = Path(root)
    if not root.exists():
        raise AmosegError("dataset folder not found", root, "pass the folder holding dataset.json")
    if not root.is_dir():
        raise AmosegError(
            "dataset root is not a folder", root, "pass the folder holding dataset.json"
        )
    listing_path = root / "dataset.json"
    spec = read_dataset_json(listing_path) if listing_path.exists() else None
    if is_nnunet(spec):
        listing = read_nnunet_listing(root, spec, listing_path)
    else:
        listing = read_amos_listing(root, spec, listing_path)
    if not listing.entries:
        raise AmosegError(
            "no labelled cases found",
            root,
            "expected an AMOS22 folder (dataset.json or imagesTr/labelsTr) or an nnU-Net raw "
            "dataset (imagesTr/<case>_0000.nii.gz, labelsTr, dataset.json)",
        )
    lut = label_lut(listing.labels, listing.source)
    dataset_modality = modality_from_name(_single_name(listing.modality))
    _resolve(root, root)
    cases, defaulted = [], 0
    for entry in listing.entries:
        check_case_id(entry.case_id, entry, listing.source)
        for path, written in ((entry.image, entry.written), (entry.label, entry.written_label)):
            _check_inside(root, path, written or str(path), entry, listing.source)
        modality, source = _modality(entry, dataset_modality, default_modality, listing.source)
        defaulted += source == "default"
        cases.append(
            AmosCase(entry.case_id, entry.image, entry.label, modality, lut, modality_source=source)
        )
    _check_unique(cases, listing.source)
    if defaulted:
        warnings.warn(
            f"{defaulted} case(s) have no modality in dataset.json and no AMOS id "
            f"(amos_NNNN): taken as {default_modality.upper()}",
            stacklevel=2,
        )
    return sorted(cases, key=lambda c: c.case_id)


def read_dataset_json(path: Path) -> dict:
    """dataset.json as a dict; a huge, deeply nested or non-object document is one line."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise AmosegError(f"dataset.json cannot be read ({exc.strerror})", path) from exc
    if size > MAX_DATASET_JSON_BYTES:
        raise AmosegError(
            f"dataset.json is {size / 2**20:.0f} MiB, far larger than any dataset listing",
            path,
            "is this the right file?",
        )
    spec = read_json(path, "dataset.json")
    if not isinstance(spec, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
            type(spec), "a number"
        )
        raise AmosegError(
            f"dataset.json is {kind}, not a JSON object",
            path,
            'expected {"training": [...], ...} (AMOS) or {"channel_names": ...} (nnU-Net)',
        )
    return spec


def check_case_id(case_id: str, entry: CaseEntry, source: Path) -> None:
    """Case ids name the store's folders: a path separator, `.` or `..` would let a file name
    reach outside them (or make a rebuild delete the store's cases)."""
    if not SAFE_CASE_ID.fullmatch(case_id):
        raise AmosegError(
            f"case id {_SHOW.repr(case_id)} (from {_SHOW.repr(entry.written or entry.image.name)})"
            " is not a safe file name",
            source,
            "case ids may hold letters, digits, '_', '-' and '.', starting with a letter or "
            "digit; rename the file",
        )


def _resolve(path: Path, source: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # symlink loop, name too long, NUL
        raise AmosegError(f"path cannot be resolved ({exc})", source) from exc


def _check_inside(root: Path, path: Path, written: str, entry: CaseEntry, source: Path) -> None:
    """The path as written must name a file in the folder (no `../`, no absolute path); a
    symlink there is followed wherever it leads: the user made it (an nnU-Net dataset linked
    to AMOS's files instead of copying tens of GB), and amoseg only reads through it."""
    _resolve(path, source)  # a symlink loop is one line here, not a hang later
    lexical = Path(os.path.normpath(os.path.abspath(path)))
    if not lexical.is_relative_to(Path(os.path.normpath(os.path.abspath(root)))):
        raise AmosegError(
            f"case {entry.case_id}: {_SHOW.repr(written)} leads outside the dataset folder",
            source,
            "dataset paths must stay inside the folder that holds dataset.json; copy the files "
            "in, or link them in (symlinks inside the folder are followed)",
        )


def _check_unique(cases: list[AmosCase], source: Path) -> None:
    """Ids must differ even ignoring case: on macOS/Windows disks two such folders are one."""
    seen: dict[str, AmosCase] = {}
    for case in cases:
        key = case.case_id.casefold()
        if key in seen:
            raise AmosegError(
                f"case {case.case_id} is listed twice ({seen[key].image} and {case.image})",
                source,
                "each scan may appear only once",
            )
        seen[key] = case


def _single_name(value: object) -> object:
    """A modality field as one name: AMOS writes {"0": "CT"}; several channels that agree
    count as that one."""
    if isinstance(value, dict):
        names = {modality_from_name(v) for v in value.values()}
        return next(iter(value.values())) if len(names) == 1 and len(value) else None
    return value


def _modality(
    entry: CaseEntry, dataset_modality: str | None, default: str, source: Path
) -> tuple[str, str]:
    """(modality, which rule gave it), most specific statement first."""
    if entry.modality is not None:
        own = modality_from_name(_single_name(entry.modality))
        if own is None:
            raise AmosegError(
                f"case {entry.case_id}: modality {_SHOW.repr(entry.modality)} is neither CT nor MR",
                source,
                'write "CT" or "MR" (or leave the field out)',
            )
        return own, "dataset.json entry"
    by_id = amos_modality(entry.case_id)
    if by_id is not None:
        return by_id, "AMOS id"
    if dataset_modality is not None:
        return dataset_modality, "dataset.json"
    return default, "default"


def label_lut(labels: object, source: Path) -> tuple[int, ...] | None:
    """File label id → AMOS id from dataset.json's `labels` (index = file id, -1 = not
    declared); None when the file's ids are AMOS ids already (or no label set is given)."""
    if labels is None:
        return None
    pairs = _label_pairs(labels, source)
    # id 0 is background whatever it is called ("background", "bg", "none"), unless it
    # names an organ
    unknown = [name for i, name in pairs if i != 0 and organ_id(name) is None]
    if unknown:
        raise AmosegError(
            f"dataset.json labels are not AMOS organs (unknown: "
            f"{', '.join(_SHOW.repr(n) for n in unknown[:4])})",
            source,
            "amoseg segments AMOS's 15 organs; name each class as AMOS does "
            "('spleen', 'right kidney', ...) and it is remapped by name",
        )
    mapping = {file_id: organ_id(name) or 0 for file_id, name in pairs}
    if mapping.get(0, 0) != 0:
        raise AmosegError("dataset.json label 0 is an organ; label 0 must be background", source)
    moved_bg = [i for i, amos in mapping.items() if amos == 0 and i != 0]
    if moved_bg:
        raise AmosegError(
            f"dataset.json names label {moved_bg[0]} background; background must be label 0",
            source,
        )
    if all(i == amos for i, amos in mapping.items()):
        return None  # AMOS numbering (AMOS's own set, or part of it)
    lut = [-1] * (max(mapping) + 1)
    lut[0] = 0
    for file_id, amos in mapping.items():
        lut[file_id] = amos
    return tuple(lut)


def _label_pairs(labels: object, source: Path) -> list[tuple[int, str]]:
    """(file id, class name) pairs from AMOS's {"1": "spleen"} or nnU-Net's {"spleen": 1}."""
    hint = 'labels map ids to names ({"1": "spleen"}, AMOS) or names to ids ({"spleen": 1})'
    if not isinstance(labels, dict) or not labels:
        raise AmosegError(
            f"dataset.json labels {_SHOW.repr(labels)} is not a label set", source, hint
        )
    if all(isinstance(v, str) for v in labels.values()):  # AMOS: id → name
        if not all(re.fullmatch(r"\d{1,5}", k) for k in labels):
            raise AmosegError(
                f"dataset.json label ids {_SHOW.repr(list(labels))} are not all numbers",
                source,
                hint,
            )
        pairs = [(int(k), v) for k, v in labels.items()]
    elif any(isinstance(v, list) for v in labels.values()):
        raise AmosegError(
            "dataset.json labels are nnU-Net regions (lists of ids)",
            source,
            "amoseg trains one class per AMOS organ; use plain name → id labels",
        )
    elif all(isinstance(v, int) and not isinstance(v, bool) for v in labels.values()):
        if "ignore" in labels:
            raise AmosegError(
                "dataset.json has nnU-Net's 'ignore' label",
                source,
                "amoseg has no ignore label; drop it from the label files and dataset.json",
            )
        pairs = [(v, k) for k, v in labels.items()]
        ids = [v for v, _ in pairs]
        if len(set(ids)) != len(ids):
            raise AmosegError("dataset.json labels give two names the same id", source, hint)
    else:
        raise AmosegError(
            f"dataset.json labels {_SHOW.repr(labels)} mix ids and names", source, hint
        )
    out_of_range = [i for i, _ in pairs if not 0 <= i <= MAX_LABEL_ID]
    if out_of_range:
        raise AmosegError(
            f"dataset.json label id {out_of_range[0]} is outside 0..{MAX_LABEL_ID}", source, hint
        )
    return pairs
