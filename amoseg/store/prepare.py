"""`prepare`: AMOS22 volumes → split by scan → canonical axial slices → filtered → size×size store.

Crash safety: each case folder appears atomically; `store.pending.json` records the settings
while a run is in progress, and `store.json` (which `SliceStore` requires) is written last,
so a later step never trusts an incomplete store. A rerun with the same settings skips the
finished cases; a rerun with other settings is refused unless `overwrite=True`.

Memory: a worker holds one case at a time: the image in its file dtype and the uint8 label
(int16 CT: under one float32 volume); reorientation is a view, and slices are resized and
streamed to disk in chunks. Slices that will be dropped are never resized.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import warnings
from collections.abc import Generator, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from amoseg.atomic import read_json, write_json
from amoseg.data.amos import AmosCase, check_case_files, dataset_is_synthetic, open_case
from amoseg.data.datasets import find_cases
from amoseg.data.nifti import image_voxels, voxel_spacing
from amoseg.errors import AmosegError
from amoseg.labels import CLASS_NAMES, NUM_CLASSES
from amoseg.planning.plan import Configuration, Plan
from amoseg.preprocessing.orient import canonical_spacing
from amoseg.store.cascade import PREVIOUS_FILE, PreviousStage, check_cases, record_digest
from amoseg.store.slice_store import SPLITS, STORE_VERSION, case_done, case_writer, image_dtype
from amoseg.store.splits import check_fractions, cv_folds, split_cases
from amoseg.store.store import source_identity, store_lock

KEEP_CHOICES = ("organ", "all")
MODALITY_CHOICES = ("ct", "mr", "all")
PENDING_FILE = "store.pending.json"
# Settings that must match for a rerun to reuse an existing store.
SETTING_KEYS = ("configuration", "plan", "size", "keep", "modality", "seed", "split", "previous")
RESIZE_CHUNK = 16  # slices resized at once: bounds the float32 working set
MAX_SIZE = 4096


def prepare_case(
    case: AmosCase,
    out: str | Path,
    config: Configuration,
    previous: PreviousStage | None = None,
) -> dict[str, Any]:
    """Read, check, orient, crop, resample (and for `keep organ`, filter) and store one case;
    returns its meta.json. A cascade configuration's `previous` stage predicts the case and
    its labels are stored beside the image (`amoseg.store.cascade`)."""
    import torch

    pre = config.preprocessor(case.modality)
    label, image_nii = open_case(case)
    affine = np.asarray(image_nii.affine, dtype=np.float64)
    zooms = voxel_spacing(image_nii)  # the affine, as predict and score use
    original_shape = [int(n) for n in image_nii.shape]

    label = pre.canonical(label, affine)
    n_z = label.shape[2]
    # max, not any: a uint8 reduction needs no full-size bool temporary
    kept = torch.nonzero(label.amax(dim=(0, 1)))[:, 0].tolist() if config.keep == "organ" else None

    raw = image_voxels(image_nii, case.image)
    del image_nii
    image = pre.canonical(raw, affine)
    try:
        record = pre.plan_record(image, affine, original_shape, kept_slices=kept, zooms=zooms)
    except AmosegError as exc:  # e.g. the voxel cap: name the scan it was about
        raise AmosegError(exc.what, exc.path or case.image, exc.hint) from None
    dtype = image_dtype(raw)
    del raw

    n_planes = record.shape[2]
    meta = {
        "modality": case.modality,
        "original_shape": original_shape,
        "affine": affine.tolist(),
        "spacing": list(zooms),
        "orientation": "".join(nib.aff2axcodes(affine)),
        "canonical_shape": [int(n) for n in image.shape],
        "canonical_spacing": list(canonical_spacing(zooms, affine)),
        "kept_slices": [int(k) for k in kept] if kept is not None else list(range(n_z)),
        "image_file": str(case.image),
        "label_file": str(case.label),
        "label_lut": None if case.label_lut is None else list(case.label_lut),
        "size": config.size,
        "keep": config.keep,
        "configuration": config.name,
        "plan_sha256": config_digest(config),
        "source_identity": {
            "image": source_identity(case.image),
            "label": source_identity(case.label),
        },
    }
    counts = np.zeros(NUM_CLASSES, dtype=np.int64)
    total, total_sq, n_values = 0.0, 0.0, 0
    with case_writer(out, case.case_id, n_planes, record.shape[:2], dtype) as writer:
        image_slabs = pre.slabs(image, record, label=False, chunk=RESIZE_CHUNK)
        label_slabs = pre.slabs(label, record, label=True, chunk=RESIZE_CHUNK)
        for img, lab in zip(image_slabs, label_slabs, strict=True):
            labels = lab.numpy()
            counts += np.bincount(labels.ravel(), minlength=NUM_CLASSES)[:NUM_CLASSES]
            values = img.double()
            total, total_sq = total + float(values.sum()), total_sq + float((values**2).sum())
            n_values += values.numel()
            writer.append(img.numpy().astype(dtype), labels)
        meta["class_pixels"] = [int(c) for c in counts]
        meta["preprocess"] = _with_stats(record, total, total_sq, n_values).to_dict()
        if previous is not None:
            meta["previous_stage"] = _store_previous(
                previous, case, pre, record, affine, original_shape, writer.folder
            )
        writer.finish(meta)
    return {"case_id": case.case_id, "n_slices": n_planes, **meta}


def _store_previous(
    previous: PreviousStage,
    case: AmosCase,
    pre: Any,
    record: Any,
    affine: np.ndarray,
    original_shape: list[int],
    folder: Path,
) -> dict[str, Any]:
    """The previous stage's labels of one case, on this store's grid (as the ground truth is
    resampled: nearest), written to the case's (temporary) folder; returns their provenance."""
    labels, source = previous.labels(case.case_id, case.image)
    if list(labels.shape) != original_shape:
        raise AmosegError(
            f"the previous stage predicted {list(labels.shape)} voxels for a {original_shape} scan",
            case.image,
            "check the previous stage's runs (amoseg predict PREV on this scan)",
        )
    canon = pre.canonical(np.ascontiguousarray(labels, dtype=np.uint8), affine)
    planes = [s.numpy() for s in pre.slabs(canon, record, label=True, chunk=RESIZE_CHUNK)]
    stacked = np.concatenate(planes) if planes else np.zeros((0, *record.shape[:2]), np.uint8)
    np.save(folder / PREVIOUS_FILE, np.ascontiguousarray(stacked, dtype=np.uint8))
    return {**source, "record_sha256": record_digest(previous.record())}


