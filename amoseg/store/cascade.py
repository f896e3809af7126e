"""A cascade store (`3d_cascade_fullres`): the previous stage's labels beside each image.

nnU-Net's cascade feeds a full-resolution 3D network the image plus the low-resolution
stage's prediction. For training, that prediction must come from a low-resolution model that
never trained on the case, or the full-resolution stage learns to trust a prediction far
better than it will get on a new scan. `amoseg prepare ROOT STORE --configuration
3d_cascade_fullres --previous PREV` therefore takes PREV, the fold runs of a `3d_lowres`
store (`amoseg train unet3d --data LOWRES --fold K --out PREV/fold_K` for every fold; `amoseg
cv PREV` may have run on it), and

- gives the cascade store the low-resolution store's splits and folds (so a case is in the
  same fold, and the same test set, in both stages);
- predicts each training or validation case with the fold run that held it out (the fold
  whose `val` lists it), each test case with the ensemble of all folds (no fold trained on
  it), from the original scan, as `amoseg predict` would (no post-processing);
- stores those labels, resampled to the cascade's grid as the ground truth is (nearest), as
  `cases/<id>/previous.npy` (uint8, the image's shape); `meta.json` names the fold run(s)
  that made them (`previous_stage`), and `store.json` records PREV (`previous`), each fold
  run's checkpoint digest included.

Training reads `previous.npy` like the image (a second input channel); the network expands it
to one channel per organ (`amoseg.models.cascade_input`). `amoseg train` copies the fold runs
into RUN/previous/ (checked against the recorded digests), so the run folder — and its
package — carries both stages.

Predicting the cases needs the inference layer, which sits above this one: the caller passes
a `PreviousStage` (`amoseg.inference.cascade.LowresFolds`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from amoseg.atomic import atomic_dir
from amoseg.errors import AmosegError

#: each case's previous-stage labels on the store's grid
PREVIOUS_FILE = "previous.npy"
#: a cascade run's copy of its previous stage's fold runs
PREVIOUS_DIR = "previous"
#: what a fold run's copy holds (what `amoseg.inference.bundle.run_bundle` reads)
RUN_COPY = ("config.json", "checkpoint_best.pt")


class PreviousStage(Protocol):
    """The previous stage of a cascade, as `prepare` uses it."""

    #: the configuration its runs were trained on (e.g. "3d_lowres")
    configuration: str

    def record(self) -> dict[str, Any]:
        """What store.json records (`previous`): path, configuration, fold runs, digests."""
        ...

    def splits(self) -> dict[str, Any]:
        """The previous stage's store splits: train, val, test and the folds."""
        ...

    def labels(self, case_id: str, image: Path) -> tuple[np.ndarray, dict[str, Any]]:
        """The case's predicted labels in the file's own voxel order and shape (uint8), and
        which run(s) made them ({"fold": k or None, "runs": [...]})."""
        ...


def record_digest(record: dict[str, Any]) -> str:
    """A short hash of a previous-stage record: a case made with another one is redone."""
    text = json.dumps(record, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_cases(previous: dict[str, Any], case_ids: set[str], root: Path) -> None:
    """The cascade's cases must be the previous stage's store's, no more, no fewer: a case
    of one but not the other has no held-out prediction, or a test case of one may have been
    trained on in the other."""
    theirs = {c for name in ("train", "val", "test") for c in previous.get(name, [])}
    if theirs != case_ids:
        extra, missing = sorted(case_ids - theirs), sorted(theirs - case_ids)
        what = (
            f"{len(extra)} case(s) the low-resolution store lacks (e.g. {extra[0]})"
            if extra
            else f"{len(missing)} case(s) of the low-resolution store missing (e.g. {missing[0]})"
        )
        raise AmosegError(
            f"the cascade's cases do not match its previous stage's: {what}",
            root,
            "prepare the cascade from the same folder, --modality and cases as the 3d_lowres "
            "store its fold runs were trained on",
        )


def held_out_by(folds: list[dict[str, list[str]]], case_id: str) -> int | None:
    """The fold whose validation holds `case_id` (its model never trained on it), or None
    for a case in no fold (a test case)."""
    for k, fold in enumerate(folds):
        if case_id in fold.get("val", []):
            return k
    return None


def copy_previous(previous: dict[str, Any], run_dir: Path) -> Path:
    """Copy the previous stage's fold runs (config and best checkpoint) into
    RUN/previous/fold_K, each checked against the digest `prepare` recorded; an existing
    copy with the same digests is kept (a resumed run)."""
    target = Path(run_dir) / PREVIOUS_DIR
    folds = previous.get("folds") or {}
    if _copy_current(target, folds):
        return target
    for fold, entry in folds.items():
        checkpoint = Path(entry["run"]) / "checkpoint_best.pt"
        if not checkpoint.is_file():
            raise AmosegError(
                f"the previous stage's fold {fold} run is gone",
                Path(entry["run"]),
                "restore it, or prepare the cascade store again from the runs you have",
            )
        if file_sha256(checkpoint) != entry.get("checkpoint_sha256"):
            raise AmosegError(
                f"the previous stage's fold {fold} checkpoint changed since the cascade store "
                "was prepared (its predictions are the store's inputs)",
                checkpoint,
                "prepare the cascade store again with --previous and --overwrite",
            )
    with atomic_dir(target) as tmp:
        for fold, entry in folds.items():
            dest = tmp / f"fold_{fold}"
            dest.mkdir()
            for name in RUN_COPY:
                shutil.copy2(Path(entry["run"]) / name, dest / name)
    return target


def _copy_current(target: Path, folds: dict[str, Any]) -> bool:
    if not target.is_dir():
        return False
    for fold, entry in folds.items():
        checkpoint = target / f"fold_{fold}" / "checkpoint_best.pt"
        if not checkpoint.is_file() or file_sha256(checkpoint) != entry.get("checkpoint_sha256"):
            return False
    return True
