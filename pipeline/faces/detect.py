"""Face detection, 478-point face mesh (or the detector's six keypoints) and aligned crops
for one RGB frame at a time.

MediaPipe's FaceMesh graph already runs the short-range BlazeFace detector before
its landmark model, so instead of running FaceDetection and then FaceMesh (two
detector passes) we run the FaceMesh graph once on the full frame in static-image
mode and also read out the detections it produced. Its boxes and scores are
bit-identical to FaceDetection(model_selection=0) (same model, thresholds and
post-processing), and on MEAD / CREMA-D this runs at ~185 frames/s against ~140
for FaceDetection + FaceMesh on the full frame or on an enlarged crop of the box:
the mesh graph resizes its input to fixed model sizes, so a crop saves nothing
and only shifts landmarks (~1% of the inter-ocular distance) through a different
region of interest. Static mode is required because frames are sampled sparsely:
tracking from the previous call's landmarks would seed the landmark model with a
stale region.

Only when the short-range model finds nothing (faces small in the frame) does
the full-range detector run; the mesh is then computed on an enlarged crop around
its box, where the face is large enough for the mesh graph's own detector.

With ``landmarks="keypoints"`` no mesh runs at all: the short-range detector runs alone
(its own graph, about 2.5x the mesh graph's speed) and the crops are aligned from its
eye, nose-tip and mouth-centre keypoints onto where those points sit in the mesh-aligned
crop (:data:`pipeline.faces.template.KEYPOINT_TEMPLATE`). Its boxes and scores are the ones
the mesh graph's detector gives; faces whose mesh the mesh graph rejects (landmark presence
below 0.5) are kept.

`analyze` returns the main face of the frame; `analyze_faces` every face found (up to
`max_faces`, largest confidence-weighted first) for multi-person clips, from the same
single detection pass.
"""

from __future__ import annotations

import importlib
import sys
import types
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

import cv2


class _PyplotOnFirstUse(types.ModuleType):
    """Stands in for ``matplotlib.pyplot`` until one of its attributes is used, then imports
    the real module and hands every attribute over from it."""

    def __getattr__(self, name: str) -> object:
        if sys.modules.get("matplotlib.pyplot") is self:
            del sys.modules["matplotlib.pyplot"]
        return getattr(importlib.import_module("matplotlib.pyplot"), name)


def _defer_pyplot() -> None:
    """mediapipe's solutions package imports matplotlib.pyplot for drawing helpers this module
    never calls: ~0.5 s of every faces worker's start-up. A stand-in that imports pyplot on
    first use removes that cost and leaves any code that does use pyplot working. (The
    stdlib's LazyLoader does not help: the import statement reads the module's __spec__,
    which loads it.)"""
    if "matplotlib.pyplot" in sys.modules:
        return
    import matplotlib

    stand_in = _PyplotOnFirstUse("matplotlib.pyplot")
    sys.modules["matplotlib.pyplot"] = stand_in
    matplotlib.pyplot = stand_in


_defer_pyplot()

import numpy as np  # noqa: E402
from mediapipe.framework.formats import detection_pb2, landmark_pb2  # noqa: E402
from mediapipe.python._framework_bindings import _packet_getter  # noqa: E402
from mediapipe.python.solution_base import SolutionBase  # noqa: E402

from pipeline.faces.align import compose, similarity_transform, template_px, warp  # noqa: E402
from pipeline.native_logs import NativeChatterFilter  # noqa: E402
from pipeline.faces.template import (  # noqa: E402
    ALIGNMENT_KEYPOINTS,
    CANONICAL_TEMPLATE,
    GRAY_TEMPLATE,
    KEYPOINT_GRAY_TEMPLATE,
    KEYPOINT_TEMPLATE,
    NUM_KEYPOINTS,
    five_points,
)

ModelSelection = Literal["auto", "short", "full"]
Landmarks = Literal["mesh", "keypoints"]
LANDMARKS: tuple[str, ...] = ("mesh", "keypoints")