def config_digest(config: Configuration) -> str:
    """A short hash of a configuration: a case prepared under another one is redone."""
    text = json.dumps(config.to_dict(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _with_stats(record: Any, total: float, total_sq: float, n: int) -> Any:
    """The record plus the stored image's mean/std (per-image z-score), from streamed sums."""
    from dataclasses import replace

    if n == 0:
        return record
    mean = total / n
    std = max(0.0, total_sq / n - mean * mean) ** 0.5
    return replace(record, intensity={"mean": mean, "std": std})


def prepare_dataset(
    root: str | Path,
    out: str | Path,
    *,
    size: int = 640,
    configuration: str = "seed",
    plan: str | Path | Plan | None = None,
    split: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    keep: str = "organ",
    modality: str = "all",
    workers: int = 1,
    skip_bad: bool = False,
    progress: bool = True,
    overwrite: bool = False,
    previous: PreviousStage | None = None,
) -> dict[str, Any]:
    """Build (or finish) a store in `out` from the AMOS22 folder `root`; returns the summary
    (also written to OUT/summary.json).

    `configuration` names a plan configuration: `seed` (S×S slices of `size`, `keep` applies)
    needs no plan; `2d`/`3d` come from `plan` (a plan.json path or a Plan), or are planned on
    the fly from the selected cases when no plan is given (written to OUT/plan.json). A
    cascade stage (`3d_cascade_fullres`) needs its `previous` stage (the fold runs of its
    `3d_lowres` store, `amoseg.inference.cascade.LowresFolds`), whose splits it takes.
    """
    started = time.perf_counter()
    root, out = Path(root), Path(out)
    fractions = check_fractions(split)
    _check_options(size, keep, modality, workers)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cases = find_cases(root, default_modality=modality if modality != "all" else "ct")
        splits = split_cases(
            [c.case_id for c in cases], [c.modality for c in cases], fractions, seed
        )
    notes = [str(w.message) for w in caught]
    selected = [c for c in cases if modality in ("all", c.modality)]
    if not selected:
        raise AmosegError(
            f"no {modality.upper()} cases among the {len(cases)} labelled cases",
            root,
            "use --modality all",
        )
    selected_ids = {c.case_id for c in selected}
    splits = {name: [c for c in ids if c in selected_ids] for name, ids in splits.items()}
    if previous is not None:  # the previous stage's own splits and folds (no leakage)
        theirs = previous.splits()
        check_cases(theirs, selected_ids, root)
        splits = {name: list(theirs.get(name, [])) for name in SPLITS}

    if out.exists() and not out.is_dir():
        raise AmosegError("output path exists and is not a folder", out)
    created = not out.exists()
    try:
        with store_lock(out):
            return _prepare_locked(
                root,
                out,
                selected,
                splits,
                notes,
                fractions,
                started,
                size=size,
                configuration=configuration,
                plan=plan,
                seed=seed,
                keep=keep,
                modality=modality,
                workers=workers,
                skip_bad=skip_bad,
                progress=progress,
                overwrite=overwrite,
                previous=previous,
            )
    finally:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a run that failed before writing anything leaves no empty folder


def _configuration(
    name: str,
    plan: str | Path | Plan | None,
    size: int,
    keep: str,
    cases: list[AmosCase],
    progress: bool,
    previous: PreviousStage | None = None,
) -> tuple[Configuration, Plan | None]:
    """The configuration to prepare, and the plan it came from when one was made here."""
    from dataclasses import replace

    from amoseg.planning import load_plan, resolve_train_on
    from amoseg.planning.fingerprint import fingerprint_dataset
    from amoseg.planning.planner import plan_dataset, seed_configuration

    if plan is not None:
        loaded = plan if isinstance(plan, Plan) else load_plan(plan)
        config = _check_stage(loaded.configuration(name), previous)
        return (replace(config, keep=keep) if config.name == "seed" else config), None
    if name == "seed":
        return _check_stage(seed_configuration(size, keep=keep), previous), None
    if name not in ("2d", "3d", "3d_lowres", "3d_cascade_fullres"):
        raise AmosegError(
            f"unknown configuration {name!r}", hint="use seed, 2d, 3d or 3d_lowres, or pass --plan"
        )
    made = plan_dataset(
        fingerprint_dataset(cases, progress=progress), size=size, train_on=resolve_train_on("auto")
    )
    if name not in made.configurations:
        raise AmosegError(
            f"the plan has no {name!r}: nnU-Net's rule plans a low-resolution stage only when "
            "the 3d patch covers < 25 % of the median image",
            hint="use 3d, or write a plan with `amoseg plan` and add the configuration by hand",
        )
    return _check_stage(made.configuration(name), previous), made


def _check_stage(config: Configuration, previous: PreviousStage | None) -> Configuration:
    """A cascade stage needs its previous stage's fold runs; a single stage takes none."""
    if config.previous_stage is None:
        if previous is not None:
            raise AmosegError(
                f"--previous is for a cascade configuration; {config.name!r} is a single stage",
                hint="use --configuration 3d_cascade_fullres, or drop --previous",
            )
        return config
    if previous is None:
        raise AmosegError(
            f"configuration {config.name!r} is a cascade stage: its input adds the "
            f"{config.previous_stage!r} stage's predictions",
            hint=f"train {config.previous_stage!r} on every fold (amoseg train unet3d --fold K "
            f"--out PREV/fold_K), then pass --previous PREV",
        )
    if previous.configuration != config.previous_stage:
        raise AmosegError(
            f"the previous stage's runs were trained on {previous.configuration!r}, but "
            f"{config.name!r} follows {config.previous_stage!r}",
            hint=f"pass the fold runs of a {config.previous_stage!r} store as --previous",
        )
    return config


def _prepare_locked(
    root: Path,
    out: Path,
    selected: list[AmosCase],
    splits: dict[str, list[str]],
    notes: list[str],
    fractions: tuple[float, float, float],
    started: float,
    *,
    size: int,
    configuration: str,
    plan: str | Path | Plan | None,
    seed: int,
    keep: str,
    modality: str,
    workers: int,
    skip_bad: bool,
    progress: bool,
    overwrite: bool,
    previous: PreviousStage | None = None,
) -> dict[str, Any]:
    config, made = _configuration(configuration, plan, size, keep, selected, progress, previous)
    settings = {
        "version": STORE_VERSION,
        "configuration": config.name,
        "plan": config.to_dict(),
        "size": config.size,
        "keep": config.keep,
        "modality": modality,
        "seed": seed,
        "split": list(fractions),
        "source": str(root.resolve()),
        "num_classes": NUM_CLASSES,
        "synthetic": dataset_is_synthetic(root),  # amoseg phantoms, not patients
        **({} if previous is None else {"previous": previous.record()}),
    }
    existing = _existing_settings(out)
    differing = (
        [] if existing is None else [k for k in SETTING_KEYS if _differs(existing, settings, k)]
    )
    changed = bool(differing)
    if changed and not overwrite:
        diff = (
            ", ".join(
                f"{k} {existing.get(k)!r} → {settings.get(k)!r}"  # type: ignore[union-attr]
                for k in differing
                if k not in ("plan", "previous")
            )
            or "another plan configuration or previous stage"
        )
        raise AmosegError(
            f"output folder holds a store built with other settings ({diff})",
            out,
            "pass --overwrite to rebuild it, or choose another output folder",
        )

    owned = set(_read_splits(out)) | {c.case_id for c in selected}
    digest = None if previous is None else record_digest(previous.record())
    todo = [c for c in selected if not _case_current(out, c, config, digest)]
    skipped: dict[str, str] = {}
    for case in todo:  # header-only pre-flight: most bad inputs fail before any write
        try:
            notes += check_case_files(case)
        except AmosegError as exc:
            if not skip_bad:
                raise
            skipped[case.case_id] = exc.line()
    todo = [c for c in todo if c.case_id not in skipped]

    _begin(out, settings, splits, invalidate=changed)
    if made is not None:
        from amoseg.planning import save_plan

        save_plan(made, out / "plan.json")  # the plan made on the fly, for the record
    reused = len(selected) - len(todo) - len(skipped)
    for case_id, reason in _run_cases(todo, out, config, workers, skip_bad, progress, previous):
        skipped[case_id] = reason

    done = [c for c in selected if c.case_id not in skipped]
    if not done:
        raise AmosegError(
            f"none of the {len(selected)} cases could be prepared", root, "see the errors above"
        )
    final_splits: dict[str, Any] = {
        name: [c for c in ids if c not in skipped] for name, ids in splits.items()
    }
    # five folds over the labelled training cases (train + val), beside the held-out test
    training = [c for c in done if c.case_id not in set(final_splits["test"])]
    if previous is not None:  # the previous stage's folds: each case held out as it was there
        final_splits["folds"] = [
            {name: [c for c in fold.get(name, []) if c not in skipped] for name in ("train", "val")}
            for fold in previous.splits().get("folds", [])
        ]
    else:
        final_splits["folds"] = cv_folds(
            [c.case_id for c in training], [c.modality for c in training], seed=seed
        )
    if overwrite:
        _remove_stale_cases(out, {c.case_id for c in done}, owned)
    summary = summarize(out, final_splits)
    summary["skipped"] = [{"case_id": k, "reason": v} for k, v in sorted(skipped.items())]
    summary["warnings"] = notes + _empty_case_notes(out, done)
    write_json(out / "splits.json", final_splits)
    write_json(out / "summary.json", summary)
    write_json(out / "store.json", {**settings, "complete": True})
    (out / PENDING_FILE).unlink(missing_ok=True)
    summary["prepared_now"] = len(todo) - sum(1 for c in todo if c.case_id in skipped)
    summary["reused"] = reused
    summary["seconds"] = round(time.perf_counter() - started, 3)
    return summary


def _check_options(size: int, keep: str, modality: str, workers: int) -> None:
    if not isinstance(size, int) or not 1 <= size <= MAX_SIZE:
        raise AmosegError(f"--size must be 1..{MAX_SIZE}, got {size}")
    if keep not in KEEP_CHOICES:
        raise AmosegError(f"--keep must be one of {', '.join(KEEP_CHOICES)}, got '{keep}'")
    if modality not in MODALITY_CHOICES:
        raise AmosegError(
            f"--modality must be one of {', '.join(MODALITY_CHOICES)}, got '{modality}'"
        )
    if not isinstance(workers, int) or workers < 1:
        raise AmosegError(f"--workers must be at least 1, got {workers}")


def _existing_settings(out: Path) -> dict[str, Any] | None:
    """Settings of the store (complete or in progress) already in `out`, if any.

    Refuses a non-empty folder that is not a store, so a typo cannot mix a store into, say,
    the AMOS download itself.
    """
    if not out.exists():
        return None
    if not out.is_dir():
        raise AmosegError("output path exists and is not a folder", out)
    for name in ("store.json", PENDING_FILE):
        if (out / name).exists():
            return read_json(out / name, name)
    if any(p for p in out.iterdir() if not p.name.startswith(".")):
        raise AmosegError(
            "output folder is not empty and is not an amoseg slice store",
            out,
            "choose a new or empty folder",
        )
    return None


def _differs(previous: dict[str, Any], settings: dict[str, Any], key: str) -> bool:
    old = previous.get(key)
    if old is None and key in ("configuration", "plan") and settings["configuration"] == "seed":
        return False  # stores from before plans existed are all seed stores
    return old != settings.get(key)


def _read_splits(out: Path) -> list[str]:
    """Case ids the store in `out` lists (what an --overwrite rebuild may remove)."""
    path = out / "splits.json"
    try:
        data = read_json(path, "splits.json") if path.exists() else {}
    except AmosegError:
        return []
    return [str(c) for name in SPLITS for c in data.get(name, []) if isinstance(c, str)]


def _case_current(
    out: Path, case: AmosCase, config: Configuration, previous: str | None = None
) -> bool:
    """A finished case built with this configuration (and, for a cascade, the same previous
    stage: `previous` is its record's digest) from the same source files (path, size,
    modification time): a changed or replaced source file makes the case stale."""
    if not case_done(out, case.case_id):
        return False
    try:
        meta = read_json(out / "cases" / case.case_id / "meta.json", "case meta.json")
    except AmosegError:
        return False
    if previous is not None and (meta.get("previous_stage") or {}).get("record_sha256") != previous:
        return False
    if meta.get("plan_sha256", None) not in (None, config_digest(config)):
        return False
    if meta.get("size") != config.size or meta.get("keep") != config.keep:
        return False
    recorded = meta.get("source_identity") or {}
    try:
        now = {"image": source_identity(case.image), "label": source_identity(case.label)}
    except OSError:
        return False
    return recorded == now


def _begin(
    out: Path, settings: dict[str, Any], splits: dict[str, list[str]], invalidate: bool
) -> None:
    """Mark the store as in progress before touching any case.

    A first run has no store.json until the end, so a crash leaves a folder that `SliceStore`
    refuses and a rerun resumes. A rebuild with other settings removes store.json first. A
    rerun with the same settings keeps it: its finished cases stay valid, and readers list
    only finished cases.
    """
    _remove_temp_leftovers(out)
    write_json(out / PENDING_FILE, settings)
    if invalidate:
        (out / "store.json").unlink(missing_ok=True)
    write_json(out / "splits.json", splits)


def _remove_temp_leftovers(out: Path) -> None:
    """Temp files/folders of writes a kill -9 interrupted (atomic writes name them '.*.tmp*')."""
    for folder in (out, out / "cases"):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if path.name.startswith(".") and ".tmp" in path.name:
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)


def _remove_stale_cases(out: Path, keep_ids: set[str], owned: set[str]) -> None:
    """Remove case folders of this store's own ids that are no longer in it; folders of ids
    the store never listed are not ours to delete."""
    cases_dir = out / "cases"
    if not cases_dir.is_dir():
        return
    for path in cases_dir.iterdir():
        name = path.name
        if path.is_dir() and not name.startswith(".") and name in owned and name not in keep_ids:
            shutil.rmtree(path)


def _init_worker(parent: int) -> None:
    """A worker dies with the prepare that started it (kill -9 of the parent leaves no worker
    writing cases or holding memory), then works on one torch thread."""
    import torch

    from amoseg.interrupts import die_with_parent

    die_with_parent(parent)
    torch.set_num_threads(1)


def _prepare_or_error(
    case: AmosCase, out: Path, config: Configuration, previous: PreviousStage | None = None
) -> tuple[str, tuple[str, str | None, str | None] | None]:
    """Run in a worker: user errors travel back as (what, path, hint), bugs as exceptions."""
    try:
        prepare_case(case, out, config, previous)
    except AmosegError as exc:
        return case.case_id, (exc.what, None if exc.path is None else str(exc.path), exc.hint)
    return case.case_id, None


def _run_cases(
    todo: list[AmosCase],
    out: Path,
    config: Configuration,
    workers: int,
    skip_bad: bool,
    progress: bool,
    previous: PreviousStage | None = None,
) -> Iterator[tuple[str, str]]:
    """Prepare cases (in parallel when workers > 1); yields (case_id, reason) for skipped ones.

    Without skip_bad the first bad case stops the run: queued cases are cancelled, running
    ones finish (each is written atomically), then the error is raised.
    """
    if not todo:
        return
    from amoseg.interrupts import note_finished
    from amoseg.progress import progress_bar

    bar = progress_bar("prepare", enabled=progress)
    finished = 0
    with bar:
        task = bar.add_task(todo[0].case_id, total=len(todo))
        results = _results(todo, out, config, workers, previous)
        try:
            for case_id, error in results:
                bar.update(task, advance=1, description=case_id)
                if error is None:
                    finished += 1
                    note_finished(
                        f"prepare finished {finished} of {len(todo)} cases in {out} "
                        "(the same command resumes)"
                    )
                    continue
                if not skip_bad or _is_output_error(error, out):
                    raise AmosegError(*error)  # a full disk is no bad case: never skip it
                yield case_id, AmosegError(*error).line()
        finally:
            results.close()  # stop the pool now, not when the generator is collected


def _is_output_error(error: tuple[str, str | None, str | None], out: Path) -> bool:
    path = error[1]
    return path is not None and Path(path).resolve().is_relative_to(out.resolve())


def _results(
    todo: list[AmosCase],
    out: Path,
    config: Configuration,
    workers: int,
    previous: PreviousStage | None = None,
) -> Generator[tuple[str, tuple[str, str | None, str | None] | None], None, None]:
    if workers == 1 or len(todo) == 1:
        import torch

        # One thread, as in the workers: prepare scales over cases, and torch's thread pool
        # costs more than it gains on these small per-chunk ops (4× slower on demo scans).
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for case in todo:
                yield _prepare_or_error(case, out, config, previous)
        finally:
            torch.set_num_threads(threads)
        return
    # spawn: a forked child inheriting torch's OpenMP pool can hang; workers are long-lived.
    pool = ProcessPoolExecutor(
        max_workers=min(workers, len(todo)),
        mp_context=get_context("spawn"),
        initializer=_init_worker,
        initargs=(os.getpid(),),
    )
    try:
        pending: set[Future] = {
            pool.submit(_prepare_or_error, c, out, config, previous) for c in todo
        }
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                try:
                    yield future.result()
                except BrokenProcessPool as exc:
                    raise AmosegError(
                        "a prepare worker process died (out of memory?)",
                        hint="retry with fewer --workers; finished cases are kept",
                    ) from exc
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def summarize(out: str | Path, splits: dict[str, list[str]]) -> dict[str, Any]:
    """Cases, slices and class pixel shares per split, from the stored cases' meta.json."""
    out = Path(out)
    result: dict[str, Any] = {"store": str(out), "class_names": list(CLASS_NAMES), "splits": {}}
    total = np.zeros(NUM_CLASSES, dtype=np.int64)
    total_cases = total_slices = 0
    for name in SPLITS:
        counts = np.zeros(NUM_CLASSES, dtype=np.int64)
        n_slices = 0
        ids = [c for c in splits.get(name, []) if case_done(out, c)]
        for case_id in ids:
            meta = read_json(out / "cases" / case_id / "meta.json", "case meta.json")
            counts += np.asarray(meta["class_pixels"], dtype=np.int64)
            n_slices += int(meta["n_slices"])
        result["splits"][name] = _split_entry(len(ids), n_slices, counts)
        total += counts
        total_cases += len(ids)
        total_slices += n_slices
    result["total"] = _split_entry(total_cases, total_slices, total)
    return result


def _split_entry(cases: int, slices: int, counts: np.ndarray) -> dict[str, Any]:
    pixels = int(counts.sum())
    shares = (counts / pixels).round(6).tolist() if pixels else [0.0] * NUM_CLASSES
    return {
        "cases": cases,
        "slices": slices,
        "class_pixels": [int(c) for c in counts],
        "class_share": shares,
    }


def _empty_case_notes(out: Path, done: list[AmosCase]) -> list[str]:
    notes = []
    for case in done:
        meta = read_json(out / "cases" / case.case_id / "meta.json", "case meta.json")
        if int(meta["n_slices"]) == 0:
            notes.append(f"{case.case_id}: no slice holds an organ label; it adds no slices")
    return notes


def summary_table(summary: dict[str, Any]):
    """The end-of-run table: cases and slices per split, then each class's pixel share."""
    from rich.table import Table

    table = Table(title=f"slice store {summary['store']}")
    table.add_column("")
    names = [*SPLITS, "total"]
    for name in names:
        table.add_column(name, justify="right")
    entries = [summary["splits"][n] for n in SPLITS] + [summary["total"]]
    table.add_row("cases", *(str(e["cases"]) for e in entries))
    table.add_row("slices", *(str(e["slices"]) for e in entries), end_section=True)
    for cls, cls_name in enumerate(summary["class_names"]):
        table.add_row(
            f"{cls:2d} {cls_name}", *(f"{100 * e['class_share'][cls]:.2f} %" for e in entries)
        )
    return table
