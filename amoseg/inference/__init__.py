"""Prediction on new scans (NIfTI or DICOM), organ volumes, overlays and ONNX export."""

from __future__ import annotations

from amoseg.inference.backends import ModelBackend, OnnxBackend, TorchBackend, backend_for_model
from amoseg.inference.export import export_onnx
from amoseg.inference.inputs import Scan, ScanInput, expand_input, load_scan
from amoseg.inference.pipeline import StageTimes, segment_volume
from amoseg.inference.postprocess import largest_component_per_organ
from amoseg.inference.predict import (
    Prediction,
    collect_inputs,
    label_image_like,
    load_model,
    open_backend,
    predict_many,
    predict_scan,
    segment_scan,
)
from amoseg.inference.volumes import organ_volumes, voxel_volume_ml, write_volumes

__all__ = [
    "ModelBackend",
    "OnnxBackend",
    "Prediction",
    "Scan",
    "ScanInput",
    "StageTimes",
    "TorchBackend",
    "backend_for_model",
    "collect_inputs",
    "expand_input",
    "export_onnx",
    "label_image_like",
    "largest_component_per_organ",
    "load_model",
    "load_scan",
    "open_backend",
    "organ_volumes",
    "predict_many",
    "predict_scan",
    "segment_scan",
    "segment_volume",
    "voxel_volume_ml",
    "write_volumes",
]