_MESH_GRAPH = "mediapipe/modules/face_landmark/face_landmark_front_cpu.binarypb"
_DETECTOR_GRAPHS = {
    "short": "mediapipe/modules/face_detection/face_detection_short_range_cpu.binarypb",
    "full": "mediapipe/modules/face_detection/face_detection_full_range_cpu.binarypb",
}
_MESH_DETECTOR_SCORE_PARAM = (
    "facedetectionshortrangecpu__facedetectionshortrange__facedetection__TensorsToDetectionsCalculator.min_score_thresh"
)
_MESH_PRESENCE_PARAM = "facelandmarkcpu__ThresholdingCalculator.threshold"
# FaceMesh's own default for rejecting a landmark fit that is not a face.
_MIN_MESH_PRESENCE = 0.5
# More than one candidate so that a larger face is not lost behind a more
# confident background one; costs an extra mesh pass only in multi-face frames.
_MAX_CANDIDATE_FACES = 3
# Crop side / detected box side for the full-range fallback: large enough that the
# mesh graph's detector sees the whole head, small enough that the face dominates.
_FALLBACK_CROP_SCALE = 2.0


@dataclass
class FaceObservation:
    box: np.ndarray  # [4] float32 x0, y0, x1, y1 in input-frame pixels
    score: float  # detector confidence
    landmarks: np.ndarray | None  # [478, 3] float32 x, y in input-frame pixels, z scaled like x; None without the mesh
    crop_rgb: np.ndarray | None  # [crop_size, crop_size, 3] uint8, ArcFace-like alignment; None when crop_size is 0
    crop_gray: np.ndarray  # [gray_size, gray_size] uint8, FER2013-like framing
    crop_rgb_large: np.ndarray | None = None  # [large_crop_size]*2 x 3 uint8, same alignment as crop_rgb
    detector: str = "short"  # which detector found it: "short" or "full" (the fallback)
    keypoints: np.ndarray | None = None  # [6, 2] float32 the detector's keypoints in pixels (template.KEYPOINT_NAMES)
    points: np.ndarray | None = None  # [N, 2] float32 the points the crops were aligned from (5 mesh points or 4 keypoints)


@dataclass
class _Detection:
    box: np.ndarray  # [4] float32 x0, y0, x1, y1 in pixels
    score: float
    keypoints: np.ndarray  # [6, 2] float32 in pixels

    @property
    def priority(self) -> float:
        # Area weighted by confidence: the subject of an emotion clip is the
        # biggest face, but a huge low-confidence false positive should not win.
        width, height = self.box[2:] - self.box[:2]
        return float(width * height) * self.score


def _detections_px(detections: list[detection_pb2.Detection] | None, width: int, height: int) -> list[_Detection]:
    result = []
    for detection in detections or []:
        rel = detection.location_data.relative_bounding_box
        x0, y0, box_width, box_height = rel.xmin * width, rel.ymin * height, rel.width * width, rel.height * height
        box = np.array([x0, y0, x0 + box_width, y0 + box_height], dtype=np.float32)
        # Clipped to the frame (in float32, as the box is stored).
        box = np.minimum(np.maximum(box, 0), np.array([width, height, width, height], np.float32))
        keypoints = np.array(
            [(point.x * width, point.y * height) for point in detection.location_data.relative_keypoints[:NUM_KEYPOINTS]],
            np.float32,
        ).reshape(-1, 2)
        if len(keypoints) < NUM_KEYPOINTS:  # not a face detector's output: pad, never index past
            keypoints = np.vstack([keypoints, np.zeros((NUM_KEYPOINTS - len(keypoints), 2), np.float32)])
        result.append(_Detection(box, float(detection.score[0]), keypoints))
    return result


# One NormalizedLandmark (proto2, x/y/z set, visibility/presence unset) as it sits
# inside a serialized NormalizedLandmarkList: field-1 tag, length 15, then three
# tagged little-endian fixed32 floats.
_LANDMARK_RECORD = np.dtype(
    [("tag", "u1"), ("length", "u1"), ("x_tag", "u1"), ("x", "<f4"), ("y_tag", "u1"), ("y", "<f4"), ("z_tag", "u1"), ("z", "<f4")]
)
_LANDMARK_RECORD_CONSTANTS = {"tag": 0x0A, "length": 15, "x_tag": 0x0D, "y_tag": 0x15, "z_tag": 0x1D}


