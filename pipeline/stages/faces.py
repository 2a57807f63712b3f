"""Stage faces: detect, landmark and align faces on sampled frames of every video, link them
into tracks, and write the per-clip detection report (features/faces/report.csv)."""
from dataclasses import asdict

import pandas as pd

from pipeline.config import EXECUTION_KEYS, load_params
from pipeline.datasets.manifest import CLIPS, read_manifest
from pipeline.extraction import FaceClipProcessor, fill_store, jobs_from_manifest
from pipeline.store import FeatureStore, written_before

STORE = "features/faces"


def main() -> None:
    # The faces stage builds no registry component; skipping their validation (done by the
    # manifest stage before it, and by each extract/train stage) spares it importing torch.
    params = load_params(check_components=False)
    faces = params.faces
    manifest = read_manifest(CLIPS)
    identity = {"stage": "faces", **{k: v for k, v in asdict(faces).items() if k not in EXECUTION_KEYS}}
    processor = FaceClipProcessor(
        STORE, identity, faces.fps, faces.min_detection_confidence, faces.crop_size, faces.gray_size, faces.detector,
        faces.crop_rgb_224, faces.max_faces, faces.subject,
        faces.track_min_iou, faces.track_max_landmark_distance, faces.track_max_gap, faces.image_compression,
        faces.landmarks, faces.crop_rgb,
    )
    no_video = [
        {"clip_id": r.clip_id, "stage": "faces", "reason": f"{r.path}: no video stream"}
        for r in manifest[~manifest["has_video"]].itertuples()
    ]
    results, failures = fill_store(
        FeatureStore(STORE), jobs_from_manifest(manifest, "has_video"), processor, identity, "faces", faces.workers,
        executor=faces.executor, known_failures=no_video, num_gpus=faces.num_gpus,
    )
    frames = sum(r.frames for r in results)
    detected = sum(r.detected for r in results)
    print(f"faces: {len(results)} clips processed, {frames} frames sampled, detection rate {detected / max(frames, 1):.3f}")
    for failure in failures:
        print(f"  {failure['clip_id']}: {failure['reason']}")
    print_report(write_report(FeatureStore(STORE)))


REPORT_COLUMNS = ["clip_id", "frames", "detected_frames", "detection_rate", "subject_frames", "tracks", "full_range_frames"]


def write_report(store: FeatureStore) -> pd.DataFrame:
    """Per indexed clip: sampled frames, frames with a face, detection rate, frames of the main
    subject's track, number of tracks and frames found only by the full-range fallback. A clip
    whose entry was not written since the previous report keeps its row of that report."""
    path = store.root / "report.csv"
    previous, reported_at = {}, 0
    if path.exists():
        previous = {row["clip_id"]: row for row in pd.read_csv(path, dtype={"clip_id": str}).to_dict("records")}
        reported_at = path.stat().st_mtime_ns
    rows = []
    for clip_id in store.clip_ids():
        if clip_id in previous and written_before(store.path_of(clip_id), reported_at):
            rows.append(previous[clip_id])
            continue
        attrs = store.attrs(clip_id) or {}
        rows.append({column: attrs.get(column, clip_id if column == "clip_id" else None) for column in REPORT_COLUMNS})
    report = pd.DataFrame(rows, columns=REPORT_COLUMNS)
    report.to_csv(path, index=False)
    return report


def print_report(report: pd.DataFrame) -> None:
    if report.empty:
        print("faces report: no clips")
        return
    frames, detected = report["frames"].sum(), report["detected_frames"].sum()
    rates = report["detection_rate"].astype(float)
    print(
        f"faces report ({STORE}/report.csv): {len(report)} clips, detection rate {detected / max(frames, 1):.3f} overall, "
        f"per clip min {rates.min():.3f} / median {rates.median():.3f}; {(rates < 0.5).sum()} clips below 0.5; "
        f"{int(report['full_range_frames'].sum())} frames from the full-range fallback; "
        f"tracks per clip max {int(report['tracks'].max())}"
    )


if __name__ == "__main__":
    main()
