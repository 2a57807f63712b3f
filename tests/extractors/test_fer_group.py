"""fer_mini_xception over every face of a frame (faces: mean) for group emotion."""
from __future__ import annotations

import numpy as np
import pytest
import skimage.data

from pipeline.extraction import ClipJob, ExtractorClipProcessor
from pipeline.extractors import EXTRACTORS
from pipeline.faces import FaceAnalyzer
from pipeline.store import Entry, FeatureStore


def fer(**options):
    return EXTRACTORS.get("fer_mini_xception")(EXTRACTORS.config("fer_mini_xception", options, "fer"), "cpu", 4)


@pytest.fixture(scope="module")
def group_arrays() -> dict[str, np.ndarray]:
    """3 frames x 2 slots of real crops: slot 1 is a mirrored face; slot 1 empty in frame 1, both empty in frame 2."""
    image = skimage.data.astronaut()
    with FaceAnalyzer() as analyzer:
        crops = np.stack([analyzer.analyze(np.ascontiguousarray(image[20 + 4 * i : 276 + 4 * i, 100:356])).crop_gray for i in range(3)])
    tracks = np.stack([crops, crops[:, :, ::-1]], axis=1).copy()
    tracks_mask = np.array([[1, 1], [1, 0], [0, 0]], np.uint8)
    tracks[tracks_mask == 0] = 0
    return {"crop_gray": tracks[:, 0].copy(), "mask": tracks_mask[:, 0].copy(), "timestamps": np.arange(3) * 0.2,
            "tracks_crop_gray": tracks, "tracks_mask": tracks_mask}


def test_mean_over_visible_faces(group_arrays):
    main = fer().extract(Entry("g", group_arrays, {}))
    mean = fer(faces="mean").extract(Entry("g", group_arrays, {}))
    per_face = fer().embed(group_arrays["tracks_crop_gray"][:, 1], np.ones(3, bool))
    np.testing.assert_allclose(mean.data[0], (main.data[0] + per_face[0]) / 2, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mean.data[1], main.data[1], rtol=1e-6)  # one face visible: its own output
    assert (mean.data[2] == 0).all() and list(mean.mask) == [1, 1, 0]
    assert not np.allclose(per_face[0], main.data[0])  # the two faces really differ


def test_mean_reads_the_track_arrays_and_says_when_they_are_missing(tmp_path, group_arrays):
    store = FeatureStore(tmp_path / "faces")
    store.write("g", group_arrays, {})
    store.write_index(["g"])
    processor = ExtractorClipProcessor(str(store.root), str(tmp_path / "fer"), "fer_mini_xception", {"faces": "mean"}, "cpu", 8)
    processor(ClipJob("g", "g.mp4"))
    stored = FeatureStore(tmp_path / "fer").read("g").arrays
    assert stored["data"].shape == (3, 135) and list(stored["mask"]) == [1, 1, 0]
    single = {k: v for k, v in group_arrays.items() if not k.startswith("tracks_")}
    with pytest.raises(KeyError, match="max_faces"):
        fer(faces="mean").extract(Entry("g", single, {}))
    assert fer().identity() != fer(faces="mean").identity()