def _normalized_xyz(serialized: bytes) -> np.ndarray:
    """[N, 3] float32 (x, y, z) of a serialized NormalizedLandmarkList.

    Parsing 478 landmarks into Python protobuf objects and reading their 478 x 3
    attributes takes ~0.35 ms, several percent of a whole analyze() call; the serialized
    message is a fixed-size record per landmark whenever only x, y, z are set (what
    FaceMesh emits), which numpy reads in ~0.015 ms straight from the graph's bytes. Any
    other layout is parsed.
    """
    if len(serialized) % _LANDMARK_RECORD.itemsize == 0:
        records = np.frombuffer(serialized, dtype=_LANDMARK_RECORD)
        if all((records[field] == value).all() for field, value in _LANDMARK_RECORD_CONSTANTS.items()):
            return np.stack([records["x"], records["y"], records["z"]], axis=1)
    face_landmarks = landmark_pb2.NormalizedLandmarkList.FromString(serialized)
    return np.array([(p.x, p.y, p.z) for p in face_landmarks.landmark], dtype=np.float32).reshape(-1, 3)


def _serialized_landmarks(outputs: dict[str, object]) -> list[bytes]:
    """The mesh graph's landmark lists as serialized protos: _normalized_xyz reads them into
    numpy straight from the bytes, without building Python proto objects."""
    packet = outputs.get("multi_face_landmarks")
    return _packet_getter._get_serialized_proto_list(packet) if packet is not None else []


def _landmarks_px(faces: list[bytes], width: int, height: int) -> list[np.ndarray]:
    # MediaPipe's z is normalised by the image width, hence the scale by width.
    scale = np.array([width, height, width], dtype=np.float32)
    return [_normalized_xyz(face) * scale for face in faces]


def _mesh_for(detection: _Detection, centroids: dict[int, tuple[float, float]]) -> int | None:
    """Of the meshes (index -> xy centroid), the one whose centroid lies inside the detection
    box, nearest its centre.

    The graph may drop or merge faces between detection and landmarks, so list
    positions do not reliably pair detections with meshes.
    """
    x0, y0, x1, y1 = (float(v) for v in detection.box)
    centre_x, centre_y = (x0 + x1) / 2, (y0 + y1) / 2
    best, best_distance = None, np.inf
    for index, (x, y) in centroids.items():
        distance = np.hypot(x - centre_x, y - centre_y)
        if x0 <= x <= x1 and y0 <= y <= y1 and distance < best_distance:
            best, best_distance = index, distance
    return best


def _centroids(meshes: list[np.ndarray]) -> dict[int, tuple[float, float]]:
    return {i: tuple(mesh[:, :2].mean(axis=0).tolist()) for i, mesh in enumerate(meshes)}


class _OneImageGraph(SolutionBase):
    """A MediaPipe solution graph with one image input, run without SolutionBase.process.
    Its construction and every frame run with MediaPipe's native log lines filtered from
    stderr (:mod:`pipeline.native_logs`; some come only with the first face found)."""

    def __init__(self, **options: object) -> None:
        self._chatter_filter = NativeChatterFilter()
        with self._chatter_filter:
            super().__init__(**options)
            # The graph opens its calculators (and loads its models, which is when MediaPipe
            # logs) on its own threads after start_run returns: wait for that inside the filter.
            self._graph.wait_until_idle()

    def _run(self, image: np.ndarray) -> dict[str, object]:
        with self._chatter_filter:
            return self._run_graph(image)

    def _run_graph(self, image: np.ndarray) -> dict[str, object]:
        """SolutionBase.process for this graph's one image input: the non-empty output
        packets by stream name.

        process() defines a new namedtuple class on every call (collections.namedtuple
        compiles it with eval), ~0.4 ms per frame, 5 % of the whole mesh graph. This is
        the same sequence on the same (mediapipe 0.10.21) internals without it.
        """
        self._graph_outputs.clear()
        self._simulated_timestamp += 33333  # as process(): a 30 fps stream of images
        packet = self._make_packet(self._input_stream_type_info["image"], image)
        self._graph.add_packet_to_input_stream(stream="image", packet=packet.at(self._simulated_timestamp))
        self._graph.wait_until_idle()
        return {name: output for name, output in self._graph_outputs.items() if not output.is_empty()}

    def _protos(self, outputs: dict[str, object], stream: str) -> list | None:
        """The proto messages of an output stream (None when it emitted nothing)."""
        if stream not in outputs:
            return None
        return self._get_packet_content(self._output_stream_type_info[stream], outputs[stream])


