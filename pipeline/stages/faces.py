"""Stage faces: detect, landmark and align the main face on sampled frames of every video."""
from dataclasses import asdict

from pipeline.config import load_params
from pipeline.datasets.manifest import read_manifest
from pipeline.extraction import FaceClipProcessor, fill_store, jobs_from_manifest
from pipeline.store import FeatureStore

STORE = "features/faces"


def main() -> None:
    params = load_params()
    faces = params.faces
    manifest = read_manifest()
    identity = {"stage": "faces", **{k: v for k, v in asdict(faces).items() if k != "workers"}}
    processor = FaceClipProcessor(
        STORE, identity, faces.fps, faces.min_detection_confidence, faces.crop_size, faces.gray_size, faces.detector
    )
    no_video = [
        {"clip_id": r.clip_id, "stage": "faces", "reason": f"{r.path}: no video stream"}
        for r in manifest[~manifest["has_video"]].itertuples()
    ]
    results, failures = fill_store(
        FeatureStore(STORE), jobs_from_manifest(manifest, "has_video"), processor, identity, "faces", faces.workers, known_failures=no_video
    )
    frames = sum(r.frames for r in results)
    detected = sum(r.detected for r in results)
    print(f"faces: {len(results)} clips processed, {frames} frames sampled, detection rate {detected / max(frames, 1):.3f}")
    for failure in failures:
        print(f"  {failure['clip_id']}: {failure['reason']}")


if __name__ == "__main__":
    main()
