"""How closely crops aligned from the detector's keypoints match the mesh-aligned ones.

    python bench/face_alignment.py [--fps 5] [--clips DIR ...] [--fit] [--fer]

On the MEAD and CREMA-D clips of ``$AVER_SHARED_DATA`` (else ``../shared/data``), the two
photographs the demo identities are made from, and any ``--clips`` folders (e.g. a generated
``data/demo``), it runs the mesh analyzer (which also yields the detector's keypoints) on
frames sampled at ``--fps`` and prints, per person and overall:

* crop agreement: the mean distance between where the mesh's five alignment points land in
  the ArcFace crop under the mesh alignment and under the keypoint alignment, over the
  crop's inter-ocular distance (0 = the same crop; 0.1 = features a tenth of the eye
  distance apart), with the shipped ``KEYPOINT_TEMPLATE``, with a template fitted on the
  other people only (leave one person out), and with the naive template (the ArcFace eye and
  nose points and the mouth corners' midpoint);
* with ``--fit``, the template fitted on everyone: the mean of each person's mean keypoint
  positions in the mesh-aligned crop (people weigh equally, however many frames they have);
* with ``--fer``, the frozen FER2013 mini-Xception on both gray crops of the same MEAD frames
  (7 classes MEAD shares with FER2013): frame-level zero-shot accuracy and mean probability of
  the true class per alignment, and how often the two crops get the same top class. Finer
  than the clip-level figures of bench/mead_visual_accuracy.py (21 clips).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.faces import CANONICAL_TEMPLATE, five_points, similarity_transform  # noqa: E402
from pipeline.faces.template import ALIGNMENT_KEYPOINTS, KEYPOINT_TEMPLATE  # noqa: E402

INTER_OCULAR = float(np.linalg.norm(CANONICAL_TEMPLATE[1] - CANONICAL_TEMPLATE[0]))
NAIVE_TEMPLATE = np.vstack([CANONICAL_TEMPLATE[:3], CANONICAL_TEMPLATE[3:].mean(0)])


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def crop_agreement(landmarks: np.ndarray, keypoints: np.ndarray, template: np.ndarray = KEYPOINT_TEMPLATE) -> np.ndarray:
    """Per face ([N, 478, 2|3] meshes, [N, 6, 2] keypoints): mean distance between the mesh's
    five points mapped by the mesh alignment and by the keypoint alignment (``template``),
    over the ArcFace crop's inter-ocular distance."""
    result = np.empty(len(landmarks))
    for i, (mesh, points) in enumerate(zip(landmarks, keypoints)):
        five = five_points(mesh).astype(np.float64)
        by_mesh = similarity_transform(five, CANONICAL_TEMPLATE)
        by_keypoints = similarity_transform(points[list(ALIGNMENT_KEYPOINTS)], template)
        result[i] = np.linalg.norm(_apply(by_mesh, five) - _apply(by_keypoints, five), axis=1).mean() / INTER_OCULAR
    return result


