"""Openly licensed nnU-Net v2 models amoseg knows how to fetch, with the facts their publishers
state. Nothing here is guessed: URLs and class ids are those in the publishers' own packages
(totalsegmentator 2.18.0: map_tasks_config.py, libs.py, map_to_binary.py; mrsegmentator
2.0.0: config.py and its README's class table); a checksum is given only where the publisher
gives one, sizes are unknown (None) until measured.

`classes` lists, per model class id, the names of the classes that are AMOS organs (the rest of
each model's classes are background for AMOS); they are applied on top of the names in the
model's own dataset.json.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from amoseg.errors import AmosegError
from amoseg.labels import organ_id

_TS_RELEASE = "https://github.com/wasserth/TotalSegmentator/releases/download/v2.0.0-weights"
# totalsegmentator 2.18.0 map_to_binary.py class_map["total"]: the AMOS organs among its ids
_TS_TOTAL = {
    1: "spleen", 2: "kidney_right", 3: "kidney_left", 4: "gallbladder", 5: "liver",
    6: "stomach", 7: "pancreas", 8: "adrenal_gland_right", 9: "adrenal_gland_left",
    15: "esophagus", 19: "duodenum", 21: "urinary_bladder", 22: "prostate", 52: "aorta",
    63: "inferior_vena_cava",
}  # fmt: skip
# ... and class_map_5_parts["class_map_part_organs"] (aorta and IVC are in the cardiac part)
_TS_ORGANS = {k: v for k, v in _TS_TOTAL.items() if k <= 24}
# mrsegmentator 2.0.0 README class table: the AMOS organs among its 40 classes
_MRSEG = {
    1: "spleen", 2: "right_kidney", 3: "left_kidney", 4: "gallbladder", 5: "liver",
    6: "stomach", 7: "pancreas", 8: "right_adrenal_gland", 9: "left_adrenal_gland",
    13: "aorta", 14: "inferior_vena_cava", 20: "esophagus", 22: "duodenum",
    24: "urinary_bladder",
}  # fmt: skip


@dataclass(frozen=True)
class CatalogueModel:
    name: str
    title: str
    modality: str
    spacing_mm: str | None  # None: not stated by the publisher (plans.json has it)
    url: str
    licence: str
    classes: dict[int, str] = field(default_factory=dict)
    sha256: str | None = None  # the publisher's, where one is published
    size_bytes: int | None = None
    note: str = ""

    @property
    def covered(self) -> frozenset[int]:
        """AMOS organ ids the model predicts."""
        return frozenset(i for i in (organ_id(n) for n in self.classes.values()) if i)

    def label_override(self) -> dict[str, int | str]:
        """Model class id (as text) → AMOS id, for `open_nnunet_model(labels=...)`."""
        return {str(k): organ_id(v) or 0 for k, v in self.classes.items()}


CATALOGUE: tuple[CatalogueModel, ...] = (
    CatalogueModel(
        "totalseg-organs-1.5mm",
        "TotalSegmentator v2 'total', part 1 (organs), 1.5 mm",
        "CT",
        "1.5 iso",
        f"{_TS_RELEASE}/Dataset291_TotalSegmentator_part1_organs_1559subj.zip",
        "Apache-2.0",
        _TS_ORGANS,
        note="aorta and IVC are in TotalSegmentator's part 3 (cardiac), not in this model",
    ),
    CatalogueModel(
        "totalseg-total-3mm",
        "TotalSegmentator v2 'total' --fast, 3 mm",
        "CT",
        "3.0 iso",
        f"{_TS_RELEASE}/Dataset297_TotalSegmentator_total_3mm_1559subj.zip",
        "Apache-2.0",
        _TS_TOTAL,
    ),
    CatalogueModel(
        "totalseg-total-6mm",
        "TotalSegmentator v2 'total' --fastest, 6 mm",
        "CT",
        "6.0 iso",
        f"{_TS_RELEASE}/Dataset298_TotalSegmentator_total_6mm_1559subj.zip",
        "Apache-2.0",
        _TS_TOTAL,
    ),
    CatalogueModel(
        "mrsegmentator",
        "MRSegmentator 1.2 (CT and MR, 40 classes)",
        "CT, MR",
        None,
        "https://github.com/hhaentze/MRSegmentator/releases/download/v1.2.0/weights.zip",
        "Apache-2.0",
        _MRSEG,
        sha256="dd26c1b511908a1f2a752b7fe8f5ca9c5603fc3e69fa52f57bf3ccdd52ceb286",
    ),
)


def find_model(name: str) -> CatalogueModel:
    for model in CATALOGUE:
        if model.name == name:
            return model
    names = ", ".join(m.name for m in CATALOGUE)
    raise AmosegError(f"unknown model {name!r}", None, f"`amoseg models` lists them: {names}")
