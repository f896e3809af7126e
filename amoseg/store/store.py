"""The store as a unit: its identity, a writer's lock, the sources' identity, and a public way to
create one from arrays (tests, benchmarks, notebooks).

Identity: a run records the identity of the store it was trained on (a hash of the split
lists, the configuration and its size); `train --resume` and `evaluate` refuse a store whose
identity differs, so test cases can never have been seen in training, and a model is never
scored on another grid.

Lock: `prepare` holds STORE/.amoseg.lock (an OS file lock, so a writer killed with -9 leaves
no stale lock behind; the file names the holder's pid for the message) while it writes.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from amoseg.atomic import write_json
from amoseg.errors import AmosegError

LOCK_FILE = ".amoseg.lock"


def store_identity(info: dict[str, Any], splits: dict[str, list[str]]) -> dict[str, Any]:
    """What must match between a run and the store it reads (see the module docstring): the
    split lists as stored (train/val/test and the cross-validation folds)."""
    lists = {name: splits.get(name, []) for name in ("train", "val", "test", "folds")}
    digest = hashlib.sha256(json.dumps(lists, sort_keys=True).encode()).hexdigest()[:16]
    return {
        "splits_sha256": digest,
        "configuration": str(info.get("configuration", "seed")),
        "size": info.get("size"),
    }


def check_identity(recorded: dict[str, Any] | None, current: dict[str, Any], store: Path) -> None:
    """Refuse a store whose identity is not the one a run recorded (runs from before identities
    were recorded are not checked)."""
    if not recorded:
        return
    diff = [k for k in ("splits_sha256", "configuration", "size") if recorded.get(k) != current[k]]
    if diff:
        what = ", ".join(f"{k} {recorded.get(k)!r} → {current[k]!r}" for k in diff)
        raise AmosegError(
            f"store is not the one this run was trained on ({what})",
            store,
            "pass the run's own store (see its config.json), or train a new run on this one",
        )


def source_identity(path: Path) -> dict[str, Any]:
    """Path, size and modification time of a source file: a changed file is a stale case."""
    st = Path(path).stat()
    return {"path": str(Path(path).resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def store_lock(out: Path) -> Iterator[None]:
    """Hold the store's writer lock for the block; a second writer gets one clear line."""
    import fcntl

    path = out / LOCK_FILE
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise AmosegError(
            f"cannot write the store folder ({exc.strerror or exc})",
            out,
            "choose a writable output folder",
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise AmosegError(
                f"another amoseg prepare (pid {holder}) is writing this store",
                out,
                "wait for it to finish; two writers would mix their cases",
            ) from None
        # the lock is ours (a dead holder's lock is released by the OS): record our pid
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                path.unlink()
    finally:
        os.close(fd)


def lock_holder(out: Path) -> int | None:
    """The pid recorded in a store's lock file, if it is alive (for messages and tests)."""
    try:
        pid = int((Path(out) / LOCK_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _pid_alive(pid) else None


def create_store(
    out: str | Path,
    cases: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]],
    *,
    configuration: Any = None,
    splits: dict[str, list[str]] | None = None,
    modality: str = "ct",
    info: dict[str, Any] | None = None,
) -> Path:
    """A complete store from in-memory cases: `(case_id, image, label, affine)` with image and
    label in file order (X, Y, Z), preprocessed by `configuration` (a plan `Configuration`; a
    `seed` one of the images' own in-plane size by default), each case written atomically.

    `splits` defaults to all-but-two cases for training, then one each for val and test.
    """
    from amoseg.labels import NUM_CLASSES
    from amoseg.planning.planner import seed_configuration
    from amoseg.store.slice_store import STORE_VERSION, write_case

    out = Path(out)
    if configuration is None:
        size = int(cases[0][1].shape[0]) if cases else 1
        configuration = seed_configuration(size, keep="all")
    ids = [c[0] for c in cases]
    if splits is None:
        n = len(ids)
        n_train = max(1, n - 2)
        splits = {"train": ids[:n_train], "val": ids[n_train : n_train + 1]}
        splits["test"] = ids[n_train + 1 :]
    pre = configuration.preprocessor(modality)
    for case_id, image, label, affine in cases:
        result = pre.forward(image, affine, label)
        counts = np.bincount(result.label.numpy().ravel(), minlength=NUM_CLASSES)[:NUM_CLASSES]
        stored = result.image.numpy()
        if result.record.integer:
            stored = stored.astype(np.int16)
        write_case(
            out,
            case_id,
            stored,
            result.label.numpy(),
            {
                "modality": modality,
                "original_shape": [int(n) for n in image.shape],
                "affine": np.asarray(affine, dtype=float).tolist(),
                "spacing": [float(v) for v in np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(0))],
                "canonical_shape": list(result.record.canonical_shape),
                "canonical_spacing": list(result.record.canonical_spacing),
                "kept_slices": list(range(result.record.canonical_shape[2])),
                "size": configuration.size,
                "keep": configuration.keep,
                "configuration": configuration.name,
                "class_pixels": [int(c) for c in counts],
                "preprocess": result.record.to_dict(),
            },
        )
    write_json(out / "splits.json", {k: list(v) for k, v in splits.items()})
    store_info = {
        "version": STORE_VERSION,
        "size": configuration.size,
        "configuration": configuration.name,
        "plan": configuration.to_dict(),
        "keep": configuration.keep,
        "modality": modality,
        "seed": 0,
        "split": [len(splits.get(s, [])) for s in ("train", "val", "test")],
        "source": "create_store",
        "num_classes": NUM_CLASSES,
        "complete": True,
        **(info or {}),
    }
    write_json(out / "store.json", store_info)
    return out
