"""One invertible preprocessor (orient → crop → resample) for every stage; see `preprocessor`."""

from amoseg.preprocessing.normalise import Normalisation
from amoseg.preprocessing.preprocessor import Preprocessed, Preprocessor, PreprocessRecord

__all__ = ["Normalisation", "PreprocessRecord", "Preprocessed", "Preprocessor"]
