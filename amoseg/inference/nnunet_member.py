"""nnU-Net v2 model folders as members of a model package (member kind `nnunet`, format 3).

A package member of this kind holds what the model folder holds, so predicting from the
package is predicting from the folder::

    members/<i>/config.json                      {"kind": "nnunet", configuration, folds,
                                                  labels (model class id → AMOS id), source}
    members/<i>/dataset.json, plans.json         the folder's own, unchanged
    members/<i>/fold_<f>/checkpoint_final.pth    network weights and mirroring axes only
                                                 (checkpoint_best.pth where the fold had no final)
    members/<i>/previous/dataset.json, plans.json, fold_<f>/checkpoint_final.pth
                                                 a 3d_cascade_fullres member's 3d_lowres stage
                                                 (the sibling folder nnU-Net writes; the same
                                                 folds), run first on every scan

Read like amoseg's own members: from the zip into memory, every entry's size checked, JSON
capped, checkpoints loaded with `weights_only` and the numpy allowlist of
`amoseg.nnunet_models.checkpoint` — never unpickled. The card names the source model and its
licence: the `amoseg models` catalogue's when the folder is one of its models, else the
exporter's `--licence`, else "unknown — check the source".
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

from amoseg.errors import AmosegError
from amoseg.labels import CLASS_NAMES, NUM_CLASSES

NNUNET_KIND = "nnunet"
#: checkpoint keys nnU-Net (and amoseg) need to predict; optimiser, logging and the
#: `init_args` copies of plans and dataset.json stay behind
NNUNET_KEYS = ("network_weights", "inference_allowed_mirroring_axes", "trainer_name",
               "current_epoch")  # fmt: skip
UNKNOWN_LICENCE = "unknown — check the source"
REEXPORT = "only use packages written by `amoseg export`; export it again"
_FOLD_ENTRY = re.compile(r"^fold_(\d{1,3}|all)/checkpoint_(final|best)\.pth$")


@dataclass(frozen=True)
class NnunetExport:
    """One model folder made ready for a package: its entries and what the card says of it."""

    entries: dict[str, bytes]  # name inside members/<i>/ → bytes
    source: dict[str, Any]
    licence: str | None  # the catalogue's (publisher's) licence, when the folder is one
    covered: frozenset[int]


def _catalogue_entry(record: dict[str, Any] | None, folder: Any) -> Any:
    """The catalogue model this folder is: the one `amoseg fetch-model` installed it as, else
    the one whose download is named after the folder's dataset (e.g.
    Dataset297_TotalSegmentator_total_3mm_1559subj.zip); None for any other folder."""
    from amoseg.nnunet_models.catalogue import CATALOGUE

    if record is not None:
        for model in CATALOGUE:
            if model.name == record.get("name"):
                return model
    names = {str(folder.plans.get("dataset_name")), folder.path.parent.name}
    for model in CATALOGUE:
        if PurePosixPath(urlparse(model.url).path).name.removesuffix(".zip") in names:
            return model
    return None


def _fold_entries(folder: Any, prefix: str = "") -> tuple[dict[str, bytes], dict[str, str]]:
    """The folder's chosen folds as slim checkpoints → (entries, fold → entry name)."""
    import torch

    from amoseg.nnunet_models.checkpoint import load_checkpoint

    entries, fold_entries = {}, {}
    for fold, ckpt_path in folder.checkpoints.items():
        checkpoint = load_checkpoint(ckpt_path)
        slim = {k: checkpoint[k] for k in NNUNET_KEYS if k in checkpoint}
        init = checkpoint.get("init_args")
        if isinstance(init, dict):  # nnU-Net's predictor reads the configuration from here
            slim["init_args"] = {k: init[k] for k in ("configuration", "fold") if k in init}
        buffer = io.BytesIO()
        torch.save(slim, buffer)
        name = f"{prefix}fold_{fold}/{Path(ckpt_path).name}"
        entries[name] = buffer.getvalue()
        fold_entries[fold] = name
    return entries, fold_entries


def _previous_folder(folder: Any, explicit: str | Path | None = None) -> Any:
    """A cascade's 3d_lowres stage: `explicit`, or nnU-Net's sibling folder (same folds), or
    one line."""
    from amoseg.nnunet_models.cascade import previous_stage_folder, stage_folder_name

    if explicit is not None:
        return previous_stage_folder(folder, explicit)
    stage = str(folder.configuration["previous_stage"])
    sibling = folder.path.parent / stage_folder_name(folder, stage)
    if not sibling.is_dir():
        raise AmosegError(
            f"a {folder.configuration_name} model is exported with its {stage} stage; "
            "no model folder",
            sibling,
            f"keep the {stage} model folder beside it, as nnU-Net writes them, or name it "
            "with --previous-stage",
        )
    return previous_stage_folder(folder)


