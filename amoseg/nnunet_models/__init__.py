"""nnU-Net v2 trained model folders (TotalSegmentator's, MRSegmentator's, a researcher's own)
as amoseg models, read and run without nnU-Net installed."""

from amoseg.nnunet_models.backend import NnunetBackend, open_nnunet_model
from amoseg.nnunet_models.folder import is_nnunet_model_dir

__all__ = ["NnunetBackend", "is_nnunet_model_dir", "open_nnunet_model"]
