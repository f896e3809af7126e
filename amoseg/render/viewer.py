"""One self-contained HTML viewer per segmented scan: axial, coronal and sagittal slices with
the label overlay, per-organ toggles, opacity, window/level presets, zoom, a crosshair that
follows a click, orientation markers and the organ table (organs cut by the scan's edge
flagged); offline, no server.

A small canvas viewer (`viewer.html`, ~300 lines) rather than NiiVue: NiiVue draws with
WebGL2, which headless or GPU-less browsers only emulate, and its npm build is ES modules
with seven dependencies that would need a bundler. Volumes are reoriented to RAS+, reduced
by whole-voxel strides to at most `MAX_VOXELS` (nearest voxel, so labels stay exact ids),
gzip-compressed, base64-encoded and unpacked by the browser's own `DecompressionStream`.
The image travels as 16-bit codes (true HU for CT), so the page can re-window it.
"""

from __future__ import annotations

import base64
import gzip
import html
import json
import math
from importlib import resources
from pathlib import Path

import nibabel as nib
import numpy as np

from amoseg.atomic import write_text
from amoseg.errors import AmosegError
from amoseg.labels import CLASS_COLORS, truncated_organs
from amoseg.preprocessing.geometry import canonical_spacing, to_canonical

#: voxels kept per volume: a 512×512×100 CT is shown at 256×256×100 (a few MB of HTML).
MAX_VOXELS = 8_000_000
#: CT window/level presets (HU), the first is the one the page opens with.
CT_PRESETS: tuple[tuple[str, float, float], ...] = (
    ("abdomen", 400.0, 40.0),
    ("liver", 150.0, 60.0),
    ("bone", 1800.0, 400.0),
    ("lung", 1500.0, -600.0),
)
#: MR has no absolute scale: presets span these percentiles of the scan's own intensities.
MR_PERCENTILES: tuple[tuple[str, float, float], ...] = (
    ("auto (1–99 %)", 1.0, 99.0),
    ("auto wide (0.1–99.9 %)", 0.1, 99.9),
)
#: the grey image travels as 16-bit codes: value = offset + scale × code.
CODES = 65535

#: how far (in voxels) the corners of two grids may disagree and still be one grid: float32
#: NIfTI headers and DICOM positions round at ~1e-5 mm, far below a twentieth of a voxel.
GRID_TOLERANCE = 0.05


def image_on_label_grid(
    image: np.ndarray,
    image_affine: np.ndarray,
    labels_shape: tuple[int, ...],
    labels_affine: np.ndarray,
    path: str | Path,
) -> np.ndarray:
    """The image's voxels indexed like the label map's (label voxel i shows image voxel i).

    Shapes alone prove nothing: a scan stored mirrored or with its axes swapped has the same
    shape, so its affine decides. The same voxel grid stored in another axis order or
    direction is reindexed exactly; any other grid (shifted, mirrored in space, resampled)
    is refused, so labels are never drawn over, nor averaged from, other voxels.
    """
    hint = "pass the scan this label map was made from"
    if sorted(image.shape) != sorted(labels_shape):
        raise AmosegError(
            f"label map {tuple(labels_shape)} and image {image.shape} differ in shape", path, hint
        )
    if abs(np.linalg.det(np.asarray(image_affine, float)[:3, :3])) < 1e-12:
        raise AmosegError("the image's affine is singular (no voxel geometry)", path, hint)
    to_image = np.linalg.inv(image_affine) @ np.asarray(labels_affine, float)
    signs = np.rint(to_image[:3, :3])
    corners = np.array(np.meshgrid(*[(0, n - 1) for n in labels_shape], indexing="ij"))
    corners = corners.reshape(3, -1).astype(float)
    exact = to_image[:3, :3] @ corners + to_image[:3, 3:]
    snapped = signs @ corners + np.rint(to_image[:3, 3:])
    is_permutation = (np.abs(signs).sum(axis=0) == 1).all() and (
        np.abs(signs).sum(axis=1) == 1
    ).all()
    upper = np.asarray(image.shape, float)[:, None] - 1
    if (
        not is_permutation
        or np.abs(exact - snapped).max() > GRID_TOLERANCE
        or (snapped < 0).any()
        or (snapped > upper).any()
    ):
        raise AmosegError(
            "label map and image lie on different voxel grids (their affines differ: "
            "shifted, mirrored or resampled)",
            path,
            hint + ", or resample one onto the other first",
        )
    order = [int(np.flatnonzero(signs[:, i])[0]) for i in range(3)]  # image axis of label axis i
    aligned = np.transpose(image, order)
    flips = tuple(i for i in range(3) if signs[order[i], i] < 0)
    return np.flip(aligned, axis=flips) if flips else aligned


def display_strides(shape: tuple[int, ...], max_voxels: int = MAX_VOXELS) -> tuple[int, ...]:
    """Whole-voxel strides per axis (in-plane first, then across slices) so the volume fits."""
    strides = [1, 1, 1]
    while math.prod(math.ceil(n / s) for n, s in zip(shape, strides, strict=True)) > max_voxels:
        axis = 0 if strides[0] <= strides[2] or shape[2] // strides[2] < 64 else 2
        if axis == 0:
            strides[0] += 1
            strides[1] += 1
        else:
            strides[2] += 1
    return tuple(strides)