class _FaceDetector(_OneImageGraph):
    """MediaPipe's short- or full-range face detection graph (what FaceDetection(model_selection=0
    or 1) runs)."""

    def __init__(self, model: Literal["short", "full"], min_detection_confidence: float) -> None:
        from mediapipe.modules.face_detection import face_detection_pb2

        super().__init__(
            binary_graph_path=_DETECTOR_GRAPHS[model],
            graph_options=self.create_graph_options(
                face_detection_pb2.FaceDetectionOptions(), {"min_score_thresh": min_detection_confidence}
            ),
            outputs=["detections"],
        )

    def detect(self, image: np.ndarray) -> list[_Detection]:
        height, width = image.shape[:2]
        return _detections_px(self._protos(self._run(image), "detections"), width, height)


class _MeshWithDetections(_OneImageGraph):
    """MediaPipe's FaceMesh graph (static mode, iris refinement) that also returns its detections."""

    def __init__(self, min_detection_confidence: float, max_faces: int) -> None:
        super().__init__(
            binary_graph_path=_MESH_GRAPH,
            side_inputs={"num_faces": max_faces, "with_attention": True, "use_prev_landmarks": False},
            calculator_params={
                _MESH_DETECTOR_SCORE_PARAM: min_detection_confidence,
                _MESH_PRESENCE_PARAM: _MIN_MESH_PRESENCE,
            },
            outputs=["multi_face_landmarks", "face_detections"],
        )

    def detect(self, image: np.ndarray) -> tuple[list[_Detection], list[np.ndarray]]:
        height, width = image.shape[:2]
        outputs = self._run(image)
        detections = _detections_px(self._protos(outputs, "face_detections"), width, height)
        return detections, _landmarks_px(_serialized_landmarks(outputs), width, height)


