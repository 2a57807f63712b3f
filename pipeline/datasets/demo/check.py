"""Acceptance diagnostics for a generated demo dataset.

    python -m pipeline.datasets.demo.check OUT_DIR [--generate]

Reports MediaPipe face-detection rates, and a speaker-independent
(leave-one-speaker-out) logistic-regression check that each modality alone is
informative but imperfect and that their fusion is clearly better.  The features
are deliberately simple and generic; they are not tuned to the generator.

If ``librosa.pyin`` crashes with a segmentation fault, librosa's on-disk numba
cache is stale (seen in a shared virtualenv); point NUMBA_CACHE_DIR at a private
folder.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import av
import librosa
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, confusion_matrix
from sklearn.model_selection import LeaveOneGroupOut, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .generator import BAD_CLIPS, DemoSpec, generate
from .landmarks import FaceFrame

VISUAL_FEATURES = ["mouth_width", "mouth_open", "corner_drop", "inner_brow", "outer_brow",
                   "brow_gap", "eye_open", "nose_to_lip", "lip_height"]


def decode_video(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def decode_audio(path: Path) -> tuple[np.ndarray, int]:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        chunks = [f.to_ndarray().reshape(-1) for f in container.decode(stream)]
        return np.concatenate(chunks).astype(np.float32), stream.rate


def face_detection_rate(frames: np.ndarray) -> float:
    import mediapipe as mp

    with mp.solutions.face_detection.FaceDetection(model_selection=0,
                                                   min_detection_confidence=0.5) as detector:
        return float(np.mean([detector.process(f).detections is not None for f in frames]))


def mesh_geometry(landmarks: np.ndarray) -> np.ndarray:
    """Face-aligned expression measures in eye-distance units (y grows towards the chin)."""
    frame = FaceFrame.from_landmarks(landmarks)
    rel = landmarks - frame.centre
    u, v = rel @ frame.x_axis / frame.iod, rel @ frame.y_axis / frame.iod
    return np.array([
        abs(u[291] - u[61]),
        v[14] - v[13],
        (v[61] + v[291]) / 2 - (v[13] + v[14]) / 2,
        -(v[107] + v[336]) / 2,
        -(v[70] + v[300]) / 2,
        abs(u[336] - u[107]),
        ((v[145] - v[159]) + (v[374] - v[386])) / 2,
        v[0] - v[1],
        v[17] - v[0],
    ])


def visual_features(frames: np.ndarray, step: int = 2) -> np.ndarray | None:
    """Geometry averaged around the apex: the sampled frame farthest from the first ones."""
    import mediapipe as mp

    geometry = []
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=False, refine_landmarks=True,
                                         max_num_faces=1) as mesh:
        for rgb in frames[::step]:
            result = mesh.process(rgb)
            if result.multi_face_landmarks:
                points = result.multi_face_landmarks[0].landmark
                landmarks = np.array([[p.x, p.y] for p in points]) * rgb.shape[1::-1]
                geometry.append(mesh_geometry(landmarks))
    if len(geometry) < 5:
        return None
    geometry = np.array(geometry)
    spread = geometry.std(0) + 1e-6
    distance = np.linalg.norm((geometry - np.median(geometry[:3], 0)) / spread, axis=1)
    apex = int(np.argmax(distance))
    return geometry[max(0, apex - 2):apex + 3].mean(0)


def audio_features(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    hop = sample_rate // 100
    f0, voiced, _ = librosa.pyin(audio, fmin=70, fmax=500, sr=sample_rate, frame_length=1024,
                                 hop_length=hop)
    semitones = 12 * np.log2(f0[voiced] / 100) if voiced.sum() > 2 else np.zeros(3)
    times = np.flatnonzero(voiced) * hop / sample_rate if voiced.sum() > 2 else np.arange(3)
    rms = librosa.feature.rms(y=audio, frame_length=1024, hop_length=hop)[0]
    loud = rms > 0.1 * rms.max()
    rms_db = 20 * np.log10(rms[loud] + 1e-8)
    spectrum = np.abs(librosa.stft(audio, n_fft=1024, hop_length=hop))[:, loud]
    centroid = librosa.feature.spectral_centroid(S=spectrum, sr=sample_rate)[0]
    freqs = librosa.fft_frequencies(sr=sample_rate, n_fft=1024)
    band = (freqs > 100) & (freqs < 5000)
    tilt = np.polyfit(freqs[band] / 1000, 20 * np.log10(spectrum[band].mean(1) + 1e-8), 1)[0]
    mel = librosa.power_to_db(librosa.feature.melspectrogram(S=spectrum ** 2, sr=sample_rate,
                                                             n_mels=20))
    onsets = librosa.onset.onset_detect(y=audio, sr=sample_rate, hop_length=hop)
    return np.concatenate([
        [semitones.mean(), semitones.std(), np.ptp(semitones), np.polyfit(times, semitones, 1)[0],
         voiced.mean(), rms_db.mean(), rms_db.std(), np.percentile(rms_db, 95), centroid.mean(),
         tilt, len(onsets) / (len(audio) / sample_rate)],
        mel.mean(1)])


def loso_uar(features: np.ndarray, labels: np.ndarray,
             speakers: np.ndarray) -> tuple[float, np.ndarray]:
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000))
    predicted = cross_val_predict(model, features, labels, groups=speakers, cv=LeaveOneGroupOut())
    return balanced_accuracy_score(labels, predicted), confusion_matrix(labels, predicted)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--generate", action="store_true", help="generate the default spec first")
    args = parser.parse_args()
    if args.generate:
        start = time.perf_counter()
        generate(args.out_dir, DemoSpec())
        print(f"generation time: {time.perf_counter() - start:.1f} s")

    labels = pd.read_csv(args.out_dir / "labels.csv")
    good = labels[~labels.clip_id.isin(BAD_CLIPS)].reset_index(drop=True)
    detection, visual, acoustic = [], [], []
    for row in good.itertuples():
        frames = decode_video(args.out_dir / row.file)
        sample = np.linspace(0, len(frames) - 1, 5).round().astype(int)
        detection.append(face_detection_rate(frames[sample]))
        visual.append(visual_features(frames))
        acoustic.append(audio_features(*decode_audio(args.out_dir / row.file)))
    print(f"face detection rate, good clips: {np.mean(detection):.3f} "
          f"(worst clip {np.min(detection):.2f})")
    if "bad_no_face" in set(labels.clip_id):
        frames = decode_video(args.out_dir / "clips" / "bad_no_face.mp4")
        print(f"face detection rate, bad_no_face: {face_detection_rate(frames):.3f}")

    missing = [i for i, f in enumerate(visual) if f is None]
    if missing:
        print(f"FaceMesh failed on {len(missing)} clips; they are left out of the check")
    keep = [i for i in range(len(good)) if i not in missing]
    y, speakers = good.label.to_numpy()[keep], good.speaker.to_numpy()[keep]
    visual_x = np.array([visual[i] for i in keep])
    audio_x = np.array([acoustic[i] for i in keep])
    classes = sorted(set(y))
    print("\nmean face geometry at the apex (eye-distance units):")
    print(pd.DataFrame(visual_x, columns=VISUAL_FEATURES).groupby(y).mean().round(3).to_string())
    for name, x in [("visual", visual_x), ("audio", audio_x),
                    ("fused", np.hstack([visual_x, audio_x]))]:
        uar, matrix = loso_uar(x, y, speakers)
        print(f"\n{name}: leave-one-speaker-out UAR {uar:.3f}")
        print(pd.DataFrame(matrix, index=classes, columns=classes).to_string())


if __name__ == "__main__":
    main()
