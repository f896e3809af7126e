"""One preprocessor for prepare, training, evaluate and predict: orient → crop → resample, with
a JSON-able record of what it did and an exact inverse.

API (stable; other stages build on it)::

    pre = Preprocessor(size=640)                        # the report's S×S slices ("seed")
    pre = Preprocessor(spacing=(0.8, 0.8, None), crop_threshold=-500)   # planned "2d"
    out = pre.forward(image, affine, label)             # file-order (X, Y, Z) numpy or tensor
    out.image, out.label                                # (Z', X', Y') RAS+ z-first tensors
    out.record                                          # PreprocessRecord; .to_dict() → JSON
    probs = pre.invert(scores, out.record)              # (C, Z', X', Y') → (C, X, Y, Z) file order
    labels = pre.invert_labels(scores, out.record)      # resample scores, then arg-max → uint8
    x = Normalisation.from_dict(...).apply(batch, out.record)   # on the device, at train/predict

Steps. Orient: permute/flip to RAS+. Crop (CT only, `crop_threshold` set): the body's in-plane
box (largest connected region above the threshold in the axial maximum projection, plus a
margin; `amoseg.preprocessing.crop.body_box`); z is kept whole. Resample: `size` resizes each axial
slice to size×size and leaves z alone (bit-for-bit the slices `prepare` has always stored);
`spacing` resamples each axis with a target to round(extent / target) voxels (z linear, in-plane
bilinear, antialiased when shrinking). Integer images are rounded to int16 values; float images
keep float32. Normalisation is *not* applied to what is stored: the store keeps raw values and
`Normalisation.apply` runs on the device.

Inverse: z first (linear on scores, or nearest when the stored grid is at least as fine), then
in-plane (bilinear on scores when the scan is finer, nearest otherwise; nearest on scores then
arg-max equals arg-max then nearest, and skips resizing C channels), the crop's outside is
background, then back to the file's axis order. Each resize is the align_corners=False inverse
of the forward one, so every voxel centre maps back onto itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch

from amoseg.preprocessing.crop import body_box
from amoseg.preprocessing.orient import (
    as_tensor,
    canonical_affine,
    canonical_spacing,
    from_canonical_tensor,
    to_canonical_tensor,
)
from amoseg.preprocessing.resample import (
    nearest_z,
    resize_inplane,
    resize_z,
    resized_argmax,
    round_int16,
    z_weights,
)

#: planes resized at once: bounds the float32 working set of a 512² or 640² slab.
CHUNK = 16
#: body-crop margin (voxels of the scan's grid) around the body's box.
CROP_MARGIN = 4
#: voxels a preprocessed volume may have (4 GiB as float32; a whole-body CT at 0.5 mm is
#: ~0.5 G): a spacing typo in plan.json (0.008 for 0.8 mm) is refused before allocating
#: what would be tens of GB, not after.
MAX_RESAMPLED_VOXELS = 1 << 30

Pair = tuple[int, int]
Triple = tuple[float, float, float]


@dataclass(frozen=True)
class PreprocessRecord:
    """What `Preprocessor.forward` did to one scan; enough to undo it exactly."""

    original_shape: tuple[int, int, int]  # file order
    affine: tuple[tuple[float, ...], ...]  # the file's affine (4×4)
    canonical_shape: tuple[int, int, int]  # RAS+ (X, Y, Z)
    canonical_spacing: Triple  # mm, RAS+ axes
    crop: tuple[Pair, Pair, Pair]  # [start, stop) per RAS+ axis on the canonical grid
    shape: tuple[int, int, int]  # preprocessed (X', Y', Z'); arrays are (Z', X', Y')
    spacing: Triple  # mm of the preprocessed grid (extent / voxels; mean for kept planes)
    integer: bool  # rounded to int16 values (integer source) or float32
    kept_slices: tuple[int, ...] | None = None  # z planes kept (of the cropped grid), or all
    intensity: dict[str, float] = field(default_factory=dict)  # mean/std of the stored image

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in out.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessRecord:
        def pairs(v: Any) -> tuple[Pair, Pair, Pair]:
            return tuple((int(a), int(b)) for a, b in v)  # type: ignore[return-value]

        kept = data.get("kept_slices")
        return cls(
            original_shape=tuple(int(n) for n in data["original_shape"]),  # type: ignore[arg-type]
            affine=tuple(tuple(float(v) for v in row) for row in data["affine"]),
            canonical_shape=tuple(int(n) for n in data["canonical_shape"]),  # type: ignore[arg-type]
            canonical_spacing=tuple(float(s) for s in data["canonical_spacing"]),  # type: ignore[arg-type]
            crop=pairs(data["crop"]),
            shape=tuple(int(n) for n in data["shape"]),  # type: ignore[arg-type]
            spacing=tuple(float(s) for s in data["spacing"]),  # type: ignore[arg-type]
            integer=bool(data["integer"]),
            kept_slices=None if kept is None else tuple(int(k) for k in kept),
            intensity={k: float(v) for k, v in data.get("intensity", {}).items()},
        )

    @property
    def crop_shape(self) -> tuple[int, int, int]:
        return tuple(b - a for a, b in self.crop)  # type: ignore[return-value]

    def grid_affine(self) -> np.ndarray:
        """Affine of the preprocessed (X', Y', Z') RAS+ grid (voxel centres, align_corners=False).

        Not defined for a store that kept only some planes (`kept_slices`)."""
        if self.kept_slices is not None:
            raise ValueError("a store of kept planes has no regular z grid")
        base = canonical_affine(np.asarray(self.affine), self.original_shape)
        scale = np.array([c / n for c, n in zip(self.crop_shape, self.shape, strict=True)])
        start = np.array([a for a, _ in self.crop], dtype=np.float64)
        index = np.eye(4)
        index[:3, :3] = np.diag(scale)
        index[:3, 3] = start + 0.5 * scale - 0.5
        return base @ index


@dataclass
class Preprocessed:
    image: torch.Tensor  # (Z', X', Y') float32 (int16 values when record.integer)
    label: torch.Tensor | None  # (Z', X', Y') uint8
    record: PreprocessRecord


@dataclass(frozen=True)
class Preprocessor:
    """Orient → crop → resample for one plan configuration (see the module docstring).

    size: fixed in-plane size S (the `seed` configuration); z is never resampled.
    spacing: target mm per RAS+ axis (None keeps that axis); mutually exclusive with size.
    crop_threshold: body crop for CT (voxels above it are body); None = no crop.
    """

    size: int | None = None
    spacing: tuple[float | None, float | None, float | None] | None = None
    crop_threshold: float | None = None

    def __post_init__(self) -> None:
        if (self.size is None) == (self.spacing is None):
            raise ValueError("give exactly one of size (S×S slices) or spacing (mm)")

    # -- forward -----------------------------------------------------------------------------

    def canonical(self, data: np.ndarray | torch.Tensor, affine: np.ndarray) -> torch.Tensor:
        """File-order voxels → RAS+ (X, Y, Z) tensor on the same device."""
        t = as_tensor(data) if isinstance(data, np.ndarray) else data
        return to_canonical_tensor(t, np.asarray(affine, dtype=np.float64))

    def plan_record(
        self,
        image: torch.Tensor,
        affine: np.ndarray,
        original_shape: Sequence[int],
        *,
        kept_slices: Sequence[int] | None = None,
        zooms: Sequence[float] | None = None,
    ) -> PreprocessRecord:
        """Decide crop and target grid for a RAS+ `image` (from `canonical`).

        `kept_slices` (canonical z planes; only with `size`, which never resamples z) keeps
        just those planes, as the seed store's `--keep organ` does. `zooms` are the header's
        voxel sizes in file order (default: the affine's column norms).
        """
        affine = np.asarray(affine, dtype=np.float64)
        if zooms is None:
            zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
        spacing_in = canonical_spacing(tuple(float(z) for z in zooms), affine)
        shape_in = tuple(int(n) for n in image.shape)
        crop = [(0, n) for n in shape_in]
        if self.crop_threshold is not None:
            box = body_box(image.permute(2, 0, 1), self.crop_threshold, multiple=1)
            if box is not None:
                crop[0], crop[1] = (box[0].start, box[0].stop), (box[1].start, box[1].stop)
        cropped = [b - a for a, b in crop]
        if self.size is not None:
            shape = (self.size, self.size, cropped[2])
        else:
            shape = tuple(
                n if t is None else max(1, round(n * s / float(t)))
                for n, s, t in zip(cropped, spacing_in, self.spacing, strict=True)
            )
        if self.spacing is not None:  # S×S keeps the scan's own planes: bounded by MAX_SIZE
            check_resampled_size(shape, spacing_in, self.spacing)
        if kept_slices is not None:
            if shape[2] != cropped[2]:
                raise ValueError("kept_slices needs a configuration that keeps z as it is")
            kept_slices = tuple(int(k) for k in kept_slices)
            shape = (shape[0], shape[1], len(kept_slices))
            n_z = cropped[2]
        else:
            n_z = shape[2]
        spacing = tuple(
            float(s * c / n) if n else float(s)
            for s, c, n in zip(spacing_in, cropped, (shape[0], shape[1], n_z), strict=True)
        )
        return PreprocessRecord(
            original_shape=tuple(int(n) for n in original_shape),  # type: ignore[arg-type]
            affine=tuple(tuple(float(v) for v in row) for row in affine),
            canonical_shape=shape_in,  # type: ignore[arg-type]
            canonical_spacing=spacing_in,
            crop=tuple(crop),  # type: ignore[arg-type]
            shape=tuple(int(n) for n in shape),  # type: ignore[arg-type]
            spacing=spacing,  # type: ignore[arg-type]
            integer=not torch.is_floating_point(image),
            kept_slices=kept_slices,
        )

    def slabs(
        self, volume: torch.Tensor, record: PreprocessRecord, *, label: bool, chunk: int = CHUNK
    ) -> Iterator[torch.Tensor]:
        """The preprocessed (k, X', Y') planes of a RAS+ `volume`, `chunk` planes at a time
        (all at once when z is resampled), so a caller can stream them to disk."""
        (x0, x1), (y0, y1), (z0, z1) = record.crop
        box = volume[x0:x1, y0:y1, z0:z1]
        planes = (
            torch.as_tensor(record.kept_slices, dtype=torch.long)
            if record.kept_slices is not None
            else torch.arange(z1 - z0)
        )
        target = record.shape[:2]
        z_resampled = record.kept_slices is None and record.shape[2] != z1 - z0
        done: list[torch.Tensor] = []
        for start in range(0, len(planes), chunk):
            idx = planes[start : start + chunk].to(box.device)
            # gathered planes are contiguous (k, X, Y) in the file's dtype, as prepare has
            # always resized them: same input layout, same floats out
            gathered = box.index_select(2, idx).permute(2, 0, 1).contiguous()
            out = resize_inplane(gathered, target, label=label)
            if not label and record.integer and not z_resampled:
                round_int16(out)
            if z_resampled:
                done.append(out)
            else:
                yield out
        if z_resampled:
            stack = torch.cat(done) if done else box.new_zeros((0, *target))
            out = resize_z(stack, record.shape[2], label=label)
            if not label and record.integer:
                round_int16(out)
            yield out

    def forward(
        self,
        image: np.ndarray | torch.Tensor,
        affine: np.ndarray,
        label: np.ndarray | torch.Tensor | None = None,
        *,
        kept_slices: Sequence[int] | None = None,
    ) -> Preprocessed:
        """File-order (X, Y, Z) image (and label) → preprocessed (Z', X', Y') tensors + record."""
        shape = tuple(int(n) for n in image.shape)
        volume = self.canonical(image, affine)
        record = self.plan_record(volume, affine, shape, kept_slices=kept_slices)
        img = torch.cat(list(self.slabs(volume, record, label=False)))
        lab = None
        if label is not None:
            canon = self.canonical(label, affine)
            lab = torch.cat(list(self.slabs(canon, record, label=True)))
        record = with_intensity(record, img)
        return Preprocessed(img, lab, record)

    # -- inverse -----------------------------------------------------------------------------

    def invert(self, scores: torch.Tensor, record: PreprocessRecord) -> torch.Tensor:
        """(C, Z', X', Y') scores or probabilities → (C, X, Y, Z) float32 in the file's order.

        Outside the crop (and in planes a seed store did not keep) class 0 gets 1 and the
        others 0, so an arg-max calls it background.
        """
        (x0, x1), (y0, y1), (z0, z1) = record.crop
        cx, cy, _cz = record.crop_shape
        z_full = _z_to_crop(scores.float(), record, label=False)
        inplane = resize_inplane(z_full, (cx, cy), label=False)  # (C, cz, cx, cy)
        n_c = scores.shape[0]
        out = scores.new_zeros((n_c, *record.canonical_shape), dtype=torch.float32)
        out[0] = 1.0
        out[:, x0:x1, y0:y1, z0:z1] = inplane.permute(0, 2, 3, 1)
        if record.kept_slices is not None:
            missing = _missing_planes(record, scores.device)
            out[:, x0:x1, y0:y1, z0 + missing] = 0.0
            out[0, x0:x1, y0:y1, z0 + missing] = 1.0
        return from_canonical_tensor(out, np.asarray(record.affine)).contiguous()

    def invert_labels(
        self, scores: torch.Tensor, record: PreprocessRecord, chunk: int = CHUNK
    ) -> torch.Tensor:
        """(C, Z', X', Y') scores → (X, Y, Z) uint8 labels in the file's order.

        Scores are resampled before the arg-max (linear where the scan is finer, nearest where
        the stored grid is at least as fine), `chunk` planes at a time, so only one slab of
        C-channel scores at the scan's resolution is ever held.
        """
        (x0, x1), (y0, y1), (z0, _z1) = record.crop
        cx, cy, cz = record.crop_shape
        device = scores.device
        fine = cx > record.shape[0] or cy > record.shape[1]
        canon = torch.zeros(record.canonical_shape, dtype=torch.uint8, device=device)
        planes = (
            torch.as_tensor(record.kept_slices, dtype=torch.long, device=device)
            if record.kept_slices is not None
            else torch.arange(cz, device=device)
        )
        for start in range(0, len(planes), chunk):
            stop = min(start + chunk, len(planes))
            part = _z_slab(scores, record, start, stop)
            if fine:
                labels = resized_argmax(part, (cx, cy))
            else:
                labels = resize_inplane(part.argmax(0), (cx, cy), label=True)
            canon[x0:x1, y0:y1, z0 + planes[start:stop]] = labels.permute(1, 2, 0)
        return from_canonical_tensor(canon, np.asarray(record.affine)).contiguous()


def check_resampled_size(
    shape: Sequence[int], spacing_in: Sequence[float], target: Sequence[float | None] | None
) -> None:
    """Refuse a target grid past MAX_RESAMPLED_VOXELS (before anything is allocated)."""
    from amoseg.errors import AmosegError

    voxels = int(np.prod([int(n) for n in shape], dtype=np.float64))
    if voxels <= MAX_RESAMPLED_VOXELS:
        return
    wanted = "×".join(str(int(n)) for n in shape)
    source = " × ".join(f"{float(s):.3g}" for s in spacing_in)
    goal = " × ".join("kept" if t is None else f"{t:g}" for t in target or ())
    raise AmosegError(
        f"resampling this scan ({source} mm) to {goal} mm gives {wanted} voxels, more than "
        f"the cap of {MAX_RESAMPLED_VOXELS}",
        hint="check the plan's spacing (plan.json configurations.*.spacing)",
    )


def _z_to_crop(scores: torch.Tensor, record: PreprocessRecord, *, label: bool) -> torch.Tensor:
    """Scores on the preprocessed z grid → the cropped canonical z grid (or the kept planes)."""
    n = len(record.kept_slices) if record.kept_slices is not None else record.crop_shape[2]
    return _z_slab(scores, record, 0, n)


def _z_slab(scores: torch.Tensor, record: PreprocessRecord, start: int, stop: int) -> torch.Tensor:
    """Planes [start, stop) of the cropped canonical z grid from (C, Z', X', Y') scores: linear
    where the scan is finer in z, nearest where the stored grid is at least as fine."""
    if record.kept_slices is not None:
        return scores[:, start:stop]
    n_out, n_in = record.crop_shape[2], record.shape[2]
    if n_out == n_in:
        return scores[:, start:stop]
    if n_out < n_in:
        idx = nearest_z(n_in, n_out, scores.device)[start:stop]
        return scores.index_select(1, idx)
    lo, hi, w = (t[start:stop] for t in z_weights(n_in, n_out, scores.device))
    w = w.view(1, -1, 1, 1)
    a = scores.index_select(1, lo).float()
    return a.mul_(1 - w).add_(scores.index_select(1, hi).float() * w)


def _missing_planes(record: PreprocessRecord, device: torch.device) -> torch.Tensor:
    kept = torch.zeros(record.crop_shape[2], dtype=torch.bool, device=device)
    kept[torch.as_tensor(record.kept_slices, dtype=torch.long, device=device)] = True
    return torch.nonzero(~kept)[:, 0]


def with_intensity(record: PreprocessRecord, image: torch.Tensor) -> PreprocessRecord:
    """The record plus the stored image's mean/std (what a per-image z-score needs)."""
    values = image.double()
    stats = {"mean": float(values.mean()), "std": float(values.std(unbiased=False))}
    return replace(record, intensity=stats)