def export_member(
    path: Path, folds: list[str] | None = None, previous_stage: str | Path | None = None
) -> NnunetExport:
    """Read the model folder at `path` (its `folds`, or all it predicts with) as nnU-Net's
    reader in amoseg reads it, and make its package entries (a cascade: with its 3d_lowres
    stage's, `previous_stage` or its sibling, under previous/)."""
    from amoseg.nnunet_models.fetch import verify_manifest
    from amoseg.nnunet_models.folder import read_model_folder
    from amoseg.nnunet_models.names import amos_mapping, covered_organs, model_classes

    record = verify_manifest(Path(path))  # an installed model: unchanged since it was fetched
    folder = read_model_folder(path, folds)
    classes = model_classes(folder.dataset.get("labels", {}), folder.path / "dataset.json")
    override = (record or {}).get("labels") or None
    amos = amos_mapping(classes, override, folder.path / "dataset.json")
    entries = {
        "dataset.json": (folder.path / "dataset.json").read_bytes(),
        "plans.json": (folder.path / "plans.json").read_bytes(),
    }
    fold_data, fold_entries = _fold_entries(folder)
    entries.update(fold_data)
    previous = None
    if folder.configuration.get("previous_stage") is not None:
        prev = _previous_folder(folder, previous_stage)
        verify_manifest(prev.path)
        for name in ("dataset.json", "plans.json"):
            entries[f"previous/{name}"] = (prev.path / name).read_bytes()
        prev_data, prev_entries = _fold_entries(prev, "previous/")
        entries.update(prev_data)
        previous = {"folder": prev.path.name, "configuration": prev.configuration_name,
                    "folds": prev_entries}  # fmt: skip
    elif previous_stage is not None:
        raise AmosegError(
            f"{folder.configuration_name} is no cascade stage; it takes no previous stage",
            folder.path,
            "drop --previous-stage",
        )
    catalogue = _catalogue_entry(record, folder)
    parts = folder.path.name.split("__")
    source = {
        "name": catalogue.name if catalogue else folder.name,
        "title": catalogue.title if catalogue else None,
        "url": catalogue.url if catalogue else None,
        "folder": folder.path.name,
        "dataset_name": folder.plans.get("dataset_name"),
        "trainer": parts[0] if len(parts) == 3 else None,
        "plans": folder.plans.get("plans_name"),
        "configuration": folder.configuration_name,
        "folds": fold_entries,
        "labels": {str(k): a for k, a in enumerate(amos)},
        "model_classes": len(classes),
        "dataset": {
            k: folder.dataset[k]
            for k in ("name", "description", "reference", "licence", "license", "numTraining")
            if k in folder.dataset
        },
        **({} if previous is None else {"previous": previous}),
    }
    return NnunetExport(entries, source, catalogue.licence if catalogue else None,
                        covered_organs(amos))  # fmt: skip


def member_config(export: NnunetExport) -> dict[str, Any]:
    """members/<i>/config.json of an nnU-Net member: what the reader needs to rebuild it."""
    s = export.source
    config = {"kind": NNUNET_KIND, "configuration": s["configuration"], "folds": s["folds"],
              "labels": s["labels"], "source": {k: s[k] for k in ("name", "folder",
                                                                   "dataset_name", "trainer",
                                                                   "plans")}}  # fmt: skip
    if "previous" in s:  # a cascade: its 3d_lowres stage's configuration and folds
        config["previous"] = {k: s["previous"][k] for k in ("configuration", "folds")}
    return config


def nnunet_card(
    exports: list[NnunetExport], *, licence: str | None, citation: str | None, version: str
) -> dict[str, Any]:
    """The card of a package of nnU-Net members: the source model(s), their licence (the
    catalogue's; else `licence`; else unknown, said so), the AMOS organs they cover."""
    stated = sorted({e.licence for e in exports if e.licence})
    if stated and licence and licence not in stated:
        raise AmosegError(
            f"--licence {licence!r} contradicts the licence its publisher states for this "
            f"model ({', '.join(stated)}, from `amoseg models`)",
            None,
            "drop --licence: the card carries the publisher's",
        )
    if stated:
        text, origin = "; ".join(stated), "the publisher, as listed by `amoseg models`"
    elif licence:
        text, origin = licence, "the exporter (--licence)"
    else:
        text, origin = UNKNOWN_LICENCE, None
    covered = frozenset().union(*(e.covered for e in exports))
    names = list(dict.fromkeys(e.source["name"] for e in exports))
    return {
        "model": " + ".join(names),
        "kind": NNUNET_KIND,
        "members": len(exports),
        "configurations": sorted({e.source["configuration"] for e in exports}),
        "sources": [e.source for e in exports],
        "licence": text,
        "licence_from": origin,
        "citation": citation,
        "covered_organs": sorted(covered),
        "not_covered": [CLASS_NAMES[i] for i in range(1, NUM_CLASSES) if i not in covered],
        "training_data": {"synthetic": None, "dataset": exports[0].source["dataset"]},
        "labels": {str(i): name for i, name in enumerate(CLASS_NAMES)},
        "amoseg_version": version,
        "intended_use": "research; not a medical device. Check every result before use.",
    }


