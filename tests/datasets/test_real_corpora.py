"""Adapters on the real corpora in the shared data folder (AVER_SHARED_DATA)."""
import pytest

from pipeline.config import DataParams
from pipeline.datasets.manifest import build_manifest


def test_emodb_has_535_files_from_10_speakers(shared_data):
    manifest, failures, _ = build_manifest(
        DataParams(dataset="emodb", root=str(shared_data / "emodb"),
                   labels=["anger", "boredom", "disgust", "fear", "happiness", "neutral", "sadness"])
    )
    assert len(manifest) == 535 and failures == []
    assert manifest["speaker"].nunique() == 10 and manifest["fold"].nunique() == 10
    assert manifest["label"].value_counts().to_dict() == {
        "anger": 127, "boredom": 81, "neutral": 79, "happiness": 71, "fear": 69, "sadness": 62, "disgust": 46}
    assert not manifest["has_video"].any() and manifest["has_audio"].all()


def test_crema_d_flash_video_with_mp3_audio(shared_data):
    manifest, failures, _ = build_manifest(
        DataParams(dataset="crema_d", root=str(shared_data / "crema-d-mini"),
                   labels=["angry", "disgust", "fear", "happy", "neutral", "sad"], group_by="clip")
    )
    assert len(manifest) == 6 and failures == []
    assert manifest["has_video"].all() and manifest["has_audio"].all()
    assert manifest["duration_s"].between(1.8, 2.4).all()
    assert manifest["speaker"].eq("1001").all() and manifest["fold"].nunique() == 6


def test_mead_clips_have_no_audio(shared_data):
    manifest, failures, _ = build_manifest(
        DataParams(dataset="mead", root=str(shared_data / "mead-mini"),
                   labels=["angry", "contempt", "disgusted", "fear", "happy", "neutral", "sad", "surprised"])
    )
    assert len(manifest) == 24 and failures == []
    assert manifest["speaker"].nunique() == 3
    assert manifest["has_video"].all() and not manifest["has_audio"].any()
