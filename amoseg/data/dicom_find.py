"""Finding the DICOM series to read: in a folder, in nested PACS exports, in a `.zip`.

A folder a user hands over is rarely one clean series: amoseg's own outputs may sit beside
the slices (predict may write into the input folder), a DICOM-SEG or a text file may be
there, and PACS exports nest patient/study/series folders. Every file's header is read once
(no pixels), image files are grouped by SeriesInstanceUID, and everything else is left out:
amoseg's outputs by name, DICOM objects that are not images (SEG, RTSTRUCT, SR) by SOP class,
non-DICOM files because they do not parse. A file that claims to be DICOM (the `DICM`
preamble) but cannot be parsed is kept as damaged, so the reader can refuse it instead of
silently losing a slice.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from amoseg.errors import AmosegError

#: file-name endings of what `amoseg predict` writes (never slices of the input series)
OUTPUT_SUFFIXES = (
    "_seg.dcm", "_seg.nii.gz", "_volumes.csv", "_volumes.json", "_viewer.html", "_overlay.png",
)  # fmt: skip
OUTPUT_NAMES = ("volumes.csv",)
#: DICOM storage classes that are not images of the scan (their own series in a folder)
NON_IMAGE_SOP_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.66",  # segmentation, surface segmentation, registration
    "1.2.840.10008.5.1.4.1.1.481.3",  # RT structure set
    "1.2.840.10008.5.1.4.1.1.88.",  # structured reports, key objects
    "1.2.840.10008.5.1.4.1.1.11.",  # presentation states
    "1.2.840.10008.5.1.4.1.1.104.",  # encapsulated PDF/CDA
)
MAX_FILES = 100_000  # files looked at in one input (a whole PACS archive is not one input)
MAX_DEPTH = 8  # patient / study / series / ... folders
MAX_ZIP_BYTES = 8 << 30  # uncompressed bytes a DICOM .zip may hold
MAX_ZIP_MEMBERS = 100_000
_HEADER_TAGS = ["SOPClassUID", "SeriesInstanceUID", "Modality", "SeriesDescription", "Rows"]


@dataclass
class Series:
    """One image series found in an input: its files (unsorted) and what names it."""

    uid: str
    modality: str = ""
    description: str = ""
    files: list[Path] = field(default_factory=list)

    def summary(self) -> str:
        what = " ".join(x for x in (self.modality, repr(self.description)[1:-1]) if x)
        return f"{self.uid} ({what + ', ' if what else ''}{len(self.files)} files)"


def is_amoseg_output(name: str) -> bool:
    low = name.lower()
    return low.endswith(OUTPUT_SUFFIXES) or low in OUTPUT_NAMES


def _skipped_name(name: str) -> bool:
    return name.startswith(".") or name.upper() == "DICOMDIR" or is_amoseg_output(name)


def _files(folder: Path) -> list[Path]:
    """Every candidate file under `folder` (depth and count capped, links to folders not
    followed, so a link loop cannot recurse)."""
    out: list[Path] = []
    for root, dirs, names in os.walk(folder):
        depth = len(Path(root).relative_to(folder).parts)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if depth < MAX_DEPTH else []
        for name in sorted(names):
            if _skipped_name(name):
                continue
            path = Path(root) / name
            if path.is_file():
                out.append(path)
            if len(out) > MAX_FILES:
                raise AmosegError(
                    f"input holds more than {MAX_FILES} files", folder, "pass one study or series"
                )
    return out


def _has_preamble(path: Path) -> bool:
    with path.open("rb") as fh:
        fh.seek(128)
        return fh.read(4) == b"DICM"


def _header(path: Path):
    """The file's identifying tags; None for a file that is not DICOM at all."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's complaints about odd values: not ours
        return _parse_header(path)


def _parse_header(path: Path):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
    except InvalidDicomError:
        pass  # no preamble: some old exports omit it; accept only what parses as an image
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS, force=True)
    except Exception:
        return None
    return ds if "SeriesInstanceUID" in ds and "Rows" in ds else None