def nnunet_card_markdown(card: dict[str, Any]) -> str:
    """The card of an nnU-Net package as a short page."""
    licence = card.get("licence") or UNKNOWN_LICENCE
    origin = f" (stated by {card['licence_from']})" if card.get("licence_from") else ""
    lines = [
        f"# nnU-Net v2 model: {card['model']}",
        "",
        f"- members: {card['members']}" + (" (ensemble)" if card["members"] > 1 else ""),
        f"- configuration(s): {', '.join(card['configurations'])}",
        f"- licence: {licence}{origin}",
        f"- citation: {card.get('citation') or 'not stated'}",
        f"- amoseg version: {card['amoseg_version']}",
        f"- intended use: {card['intended_use']}",
        "",
        "## Source",
        "",
    ]
    for source in card["sources"]:
        folds = ", ".join(source["folds"])
        title = f" — {source['title']}" if source.get("title") else ""
        lines.append(f"- {source['name']}{title}: folder `{source['folder']}`, folds {folds}")
        if source.get("previous"):
            prev = source["previous"]
            lines.append(f"  - runs its {prev['configuration']} stage first: folder "
                         f"`{prev['folder']}`, folds {', '.join(prev['folds'])}")  # fmt: skip
        if source.get("url"):
            lines.append(f"  - published at {source['url']}")
        data = source.get("dataset") or {}
        if data.get("licence") or data.get("license"):
            lines.append(f"  - dataset.json states: {data.get('licence') or data['license']}")
        if data.get("reference"):
            lines.append(f"  - reference: {data['reference']}")
    covered = [CLASS_NAMES[i] for i in card["covered_organs"]]
    lines += [
        "",
        "## AMOS organs",
        "",
        f"Covered ({len(covered)}/{NUM_CLASSES - 1}): {', '.join(covered) or 'none'}.",
        "",
        f"Not covered (never predicted: no volume, and reported as not covered, not as 0): "
        f"{', '.join(card['not_covered']) or 'none'}.",
        "",
    ]
    return "\n".join(lines)


def check_fold_entries(
    config: dict[str, Any], member: str, path: Path, prefix: str = ""
) -> dict[str, str]:
    """An nnU-Net member's config (or its previous stage's, under `prefix` previous/): its
    fold → checkpoint entry map, checked (fold names and entry names as the exporter writes
    them), and the configuration it names."""
    folds = config.get("folds")
    if not isinstance(folds, dict) or not folds or len(folds) > 64:
        raise AmosegError(f"model package's {member}/config.json lists no folds", path, REEXPORT)
    for fold, entry in folds.items():
        ok = isinstance(entry, str) and entry.startswith(prefix)
        found = _FOLD_ENTRY.match(entry.removeprefix(prefix)) if ok else None
        if found is None or found.group(1) != fold:
            raise AmosegError(
                f"model package's {member}/config.json lists a bad fold entry {str(entry)[:60]!r}",
                path,
                REEXPORT,
            )
    if not isinstance(config.get("configuration"), str):
        raise AmosegError(f"model package's {member} names no configuration", path, REEXPORT)
    labels = config.get("labels")
    if labels is not None and not isinstance(labels, dict):
        raise AmosegError(f"model package's {member} labels are not an object", path, REEXPORT)
    return dict(folds)


def check_previous_entries(
    config: dict[str, Any], folds: dict[str, str], member: str, path: Path
) -> dict[str, str] | None:
    """A cascade member's previous-stage fold → entry map (None: a single stage), checked:
    entries under previous/, the same folds as the cascade."""
    previous = config.get("previous")
    if previous is None:
        return None
    if not isinstance(previous, dict):
        raise AmosegError(f"model package's {member} previous stage is not an object", path,
                          REEXPORT)  # fmt: skip
    prev_folds = check_fold_entries(previous, f"{member}/previous", path, "previous/")
    if list(prev_folds) != list(folds):
        raise AmosegError(
            f"model package's {member} previous stage has other folds than the cascade",
            path,
            REEXPORT,
        )
    return prev_folds


