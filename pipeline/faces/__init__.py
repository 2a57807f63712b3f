"""Face detection, 478-point mesh and similarity-aligned crops (MediaPipe + OpenCV)."""

from pipeline.faces.align import align, similarity_transform
from pipeline.faces.detect import FaceAnalyzer, FaceObservation
from pipeline.faces.template import CANONICAL_TEMPLATE, GRAY_TEMPLATE, five_points

__all__ = [
    "CANONICAL_TEMPLATE",
    "GRAY_TEMPLATE",
    "FaceAnalyzer",
    "FaceObservation",
    "align",
    "five_points",
    "similarity_transform",
]