def find_series(folder: Path) -> tuple[dict[str, Series], list[Path]]:
    """Image series under `folder` by SeriesInstanceUID, and the DICOM files (`DICM`
    preamble) whose header cannot be parsed (damaged)."""
    series: dict[str, Series] = {}
    damaged: list[Path] = []
    for path in _files(folder):
        try:
            ds = _header(path)
        except Exception:  # pydicom raises several types for a torn header
            ds = None
        if ds is None:
            with contextlib.suppress(OSError):
                if _has_preamble(path):
                    damaged.append(path)
            continue
        sop = str(ds.get("SOPClassUID", "") or "")
        if "Rows" not in ds or sop.startswith(NON_IMAGE_SOP_PREFIXES):
            continue  # a SEG, structure set or report beside the slices
        uid = str(ds.get("SeriesInstanceUID", "") or "")
        entry = series.setdefault(
            uid, Series(uid, str(ds.get("Modality", "") or ""), _text(ds, "SeriesDescription"))
        )
        entry.files.append(path)
    return series, damaged


def _text(ds, key: str) -> str:
    return " ".join(str(ds.get(key, "") or "").split())[:40]


def choose_series(
    folder: Path, series: dict[str, Series], uid: str | None
) -> tuple[Series, str | None]:
    """The series to segment, and a note when one was picked among several: `uid` if given;
    else the only series, or the only CT series. Refuses with the list otherwise."""
    listing = "; ".join(s.summary() for s in list(series.values())[:6])
    listing += " ..." if len(series) > 6 else ""
    if uid is not None:
        if uid not in series:
            raise AmosegError(
                f"no DICOM series {uid} in the input (found: {listing or 'none'})",
                folder,
                "pass one of the series UIDs listed to --series",
            )
        return series[uid], None
    if len(series) == 1:
        return next(iter(series.values())), None
    cts = [s for s in series.values() if s.modality.upper() == "CT"]
    if len(cts) == 1:
        others = len(series) - 1
        return cts[0], f"{folder.name}: segmenting the only CT series {cts[0].summary()}; " + (
            f"{others} other series left out (choose one with --series UID)"
        )
    raise AmosegError(
        f"folder mixes {len(series)} DICOM series: {listing}",
        folder,
        "pass --series UID to choose one, or put each series in its own folder",
    )


def is_zip_path(path: Path) -> bool:
    return path.name.lower().endswith(".zip")


def check_zip(path: Path) -> list[zipfile.ZipInfo]:
    """The archive's regular file members, refused in one line when the archive is damaged,
    encrypted or would unpack past `MAX_ZIP_BYTES` / `MAX_ZIP_MEMBERS`."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise AmosegError(
            f"DICOM .zip cannot be opened ({' '.join(str(exc).split())[:80]})",
            path,
            "re-download or re-create the archive",
        ) from exc
    if len(members) > MAX_ZIP_MEMBERS:
        raise AmosegError(
            f".zip holds {len(members)} files (more than {MAX_ZIP_MEMBERS})",
            path,
            "pass one study or series",
        )
    total = sum(m.file_size for m in members)
    if total > MAX_ZIP_BYTES:
        raise AmosegError(
            f".zip unpacks to {total / 2**30:.1f} GiB (more than {MAX_ZIP_BYTES >> 30} GiB)",
            path,
            "pass one study or series",
        )
    if any(m.flag_bits & 0x1 for m in members):
        raise AmosegError(".zip is encrypted", path, "unpack it yourself and pass the folder")
    return members


@contextlib.contextmanager
def dicom_folder(path: Path) -> Iterator[Path]:
    """A folder to read the series from: `path` itself, or a DICOM `.zip` unpacked into a
    private temporary folder (removed afterwards). Members are written under numbered names
    only, never under their archive paths, so no member can land outside that folder; a
    member is read at most to its declared size, which `check_zip` has capped."""
    if not is_zip_path(path):
        yield path
        return
    members = check_zip(path)
    with tempfile.TemporaryDirectory(prefix="amoseg_zip_") as tmp:
        try:
            written = 0
            with zipfile.ZipFile(path) as archive:
                for n, member in enumerate(members):
                    name = Path(member.filename.replace("\\", "/")).name
                    if _skipped_name(name) or not name:
                        continue
                    target = Path(tmp) / f"{n:06d}_{_safe(name)}"
                    with archive.open(member) as src, target.open("wb") as dst:
                        while chunk := src.read(1 << 20):
                            written += len(chunk)
                            if written > MAX_ZIP_BYTES:
                                raise AmosegError(
                                    f".zip unpacks to more than {MAX_ZIP_BYTES >> 30} GiB", path
                                )
                            dst.write(chunk)
        except (zipfile.BadZipFile, OSError, RuntimeError, EOFError) as exc:
            reason = " ".join(str(exc).split())[:80] or type(exc).__name__
            raise AmosegError(
                f"DICOM .zip cannot be unpacked ({reason})", path, "re-download the archive"
            ) from exc
        yield Path(tmp)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)[:100]
