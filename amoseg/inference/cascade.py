"""Two stages in one bundle: nnU-Net's cascade at prepare time and at prediction time.

- `LowresFolds`: the previous stage as `prepare` uses it (`amoseg.store.cascade`): the fold
  runs of a `3d_lowres` store, checked (configuration, store, every fold present), each case
  predicted by the fold run that held it out, test cases by all folds.
- `CascadeBackend`: a cascade bundle's scoring backend. Per scan: the previous stage's
  bundles segment it (on the scan's own grid, no post-processing: what `prepare` stored) →
  the full-resolution stage's preprocessor takes the scan and those labels together (the
  labels resampled as a label map: nearest) → the full-resolution network on [image,
  labels] (one-hot organs inside the module) → scores back to the scan's grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from amoseg.atomic import read_json
from amoseg.errors import AmosegError
from amoseg.labels import NUM_CLASSES
from amoseg.ops.tta import MirroredBackend
from amoseg.store.cascade import file_sha256, held_out_by

PREV_HINT = (
    "pass the folder of the 3d_lowres fold runs: amoseg train unet3d --data LOWRES_STORE "
    "--fold K --out PREV/fold_K for every fold K"
)


class LowresFolds:
    """The fold runs of a low-resolution store, as a cascade's previous stage (see the
    module docstring). Holds paths only, so `prepare --workers N` can send it to workers;
    each process opens the models it needs once."""

    def __init__(self, root: str | Path, device: str = "auto"):
        from amoseg.inference.bundle import member_runs
        from amoseg.store.slice_store import SliceStore

        self.root = Path(root)
        self.device = device
        if not self.root.is_dir():
            raise AmosegError("previous stage folder not found", self.root, PREV_HINT)
        runs: dict[int, Path] = {}
        configs: dict[int, dict[str, Any]] = {}
        for run in member_runs(self.root):
            config = read_json(run / "config.json", "run config.json")
            fold = (config.get("settings") or {}).get("fold") if isinstance(config, dict) else None
            if isinstance(fold, int):
                if fold in runs:
                    raise AmosegError(f"two runs of fold {fold}", self.root, "keep one per fold")
                runs[fold], configs[fold] = run, config
        if not runs:
            raise AmosegError("the previous stage folder holds no fold runs", self.root, PREV_HINT)
        stores = {str((c.get("store") or {}).get("path")) for c in configs.values()}
        names = {str((c.get("store") or {}).get("configuration", "seed")) for c in configs.values()}
        if len(stores) != 1 or len(names) != 1:
            raise AmosegError(
                "the previous stage's fold runs were trained on different stores",
                self.root,
                "keep the fold runs of one 3d_lowres store in PREV",
            )
        self.configuration = names.pop()
        store = SliceStore(stores.pop())
        if int(store.info.get("num_classes", NUM_CLASSES)) != NUM_CLASSES:
            raise AmosegError(
                f"the previous stage predicts {store.info.get('num_classes')} labels, not the "
                f"{NUM_CLASSES} AMOS ids",
                store.root,
                "train the previous stage on an amoseg store of the same labels",
            )
        for fold, config in configs.items():
            recorded = (config.get("store") or {}).get("identity") or {}
            if recorded.get("splits_sha256") != store.identity()["splits_sha256"]:
                raise AmosegError(
                    f"the previous stage's store changed since its fold {fold} run was trained "
                    "(its splits differ)",
                    runs[fold],
                    "retrain the fold runs on the store as it is now",
                )
        self.store_root = store.root
        self._splits = {k: store.stored_splits.get(k, []) for k in ("train", "val", "test")}
        self._splits["folds"] = list(store.stored_splits.get("folds") or [])
        wanted = [k for k, f in enumerate(self._splits["folds"]) if f.get("val")]
        missing = [k for k in wanted if k not in runs]
        if not wanted or missing:
            raise AmosegError(
                f"the previous stage lacks fold run(s) {missing or 'for any fold'}: their "
                "validation cases would have no prediction from a model that never saw them",
                self.root,
                PREV_HINT,
            )
        self.runs = {k: runs[k] for k in wanted}
        self._record: dict[str, Any] | None = None
        self._segmenters: dict[int | None, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_segmenters"] = {}  # models are opened again in each process
        return state

    def record(self) -> dict[str, Any]:
        if self._record is None:
            self._record = {
                "path": str(self.root.resolve()),
                "configuration": self.configuration,
                "store": str(self.store_root.resolve()),
                "organs": NUM_CLASSES - 1,
                "rule": "train/val cases: the fold run that held the case out; test cases: "
                "the ensemble of all fold runs; raw labels (no post-processing)",
                "folds": {
                    str(k): {
                        "run": str(run.resolve()),
                        "checkpoint_sha256": file_sha256(run / "checkpoint_best.pt"),
                    }
                    for k, run in self.runs.items()
                },
            }
        return self._record

    def splits(self) -> dict[str, Any]:
        return self._splits

    def _segmenter(self, fold: int | None) -> Any:
        from amoseg.inference.bundle import run_bundle
        from amoseg.inference.segmenter import Segmenter, SegmentOptions

        if fold not in self._segmenters:
            runs = list(self.runs.values()) if fold is None else [self.runs[fold]]
            options = SegmentOptions(device=self.device, postprocess="none")
            self._segmenters[fold] = Segmenter([run_bundle(r) for r in runs], options)
        return self._segmenters[fold]

    def labels(self, case_id: str, image: Path) -> tuple[np.ndarray, dict[str, Any]]:
        from amoseg.inference.inputs import expand_input, load_scan

        fold = held_out_by(self._splits["folds"], case_id)
        if fold is None and case_id not in self._splits["test"]:
            raise AmosegError(
                f"case {case_id} is in no fold's validation and not a test case of the "
                "previous stage's store",
                self.store_root / "splits.json",
                "prepare the low-resolution store again, then retrain its folds",
            )
        [item] = expand_input(image)
        scan = load_scan(item)
        labels = self._segmenter(fold).labels(scan.data, scan.image.affine)
        runs = list(self.runs.values()) if fold is None else [self.runs[fold]]
        return labels, {"fold": fold, "runs": [str(r.resolve()) for r in runs]}


class CascadeBackend:
    """A cascade bundle's backend (see the module docstring): the pipeline hands it whole
    scans (`scan_labels`, `scan_probabilities`), as it does nnU-Net model folders."""

    preprocessor: Any = None  # the pipeline's planned path is not taken: scans come whole

    def __init__(
        self,
        full: Any,
        previous: Sequence[Any],
        preprocessor: Any,
        batch_size: int | None = None,
    ):
        self.full = full
        self.previous = list(previous)
        self.stage_preprocessor = preprocessor
        self.batch_size = batch_size
        self.device = full.device
        self.needs_stats = False
        #: test-time mirrored (the full stage, along its trained axes; the previous stage's
        #: own bundles as their options say)
        self.tta = isinstance(full, MirroredBackend)

    def _batch(self, backend: Any) -> int:
        from amoseg.inference.predict import default_batch_size

        return self.batch_size or default_batch_size(backend)

    def previous_labels(self, data: np.ndarray, affine: np.ndarray) -> np.ndarray:
        """The previous stage's (X, Y, Z) uint8 labels on the scan's own grid."""
        from amoseg.inference.pipeline import scan_probabilities, segment_volume

        first = self.previous[0]
        if len(self.previous) == 1:
            return segment_volume(first, data, affine, self._batch(first))
        probs = scan_probabilities(self.previous, data, affine, self._batch(first))
        return probs.argmax(0).to(torch.uint8).cpu().numpy()

    def stage_scores(self, data: np.ndarray, affine: np.ndarray) -> tuple[torch.Tensor, Any]:
        """(K, Z', X', Y') full-resolution scores for the scan, and the preprocess record."""
        from amoseg.preprocessing.normalise import image_stats
        from amoseg.preprocessing.orient import as_tensor

        previous = torch.from_numpy(np.ascontiguousarray(self.previous_labels(data, affine)))
        pre = self.stage_preprocessor
        out = pre.forward(as_tensor(data).to(self.device), affine, previous.to(self.device))
        volume = torch.stack([out.image.float(), out.label.float()])  # (2, Z', X', Y')
        stats = image_stats(out.image) if self.full.needs_stats else None
        scores = self.full.inferer(self._batch(self.full))(volume, self.full.predictor(stats))
        return scores.to(self.device).transpose(0, 1), out.record

    def scan_labels(self, data: np.ndarray, affine: np.ndarray) -> np.ndarray:
        scores, record = self.stage_scores(data, affine)
        return self.stage_preprocessor.invert_labels(scores, record).cpu().numpy()

    def scan_probabilities(self, data: np.ndarray, affine: np.ndarray) -> torch.Tensor:
        scores, record = self.stage_scores(data, affine)
        return self.stage_preprocessor.invert(scores.float().softmax(0), record)
