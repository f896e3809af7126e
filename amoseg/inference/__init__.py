"""Prediction on new scans (NIfTI or DICOM), organ volumes, overlays and ONNX export.

Names are imported on first use, so `amoseg.ops.inferers` (which training imports)
does not pull in ONNX export, DICOM reading or matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "amoseg.inference.backends": (
        "ModelBackend",
        "OnnxBackend",
        "TorchBackend",
        "backend_for_model",
    ),
    "amoseg.inference.export": ("export_onnx",),
    "amoseg.ops.inferers": ("SliceInferer", "SlidingWindowInferer", "label_volume"),
    "amoseg.inference.inputs": ("Scan", "ScanInput", "expand_input", "load_scan"),
    "amoseg.inference.pipeline": ("StageTimes", "segment_volume"),
    "amoseg.inference.postprocess": ("largest_component_per_organ",),
    "amoseg.inference.predict": (
        "Prediction",
        "collect_inputs",
        "label_image_like",
        "load_model",
        "predict_many",
        "predict_scan",
        "scan_probabilities",
        "segment_scan",
    ),
    "amoseg.inference.volumes": ("organ_volumes", "voxel_volume_ml", "write_volumes"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'amoseg.inference' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
