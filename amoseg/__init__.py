"""amoseg: abdominal multi-organ segmentation of CT/MRI scans on AMOS22."""

__version__ = "0.1.0"
