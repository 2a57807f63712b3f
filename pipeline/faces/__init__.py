"""Face detection, 478-point mesh and similarity-aligned crops (MediaPipe + OpenCV).

MediaPipe (with the matplotlib it imports) is loaded only when :class:`FaceAnalyzer` or
:class:`FaceObservation` is first used: stages that only read the mesh indices or the
alignment templates (e.g. the face geometry extractor) do not pay a second of imports.
"""
from typing import Any

from pipeline.faces.align import align, similarity_transform
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


def __getattr__(name: str) -> Any:
    if name in ("FaceAnalyzer", "FaceObservation"):
        from pipeline.faces import detect

        return getattr(detect, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