def keypoints_in_mesh_crop(landmarks: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    """[N, 4, 2]: the alignment keypoints in the mesh-aligned crop's unit coordinates."""
    return np.stack([
        _apply(similarity_transform(five_points(mesh), CANONICAL_TEMPLATE), points[list(ALIGNMENT_KEYPOINTS)])
        for mesh, points in zip(landmarks, keypoints)
    ])


def _photos() -> dict[str, list[np.ndarray]]:
    import matplotlib.cbook
    import skimage.data

    hopper = cv2.imread(str(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    return {"photo:astronaut": [skimage.data.astronaut()], "photo:grace_hopper": [cv2.cvtColor(hopper, cv2.COLOR_BGR2RGB)]}


def people(shared: Path, extra: list[Path], fps: float) -> dict[str, list[np.ndarray]]:
    """Person -> sampled RGB frames. MEAD and CREMA-D name the actor before the first '_';
    other folders count as one person per clip."""
    from pipeline.media import sample_frames

    frames: dict[str, list[np.ndarray]] = _photos()
    sources = [("mead", sorted((shared / "mead-mini").glob("*.mp4"))), ("crema-d", sorted((shared / "crema-d-mini").glob("*.flv")))]
    sources += [(folder.name, sorted(p for p in folder.iterdir() if p.suffix in (".mp4", ".flv", ".avi", ".mkv"))) for folder in extra]
    for corpus, clips in sources:
        for clip in clips:
            person = f"{corpus}:{clip.stem.split('_')[0] if corpus in ('mead', 'crema-d') else clip.stem}"
            try:
                frames.setdefault(person, []).extend(frame for _, frame in sample_frames(clip, fps))
            except Exception as error:  # noqa: BLE001 (the demo's deliberately broken clips)
                print(f"  skipped {clip.name}: {error}")
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fps", type=float, default=5.0)
    parser.add_argument("--clips", type=Path, nargs="*", default=[], help="more folders of clips (one person per clip)")
    parser.add_argument("--fit", action="store_true", help="print the template fitted on every person")
    parser.add_argument("--fer", action="store_true", help="also FER2013 on both crops of the MEAD frames")
    args = parser.parse_args()
    shared = Path(os.environ.get("AVER_SHARED_DATA") or REPO.parent / "shared" / "data")

    from pipeline.faces import FaceAnalyzer

    meshes, keypoints = {}, {}
    frames_of = people(shared, args.clips, args.fps)
    with FaceAnalyzer(landmarks="mesh") as analyzer:
        for person, frames in frames_of.items():
            faces = [face for face in map(analyzer.analyze, frames) if face is not None]
            if faces:
                meshes[person] = np.stack([f.landmarks for f in faces])
                keypoints[person] = np.stack([f.keypoints for f in faces])
    positions = {p: keypoints_in_mesh_crop(meshes[p], keypoints[p]) for p in meshes}
    person_means = {p: positions[p].mean(0) for p in positions}

    print(f"crop agreement: mean 5-point distance / inter-ocular distance, faces sampled at {args.fps:g} fps")
    print(f"{'person':<26}{'faces':>6}{'shipped':>10}{'p95':>7}{'held out':>10}{'naive':>8}")
    everything = {"shipped": [], "held out": [], "naive": []}
    for person in meshes:
        held_out = np.mean([m for q, m in person_means.items() if q != person], axis=0) if len(person_means) > 1 else KEYPOINT_TEMPLATE
        rows = {
            "shipped": crop_agreement(meshes[person], keypoints[person]),
            "held out": crop_agreement(meshes[person], keypoints[person], held_out),
            "naive": crop_agreement(meshes[person], keypoints[person], NAIVE_TEMPLATE),
        }
        for name, values in rows.items():
            everything[name].append(values)
        print(f"{person:<26}{len(meshes[person]):>6}{rows['shipped'].mean():>10.3f}{np.percentile(rows['shipped'], 95):>7.3f}"
              f"{rows['held out'].mean():>10.3f}{rows['naive'].mean():>8.3f}")
    pooled = {name: np.concatenate(values) for name, values in everything.items()}
    per_person = {name: np.mean([v.mean() for v in values]) for name, values in everything.items()}
    print(f"{'all faces':<26}{len(pooled['shipped']):>6}{pooled['shipped'].mean():>10.3f}"
          f"{np.percentile(pooled['shipped'], 95):>7.3f}{pooled['held out'].mean():>10.3f}{pooled['naive'].mean():>8.3f}")
    print(f"{'mean over people':<26}{len(meshes):>6}{per_person['shipped']:>10.3f}{'':>7}"
          f"{per_person['held out']:>10.3f}{per_person['naive']:>8.3f}")
    if args.fit:
        fitted = np.mean(list(person_means.values()), axis=0)
        print(f"\nfitted on {len(person_means)} people ({', '.join(person_means)}):")
        print("KEYPOINT_TEMPLATE = [" + ", ".join(f"[{x:.4f}, {y:.4f}]" for x, y in fitted) + "]")
        spread = np.std(list(person_means.values()), axis=0)
        print("spread of the per-person means (std):", np.round(spread, 4).tolist())
    if args.fer:
        fer_on_both_crops(shared / "mead-mini", args.fps)


MEAD_TO_FER = {"angry": "angry", "disgusted": "disgust", "fear": "fear", "happy": "happy", "neutral": "neutral",
               "sad": "sad", "surprised": "surprise"}


def fer_on_both_crops(mead: Path, fps: float) -> None:
    """Frame-level zero-shot FER2013 on the mesh- and the keypoint-aligned gray crop of every
    MEAD frame whose emotion FER2013 has."""
    from pipeline.extractors import EXTRACTORS
    from pipeline.extractors.mini_xception import FER_CLASSES
    from pipeline.faces import FaceAnalyzer
    from pipeline.media import sample_frames

    fer = EXTRACTORS.get("fer_mini_xception")(EXTRACTORS.config("fer_mini_xception", {}, "fer"), "cpu", 64)
    crops = {"mesh": [], "keypoints": []}
    truth, clips = [], []
    with FaceAnalyzer(landmarks="mesh", crop_size=0) as by_mesh, FaceAnalyzer(landmarks="keypoints", crop_size=0) as by_keypoints:
        for clip in sorted(mead.glob("*.mp4")):
            emotion = clip.stem.split("_")[2]
            if emotion not in MEAD_TO_FER:
                continue
            for _, frame in sample_frames(clip, fps):
                mesh_face, keypoint_face = by_mesh.analyze(frame), by_keypoints.analyze(frame)
                if mesh_face is None or keypoint_face is None:
                    continue
                crops["mesh"].append(mesh_face.crop_gray)
                crops["keypoints"].append(keypoint_face.crop_gray)
                truth.append(FER_CLASSES.index(MEAD_TO_FER[emotion]))
                clips.append(clip.stem)
    truth, clips = np.array(truth), np.array(clips)
    probabilities = {}
    for mode, stack in crops.items():
        logits = fer.embed(np.stack(stack), np.ones(len(stack), bool))[:, 128:]
        exp = np.exp(logits - logits.max(1, keepdims=True))
        probabilities[mode] = exp / exp.sum(1, keepdims=True)
    print(f"\nFER2013 mini-Xception, zero-shot on {len(truth)} MEAD frames ({len(set(clips))} clips, 7 shared classes)")
    print(f"{'alignment':<12}{'frame accuracy':>16}{'p(true class)':>15}{'clip accuracy':>15}")
    for mode, p in probabilities.items():
        clip_correct = [p[clips == c].mean(0).argmax() == truth[clips == c][0] for c in sorted(set(clips))]
        print(f"{mode:<12}{(p.argmax(1) == truth).mean():>16.3f}{p[np.arange(len(truth)), truth].mean():>15.3f}"
              f"{f'{sum(clip_correct)}/{len(clip_correct)}':>15}")
    same = (probabilities["mesh"].argmax(1) == probabilities["keypoints"].argmax(1)).mean()
    difference = np.abs(probabilities["mesh"] - probabilities["keypoints"]).sum(1).mean() / 2
    print(f"same top class on both crops: {same:.3f} of the frames; mean total-variation distance "
          f"between the two probability vectors: {difference:.3f}")


if __name__ == "__main__":
    main()
