"""`amoseg fetch-model`: download (or take a local zip), verify and install a catalogue model
into the cache `$AMOSEG_HOME/models/<name>/`.

Safety: the zip is read member by member (no absolute names, no `..`, no links, at most
`MAX_FILES` members and `MAX_UNPACKED` bytes, checked before anything is written); all of it
happens in a temporary folder inside the cache that becomes the model folder by one rename;
a lock file held with flock refuses a second concurrent fetch of the same model. Verification:
the publisher's sha256 where one is published; always the expected files, plans that build the
network and checkpoints that load; a manifest of sha256s recorded at install and checked on
every later use (`verify_manifest`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import stat
import sys
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

from amoseg.atomic import atomic_dir
from amoseg.errors import AmosegError
from amoseg.nnunet_models.catalogue import CatalogueModel, find_model
from amoseg.nnunet_models.folder import is_nnunet_model_dir

MANIFEST = "amoseg-model.json"
MAX_DOWNLOAD = 20 * 2**30  # bytes: the largest public nnU-Net model zips are a few GB
MAX_UNPACKED = 40 * 2**30
MAX_FILES = 10_000
CHUNK = 1 << 20


def amoseg_home() -> Path:
    """The cache folder: $AMOSEG_HOME, else ~/.cache/amoseg."""
    home = os.environ.get("AMOSEG_HOME")
    return Path(home).expanduser() if home else Path.home() / ".cache" / "amoseg"


def models_dir() -> Path:
    return amoseg_home() / "models"


def installed_path(name: str) -> Path | None:
    """The installed model folder of a catalogue model, or None."""
    root = models_dir() / name
    if not (root / MANIFEST).is_file():
        return None
    folders = [p for p in root.iterdir() if is_nnunet_model_dir(p)]
    return folders[0] if len(folders) == 1 else None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def fetch_lock(name: str) -> Iterator[None]:
    """Refuse a second fetch of the same model while one runs (flock: released when the
    holder exits, even if it is killed)."""
    folder = models_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f".{name}.lock"
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AmosegError(
                f"another `amoseg fetch-model {name}` is running", path, "wait for it to finish"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def download(url: str, target: Path, progress: Callable[[int, int | None], None]) -> None:
    """Stream `url` into `target` (capped at MAX_DOWNLOAD; an early end is an error)."""
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            if total is not None and total > MAX_DOWNLOAD:
                raise AmosegError(
                    f"download is {total} bytes, over the {MAX_DOWNLOAD} cap", None, url
                )
            done = 0
            with target.open("wb") as out:
                while block := response.read(CHUNK):
                    done += len(block)
                    if done > MAX_DOWNLOAD:
                        raise AmosegError("download exceeds the size cap", None, url)
                    out.write(block)
                    progress(done, total)
            if total is not None and done != total:
                raise AmosegError(f"download ended after {done} of {total} bytes", None, url)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise AmosegError(f"download failed ({reason})", None, url) from None


def _member_path(info: zipfile.ZipInfo, zip_path: Path) -> PurePosixPath:
    name = info.filename
    path = PurePosixPath(name)
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or path.is_absolute():
        raise AmosegError(f"zip member has an absolute name: {name}", zip_path, "not installed")
    if ".." in path.parts or "\\" in name:
        raise AmosegError(f"zip member leaves its folder: {name}", zip_path, "not installed")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise AmosegError(f"zip member is a link: {name}", zip_path, "not installed")
    return path


def safe_unpack(zip_path: Path, into: Path) -> None:
    """Unpack `zip_path` into `into` after checking every member's name, type and size."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            members = archive.infolist()
            if len(members) > MAX_FILES:
                raise AmosegError(f"zip holds {len(members)} files (cap {MAX_FILES})", zip_path)
            paths = [_member_path(m, zip_path) for m in members]
            if sum(m.file_size for m in members) > MAX_UNPACKED:
                raise AmosegError(f"zip unpacks to over {MAX_UNPACKED} bytes", zip_path)
            for member, rel in zip(members, paths, strict=True):
                target = into.joinpath(*rel.parts)
                if member.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                written = 0
                with archive.open(member) as src, target.open("wb") as dst:
                    while block := src.read(CHUNK):
                        written += len(block)
                        if written > member.file_size:  # a lying header
                            raise AmosegError(
                                f"zip member {member.filename} is larger than stated", zip_path
                            )
                        dst.write(block)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise AmosegError(
            f"not a complete zip file ({exc})", zip_path, "download it again"
        ) from None


