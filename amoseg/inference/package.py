"""Model packages: one `.amoseg.zip` file that carries trained models to another machine.

Layout (format version 1)::

    amoseg-package.json         format name and version, amoseg version, member list
    model_card.json / .md       training data, validation (and test) metrics, labels, use
    members/<i>/checkpoint.pt   inference weights only (no optimiser, no store paths)
    members/<i>/config.json     the run's model, hyper-parameters and training settings

Several members (e.g. cross-validation folds) make an ensemble. A package is read straight
from the zip into memory: no member is ever written to disk, so a crafted member name
(`../x`, `/etc/x`) cannot place a file anywhere; such names are refused all the same.
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

from amoseg.atomic import atomic_path, read_json
from amoseg.errors import AmosegError
from amoseg.labels import CLASS_NAMES

PACKAGE_FORMAT = "amoseg-model-package"
#: bump when an older amoseg could no longer read what this one writes.
PACKAGE_FORMAT_VERSION = 1
PACKAGE_SUFFIX = ".amoseg.zip"
MANIFEST = "amoseg-package.json"
MEMBER_FILES = ("checkpoint.pt", "config.json")
#: checkpoint keys a model needs to predict; everything else (optimiser, RNG, history, the
#: run's config with local paths) stays behind.
INFERENCE_KEYS = ("format", "model", "hparams", "input_size", "state", "epoch", "metrics")
#: refuse members that would unpack to more than this (a zip bomb, or not a model).
MAX_MEMBER_BYTES = 4 << 30
_MEMBER_NAME = re.compile(r"^members/\d{1,3}/[a-z_]+\.(pt|json)$")


def is_package(path: str | Path) -> bool:
    """A model package is a file (runs are folders); the suffix says which file."""
    path = Path(path)
    if path.is_dir():
        return False
    return path.name.lower().endswith(".zip") or (path.is_file() and zipfile.is_zipfile(path))


@dataclass
class Package:
    """A package read into memory: its manifest, model card and members' checkpoints."""

    path: Path
    manifest: dict[str, Any]
    card: dict[str, Any]
    checkpoints: list[dict[str, Any]]
    configs: list[dict[str, Any]]


# ---------------------------------------------------------------------------- writing


def export_package(run_dirs: list[Path], target: str | Path) -> dict[str, Any]:
    """Write the runs' best models as one package (several runs: an ensemble) → its card."""
    import torch

    from amoseg.models.checkpoint import load_checkpoint

    target = Path(target)
    if not target.name.lower().endswith(PACKAGE_SUFFIX):
        raise AmosegError(f"a model package file name ends in {PACKAGE_SUFFIX}", target)
    members = []
    for run_dir in run_dirs:
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise AmosegError("run folder not found", run_dir, "pass the OUT folder of train")
        ckpt_path = run_dir / "checkpoint_best.pt"
        if not ckpt_path.exists():
            raise AmosegError("no checkpoint_best.pt in the run folder", run_dir, "train first")
        ckpt = load_checkpoint(ckpt_path)
        config = read_json(run_dir / "config.json", "run config.json")
        payload = {k: ckpt[k] for k in INFERENCE_KEYS if k in ckpt}
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        members.append((run_dir, payload, _portable_config(config), buffer.getvalue()))
    names = {m[1]["model"] for m in members}
    sizes = {m[1].get("input_size") for m in members}
    if len(names) > 1 or len(sizes) > 1:
        raise AmosegError(
            f"an ensemble's members must share model and size (got {sorted(names)}, {sizes})",
            run_dirs[0],
        )
    card = model_card([(m[0], m[1], m[2]) for m in members])
    manifest = {
        "format": PACKAGE_FORMAT,
        "format_version": PACKAGE_FORMAT_VERSION,
        "amoseg_version": _version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": card["model"],
        "members": [f"members/{i}" for i in range(len(members))],
    }
    with atomic_path(target, suffix=".zip") as tmp, zipfile.ZipFile(tmp, "w") as zf:
        zf.writestr(MANIFEST, json.dumps(manifest, indent=2) + "\n", zipfile.ZIP_DEFLATED)
        zf.writestr("model_card.json", json.dumps(card, indent=2) + "\n", zipfile.ZIP_DEFLATED)
        zf.writestr("model_card.md", model_card_markdown(card), zipfile.ZIP_DEFLATED)
        for i, (_run, _payload, config, weights) in enumerate(members):
            zf.writestr(f"members/{i}/checkpoint.pt", weights, zipfile.ZIP_STORED)
            zf.writestr(
                f"members/{i}/config.json", json.dumps(config, indent=2) + "\n",
                zipfile.ZIP_DEFLATED,
            )  # fmt: skip
    return card