def window_presets(image: np.ndarray, modality: str) -> list[dict]:
    """Window/level presets: the usual CT windows in HU; for MR, percentile windows of this
    scan (its intensities have no absolute scale)."""
    if modality == "ct":
        return [{"name": n, "width": w, "level": lv} for n, w, lv in CT_PRESETS]
    presets = []
    for name, low, high in MR_PERCENTILES:
        lo, hi = (float(v) for v in np.percentile(image, (low, high)))
        width = max(hi - lo, 1e-6)
        presets.append({"name": name, "width": round(width, 3), "level": round(lo + width / 2, 3)})
    return presets


def image_codes(image: np.ndarray) -> tuple[np.ndarray, float, float]:
    """16-bit codes of the image, with (offset, scale) such that value ≈ offset + scale × code.

    Integer scans (CT HU, most MR) within 65,536 levels keep every value exactly, so any
    window the user picks in the page shows true HU; float scans are quantised to 1/65,535
    of their range.
    """
    lo, hi = float(image.min()), float(image.max())
    if np.issubdtype(image.dtype, np.integer) and hi - lo <= CODES:
        scale = 1.0
    else:
        scale = (hi - lo) / CODES if hi > lo else 1.0
    codes = np.rint((image.astype(np.float64) - lo) / scale).astype(np.uint16)
    return codes, lo, scale


def _packed(volume: np.ndarray) -> str:
    """(X, Y, Z) uint8 or uint16 → base64 of gzip of its bytes in (Z, Y, X) C order (x
    fastest); 16-bit values as two planes, all high bytes then all low bytes (the high bytes
    of a scan barely vary, so that plane compresses to almost nothing)."""
    ordered = np.ascontiguousarray(volume.transpose(2, 1, 0))
    if ordered.dtype == np.uint16:
        raw = (ordered >> 8).astype(np.uint8).tobytes() + (ordered & 255).astype(np.uint8).tobytes()
    else:
        raw = ordered.tobytes()
    return base64.b64encode(gzip.compress(raw, compresslevel=6, mtime=0)).decode("ascii")


def viewer_html(
    labels: np.ndarray,
    affine: np.ndarray,
    organs: list[dict],
    image: np.ndarray | None = None,
    *,
    title: str = "amoseg",
    modality: str = "ct",
    note: str = "",
) -> str:
    """The HTML page for one scan; `labels` and `image` are (X, Y, Z) in file order."""
    canon_labels = to_canonical(np.asarray(labels, dtype=np.uint8), affine)
    zooms = canonical_spacing(tuple(nib.affines.voxel_sizes(affine)), affine)
    strides = display_strides(canon_labels.shape)
    pick = tuple(slice(None, None, s) for s in strides)
    shown_labels = canon_labels[pick]
    shape = shown_labels.shape
    spacing = [round(float(z) * s, 4) for z, s in zip(zooms, strides, strict=True)]
    start = _start_slices(shown_labels)
    reduced = strides != (1, 1, 1)
    info = f"{labels.shape[0]}×{labels.shape[1]}×{labels.shape[2]} voxels"
    if reduced:
        info += f", shown at {shape[0]}×{shape[1]}×{shape[2]}"
    cut = truncated_organs(np.asarray(labels))
    data = {
        "shape": list(shape),
        "spacing": spacing,
        "start": start,
        "colors": [list(c) for c in CLASS_COLORS],
        "organs": [{**row, "truncated": row["label"] in cut} for row in organs],
        "labels": _packed(shown_labels),
        "image": None,
        "modality": modality,
        "info": info,
        "note": note,
    }
    if image is not None:
        shown_image = to_canonical(np.asarray(image), affine)[pick]
        codes, offset, scale = image_codes(shown_image)
        data.update(
            image=_packed(codes),
            codes={"offset": offset, "scale": scale},
            presets=window_presets(shown_image, modality),
        )
    # "</" inside a <script> block would end it early; JSON allows the escaped form.
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    template = resources.files("amoseg.render").joinpath("viewer.html").read_text("utf-8")
    return template.replace("__TITLE__", html.escape(title)).replace("__DATA__", payload)


def _start_slices(labels: np.ndarray) -> dict[str, int]:
    """Open each view at the slice through the organs' centre (the volume's centre if none)."""
    found = np.nonzero(labels)
    if found[0].size:
        x, y, z = (int(np.median(axis)) for axis in found)
    else:
        x, y, z = (n // 2 for n in labels.shape)
    return {"axial": z, "coronal": y, "sagittal": x}


def write_viewer(
    target: str | Path,
    labels: np.ndarray,
    affine: np.ndarray,
    organs: list[dict],
    image: np.ndarray | None = None,
    **options: str,
) -> Path:
    """Write the viewer page atomically → its path."""
    target = Path(target)
    write_text(target, viewer_html(labels, affine, organs, image, **options))
    return target
