"""The nnU-Net v2 raw dataset layout, so a user's existing nnU-Net datasets work unchanged.

    DatasetNNN_Name/imagesTr/<case>_0000.nii.gz   one file per input channel (_0000, _0001, ...)
    DatasetNNN_Name/labelsTr/<case>.nii.gz
    DatasetNNN_Name/dataset.json   {"channel_names": {"0": "CT"}, "labels": {"background": 0,
                                    "spleen": 1, ...}, "numTraining": N, "file_ending": ".nii.gz"}

Older nnU-Net v2 versions write "modality" instead of "channel_names"; an optional "dataset"
key lists each case's files explicitly ({case: {"images": [...], "label": ...}}, relative to
the dataset folder). amoseg segments single-channel NIfTI scans, so several channels or
another file format are refused with one line. imagesTs holds no labels and is not read.
"""

from __future__ import annotations

import re
from pathlib import Path

from amoseg.data.amos import CaseEntry, Listing
from amoseg.data.nifti import NIFTI_SUFFIXES
from amoseg.errors import AmosegError

CHANNEL_SUFFIX = re.compile(r"_(\d{4})$")  # nnU-Net: <case>_XXXX<file_ending>
NNUNET_KEYS = ("channel_names", "file_ending")


def is_nnunet(spec: dict | None) -> bool:
    """An nnU-Net v2 dataset.json: it names channels or a file ending and has no AMOS lists."""
    return (
        spec is not None
        and any(key in spec for key in NNUNET_KEYS)
        and not any(isinstance(spec.get(key), list) for key in ("training", "validation"))
    )


def read_nnunet_listing(root: Path, spec: dict, listing: Path) -> Listing:
    """The labelled training cases of an nnU-Net raw dataset folder."""
    ending = _file_ending(spec, listing)
    channel = _single_channel_name(spec, listing)
    if "dataset" in spec:
        entries = _from_dataset_key(root, spec["dataset"], listing)
    else:
        entries = _from_images_tr(root, ending, listing)
    expected = spec.get("numTraining")
    if isinstance(expected, int) and not isinstance(expected, bool) and expected != len(entries):
        raise AmosegError(
            f"dataset.json says numTraining {expected}, but the folder holds "
            f"{len(entries)} training case(s)",
            listing,
            "a copy may be incomplete; fix the files or numTraining",
        )
    return Listing("nnunet", listing, entries, channel, spec.get("labels"))


def _file_ending(spec: dict, listing: Path) -> str:
    ending = spec.get("file_ending", ".nii.gz")
    if not isinstance(ending, str) or ending.lower() not in NIFTI_SUFFIXES:
        shown = ending if isinstance(ending, str) and len(ending) < 40 else type(ending).__name__
        raise AmosegError(
            f"dataset.json file_ending {shown!r} is not NIfTI",
            listing,
            "amoseg reads .nii.gz / .nii scans; convert the dataset to NIfTI",
        )
    return ending


def _single_channel_name(spec: dict, listing: Path) -> object:
    """The one channel's name ("CT", "T2", ...); several channels are refused."""
    channels = spec.get("channel_names", spec.get("modality"))
    if channels is None:
        return None
    if not isinstance(channels, dict) or not channels:
        raise AmosegError('dataset.json channel_names is not a mapping like {"0": "CT"}', listing)
    if len(channels) > 1:
        raise AmosegError(
            f"dataset.json names {len(channels)} input channels",
            listing,
            "amoseg segments single-channel scans (one _0000 file per case)",
        )
    return next(iter(channels.values()))


def _from_images_tr(root: Path, ending: str, listing: Path) -> list[CaseEntry]:
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    if not images_dir.is_dir():
        raise AmosegError("nnU-Net dataset has no imagesTr folder", root)
    entries = []
    for path in sorted(images_dir.iterdir()):
        name = path.name
        if name.startswith(".") or not name.endswith(ending) or not path.is_file():
            continue
        match = CHANNEL_SUFFIX.search(name[: -len(ending)])
        if match is None:
            raise AmosegError(
                "image file does not follow nnU-Net's <case>_0000 naming",
                path,
                f"name images <case>_0000{ending} and labels labelsTr/<case>{ending}",
            )
        if match.group(1) != "0000":
            raise AmosegError(
                f"image file is input channel {int(match.group(1))}",
                path,
                "amoseg segments single-channel scans (one _0000 file per case)",
            )
        case_id = name[: -len(ending)][: match.start()]
        label = labels_dir / f"{case_id}{ending}"
        if not label.exists():
            raise AmosegError(
                f"no label for case {case_id} in labelsTr",
                label,
                "every nnU-Net training image needs labelsTr/<case> with the same file ending",
            )
        written = (f"imagesTr/{name}", f"labelsTr/{label.name}")
        entries.append(CaseEntry(case_id, path, label, None, *written))
    return entries


def _from_dataset_key(root: Path, dataset: object, listing: Path) -> list[CaseEntry]:
    """nnU-Net's explicit listing: {case: {"images": [path], "label": path}}."""
    if not isinstance(dataset, dict):
        raise AmosegError("dataset.json 'dataset' is not a mapping of case ids", listing)
    entries = []
    for case_id, files in dataset.items():
        images = files.get("images") if isinstance(files, dict) else None
        label = files.get("label") if isinstance(files, dict) else None
        if not (
            isinstance(images, list)
            and images
            and all(isinstance(p, str) for p in images)
            and isinstance(label, str)
        ):
            raise AmosegError(
                f"dataset.json 'dataset' entry {str(case_id)[:40]!r} lacks 'images' or 'label'",
                listing,
                'entries look like {"case": {"images": ["imagesTr/case_0000.nii.gz"], '
                '"label": "labelsTr/case.nii.gz"}}',
            )
        if len(images) != 1:
            raise AmosegError(
                f"case {str(case_id)[:40]!r} has {len(images)} input channels",
                listing,
                "amoseg segments single-channel scans",
            )
        for written in (images[0], label):
            if "\x00" in written or not written.lower().endswith(NIFTI_SUFFIXES):
                raise AmosegError(
                    f"dataset.json 'dataset' entry {str(case_id)[:40]!r}: "
                    f"{written[:60]!r} is not a .nii/.nii.gz path",
                    listing,
                )
        entries.append(CaseEntry(case_id, root / images[0], root / label, None, images[0], label))
    return entries