def _version() -> str:
    from amoseg._version import __version__

    return __version__


def _portable_config(config: dict[str, Any]) -> dict[str, Any]:
    """The run config without this machine's paths (the store is named, not located)."""
    store = dict(config.get("store", {}))
    path = store.pop("path", None)
    if path:
        store["name"] = Path(path).name
    settings = {k: v for k, v in config.get("settings", {}).items() if "dir" not in k}
    return {**config, "store": store, "settings": settings}


def training_data(config: dict[str, Any]) -> dict[str, Any]:
    """What the run was trained on, from its store (when still on this machine): source,
    modality, cases per split, and whether the scans were synthetic."""
    store = config.get("store", {})
    info: dict[str, Any] = {"store": Path(store.get("path", "?")).name, "size": store.get("size")}
    flags = [config.get("synthetic"), store.get("synthetic")]
    root = Path(store["path"]) if store.get("path") else None
    if root is not None and (root / "store.json").is_file():
        meta = _json_or_empty(root / "store.json")
        info["modality"] = meta.get("modality")
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
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _run_metrics(run_dir: Path, ckpt: dict[str, Any]) -> dict[str, Any]:
    """Validation metrics of the best epoch, the run's summary, and a test evaluation when
    `amoseg evaluate` wrote one."""
    out: dict[str, Any] = {"best_epoch": ckpt.get("epoch")}
    row = ckpt.get("metrics") or {}
    out["validation"] = {k: v for k, v in row.items() if str(k).startswith("val_")}
    summary = _json_or_empty(run_dir / "summary.json")
    for key in ("best_val_miou", "train_seconds", "n_params", "epoch"):
        if key in summary:
            out[key if key != "epoch" else "epochs_trained"] = summary[key]
    test = _json_or_empty(run_dir / "eval_test" / "metrics.json")
    if test:
        out["test"] = {k: v for k, v in test.items() if not isinstance(v, dict | list)}
    log = run_dir / "log.csv"
    if "epochs_trained" not in out and log.is_file():
        with log.open(newline="") as fh:
            out["epochs_trained"] = sum(1 for _ in csv.DictReader(fh))
    return out