def check_stages(
    config: dict[str, Any], files: dict[str, dict[str, Any]], member: str, path: Path
) -> None:
    """A member is a cascade exactly when it carries its previous stage, and that stage is
    the one its configuration names, single-stage, with the same labels; else one line."""
    from amoseg.nnunet_models.folder import resolve_configuration

    where = Path(f"{path}!{member}")
    name = str(config["configuration"])
    stage = resolve_configuration(files["plans.json"], name, where).get("previous_stage")
    previous = config.get("previous")
    if stage is None and previous is None:
        return
    if stage is None:
        raise AmosegError(f"model package's {member} ({name}) is no cascade stage but carries "
                          "a previous stage", path, REEXPORT)  # fmt: skip
    if previous is None:
        raise AmosegError(f"model package's {member} is a {name} model without its {stage} "
                          "stage", path, REEXPORT)  # fmt: skip
    if previous["configuration"] != stage:
        raise AmosegError(
            f"model package's {member} previous stage is {str(previous['configuration'])[:30]!r}"
            f", not the {stage} its {name} configuration names",
            path,
            REEXPORT,
        )
    prev_plans = files["previous/plans.json"]
    if resolve_configuration(prev_plans, stage, where / "previous").get("previous_stage"):
        raise AmosegError("a cascade of more than two stages is not supported", path, REEXPORT)
    if files["previous/dataset.json"].get("labels") != files["dataset.json"].get("labels"):
        raise AmosegError(f"model package's {member} {stage} stage has other labels than the "
                          "cascade", path, REEXPORT)  # fmt: skip


@dataclass(frozen=True)
class PackedNnunet:
    """An nnU-Net member read into memory: its JSON files, configuration and checkpoints (a
    cascade: and its previous stage's, as another `PackedNnunet`)."""

    name: str  # "m.amoseg.zip!members/0"
    dataset: dict[str, Any]
    plans: dict[str, Any]
    configuration: str
    checkpoints: dict[str, Any]  # fold → PackedCheckpoint
    labels: dict[str, int | str] | None
    previous: PackedNnunet | None = None

    def _folder(self) -> Any:
        from amoseg.nnunet_models.folder import ModelFolder, resolve_configuration

        where = Path(self.name)
        return ModelFolder(
            path=where,
            dataset=self.dataset,
            plans=self.plans,
            configuration_name=self.configuration,
            configuration=resolve_configuration(self.plans, self.configuration, where),
            checkpoints=dict(self.checkpoints),
        )

    def open_backend(self, options: Any, mirror: bool) -> Any:
        """The same `NnunetBackend` the folder opens (a cascade: with its previous stage's,
        the same options and labels, as `open_nnunet_model` builds it), built from memory."""
        from amoseg.devices import resolve_device
        from amoseg.nnunet_models.backend import NnunetBackend

        device = resolve_device(options.device)
        args = (device, options.precision, options.step_size, mirror, self.labels)
        previous = None
        if self.previous is not None:
            previous = NnunetBackend(self.previous._folder(), *args)
        return NnunetBackend(self._folder(), *args, previous)


def load_fold(data: bytes, name: str) -> Any:
    """One fold's checkpoint from the package's bytes (weights only, the numpy allowlist)."""
    from amoseg.nnunet_models.checkpoint import PackedCheckpoint, load_checkpoint

    return PackedCheckpoint(name, load_checkpoint(Path(name), data))


def packed_member(
    package: Path,
    member: str,
    config: dict[str, Any],
    files: dict[str, dict[str, Any]],
    checkpoints: dict[str, Any],
    previous: dict[str, Any] | None = None,
) -> PackedNnunet:
    """The member read: its files, checkpoints and (a cascade) its previous stage's."""
    labels = config.get("labels")
    amos = {str(k): v for k, v in labels.items()} if isinstance(labels, dict) else None
    stage = None
    if previous is not None:
        stage = PackedNnunet(
            f"{package}!{member}/previous", files["previous/dataset.json"],
            files["previous/plans.json"], str(config["previous"]["configuration"]), previous,
            amos,
        )  # fmt: skip
    return PackedNnunet(
        f"{package}!{member}", files["dataset.json"], files["plans.json"],
        str(config["configuration"]), checkpoints, amos, stage,
    )  # fmt: skip
