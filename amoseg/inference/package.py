"""Model packages: one `.amoseg.zip` file that carries trained models to another machine.

Layout (format version 2; version 1 lacks postprocessing.json and reads the same)::

    amoseg-package.json              format name and version, amoseg version, member list
    model_card.json / .md            training data, native test metrics, licence, citation
    members/<i>/checkpoint.pt        inference weights only (no optimiser, no store paths)
    members/<i>/config.json          the run's recipe, parameters, configuration, settings
    members/<i>/postprocessing.json  the clean-up `amoseg cv` chose (when the run has one)
    members/<i>/previous/<j>/checkpoint.pt, config.json
                                     a cascade member's previous stage (its run folder's
                                     previous/ fold runs), run before it on every scan

Format version 3 adds one member kind, an nnU-Net v2 model folder (`config.json` says
`"kind": "nnunet"`; its dataset.json, plans.json and fold checkpoints beside it, see
`amoseg.inference.nnunet_member`), and a cascade member's previous/ stage::

    members/<i>/dataset.json, plans.json         an nnU-Net member: the folder's own
    members/<i>/fold_<f>/checkpoint_final.pth    its folds' weights (or checkpoint_best.pth)
    members/<i>/previous/dataset.json, plans.json, fold_<f>/checkpoint_final.pth
                                     an nnU-Net 3d_cascade_fullres member's 3d_lowres stage
                                     (the same folds; config.json's "previous" lists them)

A package is written with
the lowest version that describes it: amoseg's own single-stage runs as version 2 (what older
amoseg reads), nnU-Net folders and cascades as 3 (an older amoseg then says "newer than this
amoseg reads" rather than misreading it).

A member holds what a run folder (or nnU-Net model folder) holds (`amoseg.inference.bundle`):
both are read into the same kind of bundle. Several members (e.g. cross-validation folds, or
2D and 3D runs) make an ensemble. A package is read straight from the zip into memory: no
member is ever written to disk, so a crafted member name (`../x`, `/etc/x`) cannot place a
file anywhere; such names are refused all the same, as are oversized entries, repeated
members and malformed JSON, before any model is built.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amoseg.atomic import atomic_path
from amoseg.errors import AmosegError
from amoseg.inference.bundle import ModelBundle, read_bundles
from amoseg.inference.postprocess import POSTPROCESSING_FILE, check_postprocessing
from amoseg.labels import CLASS_NAMES

PACKAGE_FORMAT = "amoseg-model-package"
#: bump when an older amoseg could no longer read what this one writes.
PACKAGE_FORMAT_VERSION = 2
#: packages with an nnU-Net member (kind "nnunet") or a cascade; the newest this amoseg reads
NNUNET_FORMAT_VERSION = 3
READABLE_FORMAT_VERSION = 3
PACKAGE_SUFFIX = ".amoseg.zip"
MANIFEST = "amoseg-package.json"
MEMBER_FILES = ("checkpoint.pt", "config.json", POSTPROCESSING_FILE)
#: checkpoint keys a model needs to predict; everything else (optimiser, RNG, history, the
#: run's config with local paths) stays behind.
INFERENCE_KEYS = ("format", "model", "hparams", "input_size", "state", "epoch", "metrics")
#: refuse members that would unpack to more than this (a zip bomb, or not a model).
MAX_MEMBER_BYTES = 4 << 30
#: a JSON entry (manifest, card, config) larger than this is not one amoseg wrote.
MAX_JSON_BYTES = 4 << 20
#: more members than this is not an ensemble anyone trained (each one runs per scan).
MAX_MEMBERS = 64
#: what to do about a package that is malformed or damaged
REEXPORT = "only use packages written by `amoseg export`; export it again"
_MEMBER_NAME = re.compile(
    r"^members/\d{1,3}/((previous/\d{1,3}/)?[a-z_]+\.(pt|json)|previous/(dataset|plans)\.json"
    r"|(previous/)?fold_(\d{1,3}|all)/checkpoint_(final|best)\.pth)$"
)


def is_package(path: str | Path) -> bool:
    """A model package is a file (runs are folders); the suffix says which file."""
    path = Path(path)
    if path.is_dir():
        return False
    return path.name.lower().endswith(".zip") or (path.is_file() and zipfile.is_zipfile(path))


def is_scan_zip(path: Path) -> bool:
    """A `.zip` that is a scan (DICOM), not an amoseg model package: not named
    `*.amoseg.zip` and without the package manifest."""
    name = path.name.lower()
    if not name.endswith(".zip") or name.endswith(PACKAGE_SUFFIX):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return MANIFEST not in archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return True  # damaged: `amoseg export` names packages *.amoseg.zip, so a scan


@dataclass
class Package:
    """A package read into memory: its manifest, model card and members' checkpoints."""

    path: Path
    manifest: dict[str, Any]
    card: dict[str, Any]
    checkpoints: list[dict[str, Any]]
    configs: list[dict[str, Any]]
    postprocessing: list[dict[str, Any] | None]
    #: per member: its previous stage's (checkpoint, config) pairs (empty: a single stage)
    previous: list[list[tuple[dict[str, Any], dict[str, Any]]]] | None = None


