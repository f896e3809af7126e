"""An nnU-Net v2 model folder as an amoseg backend: scan in (nibabel file order), AMOS-class
probabilities or labels out on the scan's own grid.

Unlike amoseg's slice backends, it brings its own pre- and post-processing (nnU-Net's,
reproduced exactly), so the pipeline calls `scan_probabilities` / `scan_labels` directly.
A 3d_cascade_fullres folder runs its 3d_lowres stage first and reads its labels as input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from amoseg.devices import resolve_device
from amoseg.errors import AmosegError
from amoseg.labels import NUM_CLASSES
from amoseg.nnunet_models.cascade import previous_stage_folder
from amoseg.nnunet_models.checkpoint import load_checkpoint
from amoseg.nnunet_models.folder import ModelFolder, read_model_folder
from amoseg.nnunet_models.names import amos_mapping, covered_organs, model_classes
from amoseg.nnunet_models.network import build_network, load_weights
from amoseg.nnunet_models.preprocess import Preprocessor, Record
from amoseg.nnunet_models.resample import resample_logits_chunks
from amoseg.ops.sliding import sliding_window_logits

Classes = Literal["amos", "model"]


def _autocast(precision: str, device: torch.device) -> torch.dtype | None:
    """auto: fp32 on the CPU (as nnU-Net predicts there), fp16 autocast on CUDA (as nnU-Net
    predicts there); fp32 never autocasts; bf16 always does."""
    if precision not in ("auto", "fp32", "bf16"):
        raise AmosegError(f"unknown precision {precision!r}", None, "use auto, fp32 or bf16")
    if precision == "bf16":
        return torch.bfloat16
    if precision == "auto" and device.type == "cuda":
        return torch.float16
    return None


class NnunetBackend:
    """Folds of one nnU-Net configuration, ready to segment scans."""

    def __init__(
        self,
        folder: ModelFolder,
        device: torch.device,
        precision: str = "auto",
        step_size: float = 0.5,
        tta: bool = False,
        labels: dict[str, int | str] | None = None,
        previous: NnunetBackend | None = None,
    ):
        if not 0 < step_size <= 1:
            raise AmosegError(f"step size {step_size} must be in (0, 1]", None, "nnU-Net uses 0.5")
        self.folder = folder
        self.device = device
        self.name = folder.name
        self.licence: str | None = folder.dataset.get("licence") or folder.dataset.get("license")
        self.step_size = step_size
        self.autocast = _autocast(precision, device)
        plans_path = folder.path / "plans.json"
        self.classes = model_classes(folder.dataset.get("labels", {}), folder.path / "dataset.json")
        self.amos = amos_mapping(self.classes, labels, folder.path / "dataset.json")
        self.covered: frozenset[int] = covered_organs(self.amos)
        #: the cascade's previous stage (3d_lowres), run first on every scan
        self.previous = previous
        if (previous is None) != (folder.configuration.get("previous_stage") is None):
            raise ValueError("a cascade stage needs its previous stage's backend, others none")
        self._pre = Preprocessor(folder.plans, folder.configuration, plans_path, len(self.classes))
        self.patch_size = [int(p) for p in folder.configuration["patch_size"]]
        channels = len(folder.dataset.get("channel_names", folder.dataset.get("modality", {})))
        if previous is not None:  # nnU-Net's determine_num_input_channels
            channels += len(self.classes) - 1
        self.nets: list[torch.nn.Module] = []
        mirror: Any = None
        classes = len(self.classes)
        for path in folder.checkpoints.values():
            checkpoint = load_checkpoint(path)
            net = load_weights(
                lambda: build_network(folder.configuration, channels, classes, plans_path),
                checkpoint["network_weights"],
                path,
            )
            self.nets.append(net.to(device))
            mirror = checkpoint.get("inference_allowed_mirroring_axes", mirror)
        #: the axes nnU-Net mirrors with TTA on (from the checkpoint; none stored: TTA is off)
        self.mirror_axes: tuple[int, ...] | None = tuple(mirror) if mirror else None
        self.tta = tta

    def __repr__(self) -> str:
        return f"NnunetBackend({self.name!r}, folds={len(self.nets)}, device={self.device})"

    def _logits(self, data: np.ndarray, affine: np.ndarray) -> tuple[torch.Tensor, Record]:
        before = None
        if self.previous is not None:  # its segmentation, as nnU-Net writes it on the scan grid
            before = self.previous.scan_outputs(data, affine, "model", probabilities=False)[0]
        image, record = self._pre.forward(data, affine, before)
        del before
        x = torch.from_numpy(image).to(self.device)
        # one tile at a time on the CPU, as nnU-Net runs them: batching changes the float32
        # sums of the convolutions by an ulp, and that can flip a float16 logit sum
        batch = 1 if len(self.patch_size) == 3 or self.device.type != "cuda" else 16
        logits = sliding_window_logits(
            self.nets, x, len(self.classes), self.patch_size, self.step_size,
            self.mirror_axes if self.tta else None, batch, self.autocast,
        )  # fmt: skip
        return logits, record

    @torch.no_grad()
    def scan_outputs(
        self,
        data: np.ndarray,
        affine: np.ndarray,
        classes: Classes = "amos",
        probabilities: bool = True,
        labels: bool = True,
    ) -> tuple[np.ndarray | None, torch.Tensor | None]:
        """(labels (X, Y, Z) uint8 | None, probabilities (C, X, Y, Z) float32 on the device
        | None) on the scan's grid in nibabel file order. classes='amos': the 16 AMOS classes
        (labels: the model's own arg-max, mapped; probabilities: summed per AMOS class);
        'model': the model's own classes, as nnUNetv2_predict writes them."""
        logits, rec = self._logits(data, affine)
        kwargs = {k: v for k, v in self._pre.prob_kwargs.items() if k != "order"}
        chunks = resample_logits_chunks(
            logits, rec.shape_after_crop, rec.model_spacing, rec.spacing, **kwargs
        )
        table = self.amos if classes == "amos" else list(range(len(self.classes)))
        mapping = torch.as_tensor(table, dtype=torch.long, device=self.device)
        n_out = NUM_CLASSES if classes == "amos" else len(self.classes)
        lab = np.zeros(rec.shape_before_crop, dtype=np.uint8) if labels else None
        prob = None
        if probabilities:
            prob = torch.zeros((n_out, *rec.shape_before_crop), device=self.device)
            prob[0] = 1.0  # outside the crop: background, as nnU-Net pads probabilities
        (z0, _), box1, box2 = rec.bbox
        for start, chunk in chunks:
            where = (slice(z0 + start, z0 + start + chunk.shape[1]), slice(*box1), slice(*box2))
            if lab is not None:
                lab[where] = mapping[chunk.argmax(0)].to(torch.uint8).cpu().numpy()
            if prob is not None:
                p = chunk.softmax(0)
                if classes == "amos":
                    p = torch.zeros((n_out, *p.shape[1:]), device=p.device).index_add_(
                        0, mapping, p
                    )
                prob[(slice(None), *where)] = p
        back = tuple(int(i) for i in np.argsort(rec.axes))
        if lab is not None:
            lab = np.ascontiguousarray(lab.transpose(back))
        if prob is not None:
            prob = prob.permute(0, *(b + 1 for b in back)).contiguous()
        return lab, prob

    def scan_probabilities(self, data: np.ndarray, affine: np.ndarray) -> torch.Tensor:
        """(16, X, Y, Z) float32 AMOS-class probabilities on the scan's grid (file order);
        class 0 holds background and every class of the model that is no AMOS organ."""
        return self.scan_outputs(data, affine, labels=False)[1]  # type: ignore[return-value]

    def scan_labels(self, data: np.ndarray, affine: np.ndarray) -> np.ndarray:
        """(X, Y, Z) uint8 AMOS ids: the model's own arg-max mapped to AMOS (what nnU-Net's
        segmentation says, with non-AMOS classes as background)."""
        return self.scan_outputs(data, affine, probabilities=False)[0]  # type: ignore[return-value]


def open_nnunet_model(
    path: str | Path,
    *,
    device: str = "auto",
    precision: str = "auto",
    step_size: float = 0.5,
    tta: bool = False,
    folds: list[str] | None = None,
    labels: dict[str, int | str] | None = None,
    previous_stage: str | Path | None = None,
) -> NnunetBackend:
    """An nnU-Net v2 trained model folder (all its folds, or `folds`) on `device`. A folder
    installed by `amoseg fetch-model` is checked against its recorded sha256s first and
    brings its class names (the catalogue's). A 3d_cascade_fullres folder brings its
    3d_lowres stage: `previous_stage`, or nnU-Net's sibling folder beside it (same folds,
    same options)."""
    from amoseg.nnunet_models.fetch import verify_manifest

    record = verify_manifest(Path(path))
    if record is not None and labels is None:
        labels = record.get("labels") or None
    folder = read_model_folder(path, folds)
    dev = resolve_device(device)
    previous = None
    if folder.configuration.get("previous_stage") is not None:
        prev_folder = previous_stage_folder(folder, previous_stage)
        verify_manifest(prev_folder.path)
        previous = NnunetBackend(prev_folder, dev, precision, step_size, tta, labels)
    elif previous_stage is not None:
        raise AmosegError(
            f"{folder.configuration_name} is no cascade stage; it takes no previous stage",
            folder.path,
        )
    return NnunetBackend(folder, dev, precision, step_size, tta, labels, previous)
