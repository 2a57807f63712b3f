"""The demo dataset generator: files, labels, decodability, bad clips, determinism."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest

from pipeline.datasets.demo.generator import (BAD_CLIPS, LABEL_COLUMNS, VA_COLUMNS, DemoSpec,
                                              generate)

SPEC = DemoSpec(seed=7, identities=4, emotions=["neutral", "happy", "surprise"], takes=1,
                min_duration_s=1.0, max_duration_s=1.6)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("demo")
    return out, generate(out, SPEC, workers=2)


@pytest.fixture(scope="module")
def demo_again(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    # In-process this time: the output must not depend on the worker count.
    out = tmp_path_factory.mktemp("demo_again")
    return out, generate(out, SPEC, workers=1)


def good_rows(labels: pd.DataFrame) -> pd.DataFrame:
    return labels[~labels.clip_id.isin(BAD_CLIPS)]


def first_frame_and_audio(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0)).to_ndarray(format="rgb24")
    with av.open(str(path)) as container:
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
    return frame, audio


def faces_found(path: Path, frames: int = 5) -> int:
    import mediapipe as mp

    with av.open(str(path)) as container:
        images = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    sample = np.linspace(0, len(images) - 1, frames).round().astype(int)
    with mp.solutions.face_detection.FaceDetection(model_selection=0,
                                                   min_detection_confidence=0.5) as detector:
        return sum(detector.process(images[i]).detections is not None for i in sample)


def test_labels_table_and_files(demo):
    out, labels = demo
    assert list(labels.columns) == LABEL_COLUMNS
    pd.testing.assert_frame_equal(pd.read_csv(out / "labels.csv"), labels, check_dtype=False)
    assert len(labels) == SPEC.identities * len(SPEC.emotions) * SPEC.takes + len(BAD_CLIPS)
    assert labels.clip_id.is_unique
    assert set(labels.label) <= set(SPEC.emotions)
    assert labels.speaker.nunique() == SPEC.identities
    bad = labels.set_index("clip_id").loc[list(BAD_CLIPS)]
    assert set(bad.speaker) <= set(good_rows(labels).speaker)
    for row in labels.itertuples():
        assert (out / row.file).is_file()
        assert row.file == f"clips/{row.clip_id}.mp4"
        assert SPEC.min_duration_s - 0.05 <= row.duration_s <= SPEC.max_duration_s + 0.05


def test_good_clips_decode_with_expected_streams(demo):
    out, labels = demo
    for row in good_rows(labels).itertuples():
        with av.open(str(out / row.file)) as container:
            video, audio = container.streams.video[0], container.streams.audio[0]
            assert video.codec_context.name == "h264"
            assert video.average_rate == SPEC.fps
            assert audio.codec_context.name == "aac"
            assert audio.rate == SPEC.sample_rate
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video)]
        assert len(frames) == round(row.duration_s * SPEC.fps)
        assert frames[0].shape == (SPEC.size, SPEC.size, 3)
        _, samples = first_frame_and_audio(out / row.file)
        # AAC pads to whole 1024-sample frames.
        assert abs(len(samples) / SPEC.sample_rate - row.duration_s) < 0.1
        assert np.abs(samples).max() > 0.01


def test_faces_are_detectable(demo):
    out, labels = demo
    for row in good_rows(labels).itertuples():
        assert faces_found(out / row.file) == 5, row.clip_id


def test_bad_clips_behave_as_named(demo):
    out, _ = demo
    clips = out / "clips"
    assert (clips / "bad_zero_bytes.mp4").stat().st_size == 0

    with pytest.raises(av.error.FFmpegError):
        with av.open(str(clips / "bad_corrupt.mp4")) as container:
            for _ in container.decode(video=0):
                pass

    with av.open(str(clips / "bad_no_audio.mp4")) as container:
        assert len(container.streams.audio) == 0
        assert len(container.streams.video) == 1
    assert faces_found(clips / "bad_no_audio.mp4") > 0

    with av.open(str(clips / "bad_no_face.mp4")) as container:
        assert len(container.streams.audio) == 1
    assert faces_found(clips / "bad_no_face.mp4", frames=10) == 0


def test_va_curves_have_one_row_per_frame(demo):
    out, labels = demo
    for row in labels.itertuples():
        va = pd.read_csv(out / "va" / f"{row.clip_id}.csv")
        assert list(va.columns) == VA_COLUMNS
        assert len(va) == round(row.duration_s * SPEC.fps)
        assert va.frame.tolist() == list(range(len(va)))
        assert va[["valence", "arousal"]].abs().le(1).all().all()
        if row.label == "neutral":
            assert va[["valence", "arousal"]].abs().max().max() < 0.2
        if row.label == "happy":
            assert va.valence.max() > 0.1


def test_generation_is_deterministic(demo, demo_again):
    (out, labels), (out_again, labels_again) = demo, demo_again
    pd.testing.assert_frame_equal(labels, labels_again)
    for row in labels.itertuples():
        path, path_again = out / row.file, out_again / row.file
        if row.clip_id not in ("bad_zero_bytes", "bad_corrupt", "bad_no_audio"):
            frame, audio = first_frame_and_audio(path)
            frame_again, audio_again = first_frame_and_audio(path_again)
            np.testing.assert_array_equal(frame, frame_again)
            np.testing.assert_array_equal(audio, audio_again)
        # Byte-identical files keep DVC's output hashes stable between runs.
        assert path.read_bytes() == path_again.read_bytes(), row.clip_id
        va = Path("va") / f"{row.clip_id}.csv"
        assert (out / va).read_text() == (out_again / va).read_text()


def test_invalid_specs_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown emotions"):
        generate(tmp_path, DemoSpec(emotions=["neutral", "bored"]))
    with pytest.raises(ValueError, match="identities"):
        generate(tmp_path, DemoSpec(identities=3))


def test_the_demo_data_stage_generates_nothing_for_a_corpus_experiment(tmp_path, monkeypatch):
    import yaml

    from pipeline.stages import demo_data

    repo = Path(__file__).resolve().parents[2]
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"].update(dataset="emodb", root="/corpora/emodb", labels=["anger", "neutral"])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    demo_data.main()
    assert [p.name for p in (tmp_path / "data" / "demo").iterdir()] == [demo_data.NOTE]