# ---------------------------------------------------------------------------- writing


def export_package(
    model_paths: list[Path],
    target: str | Path,
    *,
    licence: str | None = None,
    citation: str | None = None,
    folds: list[str] | None = None,
    previous_stage: str | Path | None = None,
) -> dict[str, Any]:
    """Write the models `model_paths` name (runs, folders of fold runs, or nnU-Net v2 model
    folders) as one package (several: an ensemble) → its card. `licence` / `citation` go onto
    the card; `folds` picks an nnU-Net folder's folds (default: all it predicts with);
    `previous_stage`: the 3d_lowres folder of an nnU-Net cascade kept elsewhere than beside it."""
    from amoseg.nnunet_models import is_nnunet_model_dir

    target = Path(target)
    if not target.name.lower().endswith(PACKAGE_SUFFIX):
        raise AmosegError(f"a model package file name ends in {PACKAGE_SUFFIX}", target)
    for path in model_paths:
        if Path(path).is_file():
            raise AmosegError(
                "a package member must be a run folder or an nnU-Net model folder",
                path,
                "pass the OUT folder of train, or the nnU-Net folder with plans.json",
            )
    nnunet = [is_nnunet_model_dir(p) for p in model_paths]
    if any(nnunet):
        if not all(nnunet):
            which = model_paths[nnunet.index(False)]
            raise AmosegError(
                "a package holds either amoseg runs or nnU-Net model folders, not both",
                which,
                "export each kind on its own; `amoseg predict` ensembles the two packages",
            )
        members, card, version = _nnunet_members(
            model_paths, licence, citation, folds, previous_stage
        )
    else:
        if previous_stage is not None:
            raise AmosegError(
                "--previous-stage names an nnU-Net cascade's 3d_lowres folder",
                model_paths[0],
                "amoseg's cascade runs carry their first stage (previous/); drop it",
            )
        if folds is not None:
            raise AmosegError(
                "--folds picks folds of an nnU-Net model folder",
                model_paths[0],
                "pass amoseg's fold runs as separate folders instead",
            )
        members, card, version = _amoseg_members(model_paths, licence, citation)
    manifest = {
        "format": PACKAGE_FORMAT,
        "format_version": version,
        "amoseg_version": _version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": card["model"],
        "members": [f"members/{i}" for i in range(len(members))],
    }
    with atomic_path(target, suffix=".zip") as tmp, zipfile.ZipFile(tmp, "w") as zf:
        zf.writestr(MANIFEST, _json_text(manifest), zipfile.ZIP_DEFLATED)
        zf.writestr("model_card.json", _json_text(card), zipfile.ZIP_DEFLATED)
        zf.writestr("model_card.md", model_card_markdown(card), zipfile.ZIP_DEFLATED)
        for i, entries in enumerate(members):
            for name, data in entries.items():
                packed = (
                    zipfile.ZIP_STORED if name.endswith((".pt", ".pth")) else zipfile.ZIP_DEFLATED
                )
                zf.writestr(f"members/{i}/{name}", data, packed)
    return card


Members = list[dict[str, "bytes | str"]]


