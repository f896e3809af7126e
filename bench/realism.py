"""Do the phantoms look like the real samples? Per-organ intensities and class shares, per modality.

Generates a few demo-preset phantoms per modality (CT plain, CT `--hard`, MR) — or reads an
existing synthetic folder with `--data` — and prints, per organ, the median and 5th-95th
percentile intensity and the voxel share of every class, beside the same figures for every
real labelled sample beside the checkout (`../shared/realdata`: two real AMOS CT slabs with
manual labels, the full real amos_0013 label for class shares, the example CT with model-made
labels). No real MR scan is available here, so MR phantoms are shown relative to their own
liver (MR has no absolute scale) with nothing real beside them.

    nice -n 10 python bench/realism.py              # 6 phantoms per modality
    nice -n 10 python bench/realism.py --cases 10
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
REALDATA = REPO.parent / "shared" / "realdata"

REAL_CT = (
    ("amos_0001", "amos_mini/imagesTr/amos_0001.nii.gz", "amos_mini/labelsTr/amos_0001.nii.gz"),
    ("amos_0013", "amos_mini/imagesVa/amos_0013.nii.gz", "amos_mini/labelsVa/amos_0013.nii.gz"),
    ("example_ct*", "example_ct/ct.nii.gz", "example_ct/labels_amos_model.nii.gz"),
)


def pooled(
    pairs: list[tuple[Path | None, Path]], relative: bool = False
) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """Intensities inside each class (sub-sampled) and class voxel counts over the pairs;
    `relative` divides each scan by its own liver median first (MR: no absolute scale)."""
    from amoseg.labels import NUM_CLASSES

    values: dict[int, list[np.ndarray]] = {k: [] for k in range(NUM_CLASSES)}
    counts = np.zeros(NUM_CLASSES, np.int64)
    rng = np.random.default_rng(0)
    for image, label in pairs:
        lab = np.asarray(nib.load(label).dataobj).astype(np.int64)
        counts += np.bincount(lab.ravel(), minlength=NUM_CLASSES)[:NUM_CLASSES]
        if image is None:
            continue
        img = np.asarray(nib.load(image).dataobj).astype(np.float32)
        if relative:
            img /= max(float(np.median(img[lab == 6])) if (lab == 6).any() else 1.0, 1e-6)
        for k in range(1, NUM_CLASSES):
            v = img[lab == k]
            if len(v) > 20_000:
                v = rng.choice(v, 20_000, replace=False)
            values[k].append(v)
    return {k: np.concatenate(v) for k, v in values.items() if v}, counts


def phantom_pairs(root: Path, modality: str | None = None) -> list[tuple[Path, Path]]:
    from amoseg.atomic import read_json

    meta = read_json(root / "dataset.json")
    entries = [e for split in ("training", "validation", "test") for e in meta[split]]
    return [
        (root / e["image"], root / e["label"])
        for e in entries
        if modality is None or e.get("modality", "CT").upper().startswith(modality)
    ]


def stat(v: np.ndarray | None, relative: bool = False) -> str:
    if v is None or not len(v):
        return "—"
    lo, med, hi = np.percentile(v, [5, 50, 95])
    if relative:
        return f"{med:.2f} [{lo:.2f}, {hi:.2f}]"
    return f"{med:.0f} [{lo:.0f}, {hi:.0f}]"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=6)
    p.add_argument("--data", type=Path, default=None, help="an existing synthetic CT folder")
    p.add_argument("--work", type=Path, default=None)
    args = p.parse_args()

    from amoseg.atomic import read_json
    from amoseg.data.synth import generate_dataset
    from amoseg.labels import CLASS_NAMES, NUM_CLASSES

    work = args.work or Path(tempfile.mkdtemp(prefix="amoseg-realism-"))
    sets: dict[str, list] = {}
    ct = args.data or generate_dataset(work / "ct", args.cases, 0, progress=False, workers=2)
    sets["CT phantoms"] = phantom_pairs(ct, "CT")
    hard = generate_dataset(work / "hard", args.cases, 0, progress=False, hard=True, workers=2)
    sets["CT --hard"] = phantom_pairs(hard)
    mr = generate_dataset(work / "mr", args.cases, 0, progress=False, modality="mr", workers=2)
    sets["MR phantoms"] = phantom_pairs(mr)
    sequences = {
        f"amos_{k[5:]}": v["sequence"]
        for k, v in read_json(mr / "dataset.json")["amoseg_synth"]["cases"].items()
    }
    for pair in sets["MR phantoms"]:
        seq = sequences[pair[0].name[:9]]
        sets.setdefault(f"MR {seq}", []).append(pair)
    real = {}
    if REALDATA.exists():
        for name, image, label in REAL_CT:
            real[name] = [(REALDATA / image, REALDATA / label)]
        real["amos_0013 full label"] = [(None, REALDATA / "amos_0013_full_label.nii.gz")]
    else:
        print(f"no real samples at {REALDATA}: phantoms only", file=sys.stderr)
    stats = {name: pooled(pairs, name.startswith("MR")) for name, pairs in {**sets, **real}.items()}

    ct_cols = ["CT phantoms", "CT --hard"] + [n for n in real if n != "amos_0013 full label"]
    print("\nCT: median [5th, 95th percentile] HU inside each organ (* = model-made labels)\n")
    print("| organ | " + " | ".join(ct_cols) + " |")
    print("|---|" + "---:|" * len(ct_cols))
    for k in range(1, NUM_CLASSES):
        cells = [stat(stats[c][0].get(k)) for c in ct_cols]
        print(f"| {CLASS_NAMES[k]} | " + " | ".join(cells) + " |")

    mr_cols = sorted(c for c in sets if c.startswith("MR t"))
    print("\nMR phantoms per sequence: intensity relative to each scan's own liver median,")
    print("median [5th, 95th] (MR has no absolute scale); no real MR sample to compare\n")
    print("| organ | " + " | ".join(f"{c} ({len(sets[c])})" for c in mr_cols) + " |")
    print("|---|" + "---:|" * len(mr_cols))
    for k in range(1, NUM_CLASSES):
        cells = []
        for c in mr_cols:
            cells.append(stat(stats[c][0].get(k), relative=True))
        print(f"| {CLASS_NAMES[k]} | " + " | ".join(cells) + " |")

    share_cols = ["CT phantoms", "MR phantoms", *real]
    print("\nClass voxel share (% of all voxels of the scans)\n")
    print("| class | " + " | ".join(share_cols) + " |")
    print("|---|" + "---:|" * len(share_cols))
    for k in range(NUM_CLASSES):
        cells = []
        for c in share_cols:
            counts = stats[c][1]
            cells.append(f"{100 * counts[k] / max(1, counts.sum()):.3f}")
        print(f"| {CLASS_NAMES[k]} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