def _model_folder(root: Path, source: str) -> Path:
    found = [p for p in [root, *root.rglob("*")] if p.is_dir() and is_nnunet_model_dir(p)]
    if len(found) != 1:
        what = "no nnU-Net model folder" if not found else f"{len(found)} nnU-Net model folders"
        raise AmosegError(
            f"the zip holds {what} (dataset.json, plans.json, fold_*/checkpoint_final.pth)",
            None,
            source,
        )
    return found[0]


def _check_loads(folder: Path, model: CatalogueModel) -> None:
    """Plans that build the network and checkpoints that load (on the CPU)."""
    from amoseg.nnunet_models.backend import open_nnunet_model

    try:
        open_nnunet_model(folder, device="cpu", labels=model.label_override())
    except AmosegError as exc:
        raise AmosegError(f"the downloaded model does not load: {exc.line()}") from None


def write_manifest(
    root: Path, folder: Path, model: CatalogueModel, source: str, digest: str
) -> None:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    record = {
        "name": model.name,
        "source": source,
        "licence": model.licence,
        "zip_sha256": digest,
        "publisher_sha256": model.sha256,
        "labels": model.label_override(),
        "files": {str(p.relative_to(root)): sha256_of(p) for p in files},
    }
    (root / MANIFEST).write_text(json.dumps(record, indent=2))


def verify_manifest(model_dir: Path) -> dict | None:
    """For a model installed by fetch-model: check every file against the sha256 recorded at
    install (AmosegError on any change); its manifest, or None for any other folder."""
    manifest = model_dir.parent / MANIFEST
    if not manifest.is_file():
        return None
    record = json.loads(manifest.read_text())
    for rel, expected in record.get("files", {}).items():
        path = model_dir.parent / rel
        if not path.is_file() or sha256_of(path) != expected:
            raise AmosegError(
                "installed model file changed since it was fetched",
                path,
                f"fetch it again: amoseg fetch-model {record.get('name', '')} --force",
            )
    return record


def _progress(done: int, total: int | None) -> None:
    if sys.stderr.isatty():
        share = f" {100 * done / total:5.1f} %" if total else ""
        print(f"\rdownloading {done / 2**20:8.1f} MiB{share}", end="", file=sys.stderr)


def fetch_model(name: str, from_zip: Path | None = None, force: bool = False) -> tuple[Path, bool]:
    """Install catalogue model `name` (from its URL, or the local `from_zip`) → (its model
    folder, whether it was newly installed)."""
    model = find_model(name)
    with fetch_lock(name):
        existing = installed_path(name)
        if existing is not None and not force:
            verify_manifest(existing)
            return existing, False
        url = os.environ.get("AMOSEG_MODEL_URL") or model.url
        source = str(from_zip) if from_zip is not None else url
        if from_zip is not None and not from_zip.is_file():
            raise AmosegError("no such zip file", from_zip)
        with atomic_dir(models_dir() / name) as tmp:
            zip_path = from_zip if from_zip is not None else tmp / "download.zip"
            if from_zip is None:
                download(url, zip_path, _progress)
                if sys.stderr.isatty():
                    print(file=sys.stderr)
            digest = sha256_of(zip_path)
            if model.sha256 is not None and digest != model.sha256:
                raise AmosegError(
                    f"checksum mismatch: sha256 {digest}, the publisher states {model.sha256}",
                    None,
                    f"{source}: not installed; download it again from the publisher",
                )
            unpacked = tmp / "unpacked"
            safe_unpack(zip_path, unpacked)
            found = _model_folder(unpacked, source)
            _check_loads(found, model)
            # a zip of the model folder's contents has no folder name: nnU-Net's default one
            final = tmp / (found.name if found != unpacked else "model")
            shutil.move(str(found), str(final))
            shutil.rmtree(unpacked, ignore_errors=True)
            if from_zip is None:
                zip_path.unlink()
            write_manifest(tmp, final, model, source, digest)
        return models_dir() / name / final.name, True
