"""The AMOS22 label set: 16 classes (background + 15 organs) and their names and colours.

AMOS's own dataset.json spells some classes oddly ("gall bladder", "arota"); we keep its
spellings for files we write in AMOS layout and use clean names in tables and figures.
"""

from __future__ import annotations

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

# One distinct RGB colour per class (background transparent in overlays).
CLASS_COLORS: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0),
    (157, 108, 162),
    (185, 102, 83),
    (255, 181, 158),
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

# AMOS case ids >= 500 are MRI; below are CT.
MRI_ID_THRESHOLD = 500


def modality_of(case_id: str) -> str:
    """'ct' or 'mr' from an AMOS case id like 'amos_0507' (ids >= 500 are MRI)."""
    digits = "".join(ch for ch in case_id if ch.isdigit())
    if not digits:
        return "ct"
    return "mr" if int(digits) >= MRI_ID_THRESHOLD else "ct"
