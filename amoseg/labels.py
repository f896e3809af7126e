"""The AMOS22 label set: 16 classes (background + 15 organs) and their names and colours.

AMOS's own dataset.json spells some classes oddly ("gall bladder", "arota"); we keep its
spellings for files we write in AMOS layout and use clean names in tables and figures.
"""

from __future__ import annotations

import re

import numpy as np

NUM_CLASSES = 16

# Clean names for reports, indexed by AMOS label id.
CLASS_NAMES: tuple[str, ...] = (
    "background",
    "spleen",
    "right kidney",
    "left kidney",
    "gallbladder",
    "esophagus",
    "liver",
    "stomach",
    "aorta",
    "postcava (IVC)",
    "pancreas",
    "right adrenal gland",
    "left adrenal gland",
    "duodenum",
    "bladder",
    "prostate/uterus",
)

# Exactly as AMOS22's dataset.json spells them (keys are strings there).
AMOS_DATASET_LABELS: dict[str, str] = {
    "0": "background",
    "1": "spleen",
    "2": "right kidney",
    "3": "left kidney",
    "4": "gall bladder",
    "5": "esophagus",
    "6": "liver",
    "7": "stomach",
    "8": "arota",
    "9": "postcava",
    "10": "pancreas",
    "11": "right adrenal gland",
    "12": "left adrenal gland",
    "13": "duodenum",
    "14": "bladder",
    "15": "prostate/uterus",
}

ORGAN_IDS: tuple[int, ...] = tuple(range(1, NUM_CLASSES))

# One distinct RGB colour per class (background transparent in overlays). The right kidney,
# the liver and the left kidney touch on most axial slices, so they get far-apart colours
# (green, flesh, magenta; CIE76 ΔE ≥ 88 between any two, tests/test_figures.py).
CLASS_COLORS: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0),
    (157, 108, 162),
    (40, 200, 90),
    (225, 70, 220),
    (139, 150, 98),
    (216, 132, 65),
    (221, 130, 101),
    (255, 190, 107),
    (220, 20, 60),
    (0, 151, 206),
    (244, 214, 49),
    (150, 200, 90),
    (84, 180, 130),
    (250, 130, 180),
    (170, 250, 250),
    (110, 90, 200),
)

# AMOS case ids >= 500 are MRI; below are CT (AMOS22's readme). The rule holds only for
# AMOS's own names (amos_0001 ... amos_0600), never for digits in arbitrary file names.
MRI_ID_THRESHOLD = 500
AMOS_CASE_ID = re.compile(r"amos_(\d{4})", re.IGNORECASE)

# Words that name an MR contrast in dataset.json files (nnU-Net channel names: "T2", "ADC").
_MR_WORDS = {"mr", "mri", "t1", "t1w", "t1c", "t1ce", "t1gd", "t2", "t2w", "flair", "adc", "dwi"}


def amos_modality(case_id: str) -> str | None:
    """'ct' or 'mr' for an AMOS-named case ('amos_0507' is MR), None for any other name."""
    match = AMOS_CASE_ID.fullmatch(case_id)
    if match is None:
        return None
    return "mr" if int(match.group(1)) >= MRI_ID_THRESHOLD else "ct"


def modality_of(case_id: str, default: str = "ct") -> str:
    """AMOS's id rule for AMOS-named cases, else `default` (for stores that predate the
    recorded modality). Digits in other names mean nothing: 'ct_v2_001' is not MR."""
    return amos_modality(case_id) or default


def modality_from_name(name: object) -> str | None:
    """'ct' or 'mr' from a modality / channel name as datasets write it ("CT", "MRI",
    "T2", "MR-T1"), None when the name says neither (nnU-Net's "noNorm", "either_CT_or_MR")."""
    if not isinstance(name, str):
        return None
    words = set(re.split(r"[^a-z0-9]+", name.strip().lower())) - {""}
    says_mr = bool(words & _MR_WORDS)
    if "ct" in words and not says_mr:
        return "ct"
    if says_mr and "ct" not in words:
        return "mr"
    return None


# Spellings of the AMOS classes that dataset.json files use, mapped to AMOS ids: AMOS's own
# ("gall bladder", "arota"), the clean names above, and the usual variants in nnU-Net and
# TotalSegmentator-style sets. Keys are normalised by `_name_key`.
_ORGAN_ALIASES: dict[str, int] = {
    "bg": 0,
    "gallbladder": 4,
    "oesophagus": 5,
    "aorta": 8,
    "ivc": 9,
    "inferior vena cava": 9,
    "vena cava inferior": 9,
    "postcava ivc": 9,
    "kidney right": 2,
    "kidney left": 3,
    "right adrenal": 11,
    "left adrenal": 12,
    "adrenal gland right": 11,
    "adrenal gland left": 12,
    "urinary bladder": 14,
    "prostate uterus": 15,
    "prostate or uterus": 15,
    "prostate": 15,
    "uterus": 15,
}


def _name_key(name: str) -> str:
    return " ".join(re.split(r"[\s_\-/()]+", name.strip().lower())).strip()


def organ_id(name: str) -> int | None:
    """The AMOS id a class name means (any spelling in `_ORGAN_ALIASES`), or None."""
    return _ORGAN_IDS_BY_NAME.get(_name_key(name))


_ORGAN_IDS_BY_NAME: dict[str, int] = {
    **{_name_key(n): int(i) for i, n in AMOS_DATASET_LABELS.items()},
    **{_name_key(n): i for i, n in enumerate(CLASS_NAMES)},
    **{_name_key(n): i for n, i in _ORGAN_ALIASES.items()},
}

#: Organs that exist as a right/left pair: mirroring an image along the patient's left–right
#: axis turns one into the other, so a mirrored label map must swap their ids.
LEFT_RIGHT_PAIRS: tuple[tuple[int, int], ...] = ((2, 3), (11, 12))


def left_right_permutation(num_classes: int = NUM_CLASSES) -> tuple[int, ...]:
    """perm[c] = the class that c becomes under a left–right mirror (an involution)."""
    perm = list(range(num_classes))
    for right, left in LEFT_RIGHT_PAIRS:
        if max(right, left) < num_classes:
            perm[right], perm[left] = left, right
    return tuple(perm)


def truncated_organs(labels: np.ndarray) -> set[int]:
    """Organ ids with a voxel on a face of the array: the scan's edge cuts them, so their
    volume is a lower bound (flagged in volumes.csv/json, the viewer and DICOM-SEG). The
    faces are the same in any axis order, so a file-order array is checked as it is."""
    labels = np.asarray(labels)
    faces = [
        np.take(labels, index, axis=axis).ravel()
        for axis in range(labels.ndim)
        for index in (0, -1)
        if labels.shape[axis] > 0
    ]
    found = np.unique(np.concatenate(faces)) if faces else np.empty(0, dtype=labels.dtype)
    return {int(v) for v in found if int(v) in ORGAN_IDS}