def model_card(members: list[tuple[Path, dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
    """The card: what the model is, what it was trained on, how well it validated."""
    first_run, first, first_config = members[0]
    config = read_json(first_run / "config.json", "run config.json")
    data = training_data(config)
    return {
        "model": first["model"],
        "input_size": first.get("input_size"),
        "hparams": first.get("hparams"),
        "members": len(members),
        "training_data": data,
        "training_settings": first_config.get("settings", {}),
        "metrics": [_run_metrics(run, ckpt) for run, ckpt, _cfg in members],
        "labels": {str(i): name for i, name in enumerate(CLASS_NAMES)},
        "amoseg_version": _version(),
        "intended_use": "research; not a medical device. Check every result before use.",
    }


def model_card_markdown(card: dict[str, Any]) -> str:
    """The card as a short markdown page (what a colleague reads before using the model)."""
    data = card["training_data"]
    lines = [
        f"# amoseg model: {card['model']}",
        "",
        f"- members: {card['members']}" + (" (ensemble)" if card["members"] > 1 else ""),
        f"- input size: {card['input_size']} px slices; hparams: `{json.dumps(card['hparams'])}`",
        f"- amoseg version: {card['amoseg_version']}",
        f"- intended use: {card['intended_use']}",
        "",
        "## Training data",
        "",
    ]
    if data.get("synthetic"):
        lines += ["**Trained on synthetic phantoms, not on real scans: not for real CT/MR.**", ""]
    lines.append(f"- store: {data.get('store')} (slices {data.get('size')}²)")
    if data.get("modality"):
        lines.append(f"- modality: {data['modality']}")
    if data.get("cases"):
        lines.append("- cases: " + ", ".join(f"{k} {v}" for k, v in data["cases"].items()))
    if data.get("dataset"):
        lines.append(f"- dataset: {data['dataset'].get('description') or data['dataset']}")
    if data.get("synthetic") is None:
        lines.append("- synthetic: unknown (neither the run nor its store records it)")
    lines += ["", "## Validation metrics", "", "| member | best epoch | metric | value |"]
    lines.append("|---|---|---|---|")
    for i, metrics in enumerate(card["metrics"]):
        for key, value in {**metrics.get("validation", {}), **metrics.get("test", {})}.items():
            shown = f"{value:.4f}" if isinstance(value, float) else str(value)
            lines.append(f"| {i} | {metrics.get('best_epoch')} | {key} | {shown} |")
    lines += ["", "Labels: " + ", ".join(f"{k} {v}" for k, v in card["labels"].items()), ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- reading


def read_package(path: str | Path) -> Package:
    """Open and check a package: one-line errors for a missing, corrupt, foreign or newer
    one. Checkpoints are read from the zip into memory (weights only, no code)."""
    path = Path(path)
    if not path.is_file():
        raise AmosegError("model package not found", path, "create one with `amoseg export`")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = {info.filename: info for info in zf.infolist()}
            _check_names(infos, path)
            if MANIFEST not in infos:
                raise AmosegError(f"not an amoseg model package (no {MANIFEST})", path)
            manifest = _read_json_member(zf, MANIFEST, path)
            _check_format(manifest, path)
            card = (
                _read_json_member(zf, "model_card.json", path) if "model_card.json" in infos else {}
            )
            checkpoints, configs = [], []
            for member in manifest.get("members", []):
                if not isinstance(member, str) or not re.fullmatch(r"members/\d{1,3}", member):
                    raise AmosegError(f"model package lists a bad member {member!r}", path)
                ckpt_info = infos.get(f"{member}/checkpoint.pt")
                if ckpt_info is None:
                    raise AmosegError(f"model package lacks {member}/checkpoint.pt", path)
                if ckpt_info.file_size > MAX_MEMBER_BYTES:
                    raise AmosegError(f"{member}/checkpoint.pt is implausibly large", path)
                checkpoints.append(_load_weights(zf.read(ckpt_info), path, member))
                config = f"{member}/config.json"
                configs.append(_read_json_member(zf, config, path) if config in infos else {})
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
        raise AmosegError("model package holds no models", path)
    return Package(path, manifest, card, checkpoints, configs)


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
        raise AmosegError("not an amoseg model package (unknown manifest)", path)
    version = manifest.get("format_version")
    if not isinstance(version, int):
        raise AmosegError("model package has no format version", path)
    if version > PACKAGE_FORMAT_VERSION:
        raise AmosegError(
            f"model package format {version} is newer than this amoseg reads "
            f"(up to {PACKAGE_FORMAT_VERSION}; written by amoseg "
            f"{manifest.get('amoseg_version', '?')})",
            path,
            "upgrade amoseg to use it",
        )


def _read_json_member(zf: zipfile.ZipFile, name: str, path: Path) -> Any:
    try:
        return json.loads(zf.read(name).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AmosegError(f"model package entry {name} is not valid JSON", path) from exc


def _load_weights(data: bytes, path: Path, member: str) -> dict[str, Any]:
    from amoseg.models.checkpoint import load_checkpoint

    return load_checkpoint(io.BytesIO(data), name=Path(f"{path}!{member}/checkpoint.pt"))


def package_models(path: str | Path, device: str = "auto") -> tuple[list[Any], Package]:
    """The package's models, rebuilt on `device`, and the package itself."""
    from amoseg.models.checkpoint import rebuild_model

    package = read_package(path)
    models = [rebuild_model(c, device, Path(path)) for c in package.checkpoints]
    return models, package


def package_model(path: str | Path, device: str = "auto") -> Any:
    """The model of a one-member package (an ensemble's members: `package_models`)."""
    models, package = package_models(path, device=device)
    if len(models) != 1:
        raise AmosegError(
            f"model package holds an ensemble of {len(models)} models, not one",
            package.path,
            "export a single run for this (amoseg export RUN --package/--onnx)",
        )
    return models[0]