class FaceAnalyzer:
    """Finds the faces in an RGB frame and returns their boxes, meshes (or keypoints only) and
    aligned crops.

    ``landmarks="keypoints"`` skips the mesh: detection only, crops aligned from the detector's
    keypoints, ``landmarks`` None. ``crop_size`` 0 skips the RGB crop (``crop_rgb`` None);
    ``large_crop_size`` > 0 adds an RGB crop of that size with the RGB crop's alignment (e.g.
    224 for ImageNet backbones), warped from the frame rather than upsampled.

    Holds MediaPipe graphs, which are not thread-safe: use one analyzer per process
    (or thread) and close it, e.g. via `with FaceAnalyzer() as analyzer:`.
    """

    def __init__(
        self,
        min_detection_confidence: float = 0.5,
        crop_size: int = 112,
        gray_size: int = 64,
        model_selection: ModelSelection = "auto",
        max_faces: int = 1,
        large_crop_size: int = 0,
        landmarks: Landmarks = "mesh",
    ) -> None:
        if model_selection not in ("auto", "short", "full"):
            raise ValueError(f"model_selection must be 'auto', 'short' or 'full', got {model_selection!r}")
        if landmarks not in LANDMARKS:
            raise ValueError(f"landmarks must be one of {list(LANDMARKS)}, got {landmarks!r}")
        if max_faces < 1:
            raise ValueError(f"max_faces must be >= 1, got {max_faces}")
        if gray_size < 1 or crop_size < 0 or large_crop_size < 0:
            raise ValueError(f"crop sizes must be positive (0 skips an RGB crop), got {crop_size}, {gray_size}, {large_crop_size}")
        self.crop_size = crop_size
        self.gray_size = gray_size
        self.large_crop_size = large_crop_size
        self.model_selection = model_selection
        self.max_faces = max_faces
        self.landmarks = landmarks
        self._candidates = max(_MAX_CANDIDATE_FACES, max_faces)
        self._closed = False
        self._mesh = _MeshWithDetections(min_detection_confidence, self._candidates) if landmarks == "mesh" else None
        self._short_range = (
            _FaceDetector("short", min_detection_confidence)
            if landmarks == "keypoints" and model_selection in ("auto", "short")
            else None
        )
        self._full_range = _FaceDetector("full", min_detection_confidence) if model_selection in ("auto", "full") else None
        # One similarity fit per face, onto the unit template of its points; each crop's matrix
        # is that fit composed with a fixed map onto the crop's own layout (align.compose).
        template, gray_template = (
            (CANONICAL_TEMPLATE, GRAY_TEMPLATE) if landmarks == "mesh" else (KEYPOINT_TEMPLATE, KEYPOINT_GRAY_TEMPLATE)
        )
        self._unit_template = template.astype(np.float64)
        layouts = {"crop_rgb": (crop_size, template), "crop_gray": (gray_size, gray_template),
                   "crop_rgb_large": (large_crop_size, template)}
        self._layouts = {
            name: (size, similarity_transform(self._unit_template, template_px(size, layout)))
            for name, (size, layout) in layouts.items()
            if size
        }

    def __enter__(self) -> FaceAnalyzer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._closed = True
        for graph in (self._mesh, self._short_range, self._full_range):
            if graph is not None:
                graph.close()
        self._mesh = self._short_range = self._full_range = None

    def analyze(self, frame_rgb: np.ndarray) -> FaceObservation | None:
        """The main (largest, confidence-weighted) face in an HxWx3 uint8 RGB frame, or None."""
        faces = self.analyze_faces(frame_rgb, limit=1)
        return faces[0] if faces else None

    def analyze_faces(self, frame_rgb: np.ndarray, limit: int | None = None) -> list[FaceObservation]:
        """Up to ``limit`` (default ``max_faces``) faces, largest confidence-weighted first.

        The full-range detector runs only when the short-range one finds no face at all.
        """
        limit = self.max_faces if limit is None else limit
        if self._closed:
            raise RuntimeError("FaceAnalyzer is closed")
        if frame_rgb.ndim != 3 or frame_rgb.shape[2] != 3 or frame_rgb.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 RGB frame, got {frame_rgb.shape} {frame_rgb.dtype}")
        frame_rgb = np.ascontiguousarray(frame_rgb)

        found, detector = [], "short"
        if self.model_selection in ("auto", "short"):
            found = self._short_range_faces(frame_rgb, limit)
        if not found and self._full_range is not None:
            found, detector = self._full_range_faces(frame_rgb, limit), "full"
        return [self._observation(frame_rgb, detection, landmarks, detector) for detection, landmarks in found]

    def _short_range_faces(self, frame_rgb: np.ndarray, limit: int) -> list[tuple[_Detection, np.ndarray | None]]:
        if self._mesh is None:
            return [(d, None) for d in _by_priority(self._short_range.detect(frame_rgb))[:limit]]
        detections, meshes = self._mesh.detect(frame_rgb)
        found, unused = [], _centroids(meshes)
        for detection in _by_priority(detections):
            index = _mesh_for(detection, unused)
            if index is not None:
                del unused[index]
                found.append((detection, meshes[index]))
                if len(found) == limit:
                    break
        return found

    def _full_range_faces(self, frame_rgb: np.ndarray, limit: int) -> list[tuple[_Detection, np.ndarray | None]]:
        detections = _by_priority(self._full_range.detect(frame_rgb))[: self._candidates]
        if self._mesh is None:
            return [(d, None) for d in detections[:limit]]
        height, width = frame_rgb.shape[:2]
        found = []
        for detection in detections:
            x0, y0, x1, y1 = detection.box
            half_side = max(x1 - x0, y1 - y0) * _FALLBACK_CROP_SCALE / 2
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            left, top = max(0, int(cx - half_side)), max(0, int(cy - half_side))
            right, bottom = min(width, int(np.ceil(cx + half_side))), min(height, int(np.ceil(cy + half_side)))
            crop = np.ascontiguousarray(frame_rgb[top:bottom, left:right])
            _, meshes = self._mesh.detect(crop)
            offset = np.array([left, top, 0], dtype=np.float32)
            meshes = [m + offset for m in meshes]
            index = _mesh_for(detection, _centroids(meshes))
            if index is not None:
                found.append((detection, meshes[index]))
                if len(found) == limit:
                    break
        return found

    def _observation(
        self, frame_rgb: np.ndarray, detection: _Detection, landmarks: np.ndarray | None, detector: str = "short"
    ) -> FaceObservation:
        points = five_points(landmarks) if landmarks is not None else detection.keypoints[list(ALIGNMENT_KEYPOINTS)]
        fit = similarity_transform(points, self._unit_template)
        crops = {name: warp(frame_rgb, compose(layout, fit), size) for name, (size, layout) in self._layouts.items()}
        return FaceObservation(
            box=detection.box,
            score=detection.score,
            landmarks=landmarks,
            crop_rgb=crops.get("crop_rgb"),
            crop_gray=cv2.cvtColor(crops["crop_gray"], cv2.COLOR_RGB2GRAY),
            crop_rgb_large=crops.get("crop_rgb_large"),
            detector=detector,
            keypoints=detection.keypoints,
            points=points,
        )


def _by_priority(detections: list[_Detection]) -> list[_Detection]:
    return sorted(detections, key=lambda d: d.priority, reverse=True)