def _amoseg_members(
    model_paths: list[Path], licence: str | None, citation: str | None
) -> tuple[Members, dict[str, Any], int]:
    """amoseg's own runs: inference weights, portable config, saved clean-up (format 2)."""

    bundles: list[ModelBundle] = []
    for path in model_paths:
        bundles.extend(read_bundles(path))
    members: Members = []
    for bundle in bundles:
        entries: dict[str, bytes | str] = {
            "checkpoint.pt": _weights(bundle),
            "config.json": _json_text(_portable_config(bundle.config)),
        }
        if bundle.postprocessing is not None:
            entries[POSTPROCESSING_FILE] = _json_text(bundle.postprocessing)
        # a cascade member travels with its previous stage (the run's previous/ fold runs)
        for j, stage in enumerate(bundle.previous_bundles()):
            entries[f"previous/{j}/checkpoint.pt"] = _weights(stage)
            entries[f"previous/{j}/config.json"] = _json_text(_portable_config(stage.config))
        members.append(entries)
    card = model_card(bundles, licence=licence, citation=citation)
    cascade = any(b.previous_bundles() for b in bundles)
    return members, card, NNUNET_FORMAT_VERSION if cascade else PACKAGE_FORMAT_VERSION


def _weights(bundle: ModelBundle) -> bytes:
    """A bundle's inference weights (no optimiser state), as a torch file."""
    import torch

    payload = {k: bundle.checkpoint[k] for k in INFERENCE_KEYS if k in bundle.checkpoint}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def _nnunet_members(
    model_paths: list[Path],
    licence: str | None,
    citation: str | None,
    folds: list[str] | None,
    previous_stage: str | Path | None = None,
) -> tuple[Members, dict[str, Any], int]:
    """nnU-Net model folders: one member each, with its folds (format 3)."""
    from amoseg.inference.nnunet_member import export_member, member_config, nnunet_card

    if previous_stage is not None and len(model_paths) != 1:
        raise AmosegError(
            "--previous-stage goes with one nnU-Net cascade folder",
            model_paths[1],
            "export each cascade on its own",
        )
    exports = [export_member(Path(p), folds, previous_stage) for p in model_paths]
    members: Members = [{**e.entries, "config.json": _json_text(member_config(e))} for e in exports]
    card = nnunet_card(exports, licence=licence, citation=citation, version=_version())
    return members, card, NNUNET_FORMAT_VERSION


def _json_text(value: Any) -> str:
    return json.dumps(value, indent=2) + "\n"


def _version() -> str:
    from amoseg._version import __version__

    return __version__


def _portable_config(config: dict[str, Any]) -> dict[str, Any]:
    """The run config without this machine's paths (the store is named, not located)."""
    store = dict(config.get("store", {}))
    path = store.pop("path", None)
    if path:
        store["name"] = Path(path).name
    previous = store.get("previous_stage")
    if isinstance(previous, dict):  # a cascade: its previous stage without local paths
        folds = previous.get("folds") or {}
        store["previous_stage"] = {
            **{k: previous.get(k) for k in ("configuration", "organs", "rule")},
            "folds": {
                k: {"checkpoint_sha256": v.get("checkpoint_sha256")} for k, v in folds.items()
            },
        }
    settings = {k: v for k, v in config.get("settings", {}).items() if "dir" not in k}
    return {**config, "store": store, "settings": settings}


def training_data(config: dict[str, Any]) -> dict[str, Any]:
    """What the run was trained on, from its config and (when still on this machine) its
    store: configuration, modality, cases per split, and whether the scans were synthetic."""
    store = config.get("store", {})
    info: dict[str, Any] = {
        "store": Path(store.get("path", "?")).name,
        "size": store.get("size"),
        "configuration": store.get("configuration") or "seed",
        "modality": store.get("modality"),
    }
    plan = store.get("plan")
    if isinstance(plan, dict):
        info["spacing_mm"] = plan.get("spacing")
        info["patch_size"] = plan.get("patch_size")
    flags = [config.get("synthetic"), store.get("synthetic")]
    root = Path(store["path"]) if store.get("path") else None
    if root is not None and (root / "store.json").is_file():
        meta = _json_or_empty(root / "store.json")
        info["modality"] = meta.get("modality") or info["modality"]
        flags.append(meta.get("synthetic"))
        splits = _json_or_empty(root / "splits.json")
        info["cases"] = {k: len(v) for k, v in splits.items() if isinstance(v, list)}
        source = Path(str(meta.get("source", "")))
        dataset = _json_or_empty(source / "dataset.json") if meta.get("source") else {}
        if dataset:
            info["dataset"] = {k: dataset.get(k) for k in ("name", "description", "licence")}
            flags.append(str(dataset.get("description", "")).lower().startswith("synthetic"))
    known = [bool(f) for f in flags if f is not None]
    info["synthetic"] = any(known) if known else None
    return info


def _json_or_empty(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def _run_metrics(bundle: ModelBundle) -> dict[str, Any]:
    """The best epoch and its validation numbers, the run's summary, and the native
    (AMOS-style: per-scan 3D Dice and NSD on the scans' own grids) test scores of the
    run's `amoseg evaluate`, per organ, when it wrote them."""
    ckpt, run_dir = bundle.checkpoint, bundle.source
    out: dict[str, Any] = {"best_epoch": ckpt.get("epoch")}
    row = ckpt.get("metrics") or {}
    out["validation"] = {k: v for k, v in row.items() if str(k).startswith("val_")}
    summary = _json_or_empty(run_dir / "summary.json")
    for key in ("best_val_miou", "train_seconds", "n_params", "epoch"):
        if key in summary:
            out[key if key != "epoch" else "epochs_trained"] = summary[key]
    native = _json_or_empty(run_dir / "eval_test" / "metrics.json").get("native")
    if isinstance(native, dict):
        out["test_native"] = {
            "n_cases": native.get("n_cases"),
            "tolerance_mm": native.get("tolerance_mm"),
            "mean_dice": native.get("mean_dice"),
            "mean_nsd": native.get("mean_nsd"),
            "per_organ": {
                organ: {"dice": v.get("dice"), "nsd": v.get("nsd")}
                for organ, v in (native.get("per_organ") or {}).items()
                if isinstance(v, dict)
            },
        }
    log = run_dir / "log.csv"
    if "epochs_trained" not in out and log.is_file():
        with log.open(newline="") as fh:
            out["epochs_trained"] = sum(1 for _ in csv.DictReader(fh))
    return out


def model_card(
    bundles: list[ModelBundle], *, licence: str | None = None, citation: str | None = None
) -> dict[str, Any]:
    """The card: what the model is, what it was trained on, how well it scored natively."""
    first = bundles[0]
    recipes = sorted({b.recipe for b in bundles})
    return {
        "model": recipes[0] if len(recipes) == 1 else "+".join(recipes),
        "input_size": first.checkpoint.get("input_size"),
        "hparams": first.checkpoint.get("hparams"),
        "members": len(bundles),
        "configurations": sorted({b.configuration_name for b in bundles}),
        "training_data": training_data(first.config),
        "training_settings": _portable_config(first.config).get("settings", {}),
        "metrics": [_run_metrics(b) for b in bundles],
        "postprocessing": {"lcc_organs": first.lcc_organs},
        "labels": {str(i): name for i, name in enumerate(CLASS_NAMES)},
        "licence": licence,
        "citation": citation,
        "amoseg_version": _version(),
        "intended_use": "research; not a medical device. Check every result before use.",
    }


def model_card_markdown(card: dict[str, Any]) -> str:
    """The card as a short markdown page (what a colleague reads before using the model)."""
    if card.get("kind") == "nnunet":
        from amoseg.inference.nnunet_member import nnunet_card_markdown

        return nnunet_card_markdown(card)
    data = card["training_data"]
    lines = [
        f"# amoseg model: {card['model']}",
        "",
        f"- members: {card['members']}" + (" (ensemble)" if card["members"] > 1 else ""),
        f"- configuration(s): {', '.join(card.get('configurations') or ['seed'])}",
        f"- hparams: `{json.dumps(card['hparams'])}`",
        f"- licence: {card.get('licence') or 'not stated (ask the author)'}",
        f"- citation: {card.get('citation') or 'not stated'}",
        f"- amoseg version: {card['amoseg_version']}",
        f"- intended use: {card['intended_use']}",
        "",
        "## Training data",
        "",
    ]
    if data.get("synthetic"):
        lines += ["**Trained on synthetic phantoms, not on real scans: not for real CT/MR.**", ""]
    lines.append(f"- store: {data.get('store')} (configuration {data.get('configuration')})")
    if data.get("modality"):
        lines.append(f"- modality: {data['modality']}")
    if data.get("spacing_mm"):
        lines.append(f"- spacing: {data['spacing_mm']} mm, patch {data.get('patch_size')}")
    if data.get("cases"):
        lines.append("- cases: " + ", ".join(f"{k} {v}" for k, v in data["cases"].items()))
    if data.get("dataset"):
        lines.append(f"- dataset: {data['dataset'].get('description') or data['dataset']}")
    if data.get("synthetic") is None:
        lines.append("- synthetic: unknown (neither the run nor its store records it)")
    lines += ["", "## Validation during training (best epoch; stored grid)", ""]
    for i, metrics in enumerate(card["metrics"]):
        shown = ", ".join(
            f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
            for k, v in metrics.get("validation", {}).items()
        )
        lines.append(f"- member {i}, epoch {metrics.get('best_epoch')}: {shown or 'none'}")
    lines += ["", "## Test scores (native grid: per-scan 3D Dice / NSD)", ""]
    scored = [(i, m["test_native"]) for i, m in enumerate(card["metrics"]) if m.get("test_native")]
    if not scored:
        lines.append("Not evaluated: run `amoseg evaluate RUN` before exporting to record them.")
    for i, native in scored:
        lines += [
            f"Member {i}: {native.get('n_cases')} scans, mean Dice "
            f"{_pct(native.get('mean_dice'))}, mean NSD {_pct(native.get('mean_nsd'))} "
            f"(tolerance {native.get('tolerance_mm')} mm)",
            "",
            "| organ | Dice | NSD |",
            "|---|---:|---:|",
        ]
        for organ, v in native["per_organ"].items():
            lines.append(f"| {organ} | {_pct(v.get('dice'))} | {_pct(v.get('nsd'))} |")
        lines.append("")
    lines += ["", "Labels: " + ", ".join(f"{k} {v}" for k, v in card["labels"].items()), ""]
    return "\n".join(lines)


def _pct(value: Any) -> str:
    return f"{100 * value:.1f} %" if isinstance(value, int | float) else "–"


# ---------------------------------------------------------------------------- reading


def read_package(path: str | Path) -> Package:
    """Open and check a package: one-line errors for a missing, corrupt, foreign, newer or
    malformed one (every entry's size and type checked before it is read). Checkpoints are
    read from the zip into memory (weights only, no code)."""
    path = Path(path)
    if not path.is_file():
        raise AmosegError("model package not found", path, "create one with `amoseg export`")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = {info.filename: info for info in zf.infolist()}
            _check_names(infos, path)
            if MANIFEST not in infos:
                raise AmosegError(f"not an amoseg model package (no {MANIFEST})", path, REEXPORT)
            manifest = _read_json_member(zf, infos[MANIFEST], path)
            _check_format(manifest, path)
            card = {}
            if "model_card.json" in infos:
                card = _read_json_member(zf, infos["model_card.json"], path)
                if not isinstance(card, dict):
                    raise AmosegError(
                        "model package's model_card.json is not an object", path, REEXPORT
                    )
            checkpoints, configs, post, previous = [], [], [], []
            for member in _member_list(manifest, path):
                config_info = infos.get(f"{member}/config.json")
                config = _read_json_member(zf, config_info, path) if config_info else {}
                if not isinstance(config, dict):
                    raise AmosegError(
                        f"model package's {member}/config.json is not an object", path, REEXPORT
                    )
                configs.append(config)
                kind = config.get("kind", "amoseg")
                if kind == "nnunet":  # its previous stage (a cascade) is inside it
                    checkpoints.append(_read_nnunet_member(zf, infos, member, config, path))
                    post.append(None)
                    previous.append([])
                    continue
                if kind != "amoseg":
                    raise AmosegError(
                        f"model package's {member} is of a kind this amoseg does not read "
                        f"({str(kind)[:20]!r})",
                        path,
                        "upgrade amoseg to use it",
                    )
                previous.append(_previous_stage(zf, infos, member, path))
                checkpoints.append(
                    _load_weights(
                        _read_weights(zf, infos, member, "checkpoint.pt", path), path, member
                    )
                )
                choice = infos.get(f"{member}/{POSTPROCESSING_FILE}")
                organs = (
                    check_postprocessing(_read_json_member(zf, choice, path), path)
                    if choice
                    else None
                )
                post.append(None if organs is None else {"lcc_organs": organs})
    except zipfile.BadZipFile as exc:
        raise AmosegError(
            f"model package is corrupt ({exc})", path, "copy or export the package again"
        ) from exc
    except (EOFError, OSError, ValueError) as exc:  # truncated stream, bad deflate data
        raise AmosegError(
            f"model package is corrupt ({type(exc).__name__}: {exc})",
            path,
            "copy or export the package again",
        ) from exc
    if not checkpoints:
        raise AmosegError("model package holds no models", path, REEXPORT)
    return Package(path, manifest, card, checkpoints, configs, post, previous)


def _previous_stage(
    zf: zipfile.ZipFile, infos: dict[str, zipfile.ZipInfo], member: str, path: Path
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """A cascade member's previous-stage (checkpoint, config) pairs, numbered from 0."""
    out = []
    for j in range(MAX_MEMBERS + 1):
        ckpt = infos.get(f"{member}/previous/{j}/checkpoint.pt")
        config = infos.get(f"{member}/previous/{j}/config.json")
        if ckpt is None and config is None:
            break
        if ckpt is None or config is None or j == MAX_MEMBERS:
            raise AmosegError(f"model package's {member}/previous/ is incomplete", path, REEXPORT)
        if ckpt.file_size > MAX_MEMBER_BYTES:
            raise AmosegError(f"{member}/previous/{j}/checkpoint.pt is implausibly large", path)
        text = _read_json_member(zf, config, path)
        if not isinstance(text, dict):
            raise AmosegError(f"model package's {member}/previous/{j}/config.json is not an "
                              "object", path, REEXPORT)  # fmt: skip
        out.append((_load_weights(zf.read(ckpt), path, f"{member}/previous/{j}"), text))
    return out


def _read_weights(
    zf: zipfile.ZipFile, infos: dict[str, zipfile.ZipInfo], member: str, name: str, path: Path
) -> bytes:
    """A member's weights entry, its declared size checked before it is read."""
    info = infos.get(f"{member}/{name}")
    if info is None:
        raise AmosegError(f"model package lacks {member}/{name}", path, REEXPORT)
    if info.file_size > MAX_MEMBER_BYTES:
        raise AmosegError(f"{member}/{name} is implausibly large", path, REEXPORT)
    return zf.read(info)


def _read_nnunet_member(
    zf: zipfile.ZipFile,
    infos: dict[str, zipfile.ZipInfo],
    member: str,
    config: dict[str, Any],
    path: Path,
) -> dict[str, Any]:
    """An nnU-Net member: its dataset.json and plans.json (JSON, capped) and each listed
    fold's checkpoint (size-checked, weights only), as a `PackedNnunet`; a cascade member the
    same again for its 3d_lowres stage under previous/ (the same folds)."""
    from amoseg.inference.nnunet_member import (
        check_fold_entries,
        check_previous_entries,
        check_stages,
        load_fold,
        packed_member,
    )

    folds = check_fold_entries(config, member, path)
    prev_folds = check_previous_entries(config, folds, member, path)
    names = ["dataset.json", "plans.json"]
    if prev_folds is not None:
        names += ["previous/dataset.json", "previous/plans.json"]
    files = {}
    for name in names:
        info = infos.get(f"{member}/{name}")
        if info is None:
            raise AmosegError(f"model package lacks {member}/{name}", path, REEXPORT)
        files[name] = _read_json_member(zf, info, path)
        if not isinstance(files[name], dict):
            raise AmosegError(f"model package's {member}/{name} is not an object", path, REEXPORT)
    check_stages(config, files, member, path)

    def weights(entries: dict[str, str]) -> dict[str, Any]:
        return {
            fold: load_fold(
                _read_weights(zf, infos, member, entry, path), f"{path}!{member}/{entry}"
            )
            for fold, entry in entries.items()
        }

    previous = None if prev_folds is None else weights(prev_folds)
    packed = packed_member(path, member, config, files, weights(folds), previous)
    return {"kind": "nnunet", "packed": packed}


def _member_list(manifest: dict[str, Any], path: Path) -> list[str]:
    """The manifest's members: a list of distinct `members/<i>` names, at most MAX_MEMBERS."""
    members = manifest.get("members", [])
    if not isinstance(members, list):
        raise AmosegError("model package's member list is not a list", path, REEXPORT)
    if len(members) > MAX_MEMBERS:
        raise AmosegError(
            f"model package lists {len(members)} members (at most {MAX_MEMBERS})", path, REEXPORT
        )
    for member in members:
        if not isinstance(member, str) or not re.fullmatch(r"members/\d{1,3}", member):
            raise AmosegError(
                f"model package lists a bad member {str(member)[:40]!r}", path, REEXPORT
            )
    if len(set(members)) != len(members):
        raise AmosegError("model package lists a member more than once", path, REEXPORT)
    return members


def _check_names(infos: dict[str, zipfile.ZipInfo], path: Path) -> None:
    for name in infos:
        if name in (MANIFEST, "model_card.json", "model_card.md") or name.endswith("/"):
            continue
        if not _MEMBER_NAME.match(name) or ".." in name:
            raise AmosegError(
                f"model package holds an unexpected entry {name[:80]!r}",
                path,
                "only use packages written by `amoseg export`",
            )


def _check_format(manifest: Any, path: Path) -> None:
    if not isinstance(manifest, dict) or manifest.get("format") != PACKAGE_FORMAT:
        raise AmosegError("not an amoseg model package (unknown manifest)", path, REEXPORT)
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise AmosegError("model package has no format version", path, REEXPORT)
    if version > READABLE_FORMAT_VERSION:
        raise AmosegError(
            f"model package format {version} is newer than this amoseg reads "
            f"(up to {READABLE_FORMAT_VERSION}; written by amoseg "
            f"{str(manifest.get('amoseg_version', '?'))[:20]})",
            path,
            "upgrade amoseg to use it",
        )


def _read_json_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> Any:
    """A JSON entry, its declared size checked before anything is inflated (a small zip can
    declare gigabytes), and its real size capped while reading."""
    if info.file_size > MAX_JSON_BYTES:
        raise AmosegError(
            f"model package entry {info.filename} is implausibly large "
            f"({info.file_size / 2**20:.0f} MiB; at most {MAX_JSON_BYTES >> 20} MiB)",
            path,
            REEXPORT,
        )
    with zf.open(info) as fh:
        data = fh.read(MAX_JSON_BYTES + 1)
    if len(data) > MAX_JSON_BYTES:
        raise AmosegError(
            f"model package entry {info.filename} is implausibly large", path, REEXPORT
        )
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise AmosegError(
            f"model package entry {info.filename} is not valid JSON", path, REEXPORT
        ) from exc


def _load_weights(data: bytes, path: Path, member: str) -> dict[str, Any]:
    from amoseg.models.checkpoint import load_checkpoint

    return load_checkpoint(io.BytesIO(data), name=Path(f"{path}!{member}/checkpoint.pt"))


def package_bundles(path: str | Path) -> list[Any]:
    """One bundle per member of the package at `path` (a `ModelBundle` for amoseg's own
    runs, an `NnunetBundle` for nnU-Net model folders)."""
    from amoseg.inference.bundle import NnunetBundle

    package = read_package(path)
    bundles: list[Any] = []
    previous = package.previous or [[] for _ in package.checkpoints]
    for i, (ckpt, config, post, stage) in enumerate(
        zip(package.checkpoints, package.configs, package.postprocessing, previous, strict=True)
    ):
        member = f"members/{i}"
        if config.get("kind") == "nnunet":
            bundles.append(
                NnunetBundle(package.path, member, card=package.card, packed=ckpt["packed"])
            )
            continue
        bundles.append(
            ModelBundle(
                source=package.path,
                member=member,
                checkpoint=ckpt,
                config=config,
                card=package.card,
                postprocessing=post,
                previous=tuple(
                    ModelBundle(package.path, f"{member}/previous/{j}", c, cfg, package.card)
                    for j, (c, cfg) in enumerate(stage)
                )
                or None,
            )
        )
    return bundles
