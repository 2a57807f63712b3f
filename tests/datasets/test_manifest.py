import pandas as pd
import pytest

from pipeline.config import DataParams
from pipeline.datasets import DatasetError
from pipeline.datasets.manifest import MANIFEST_COLUMNS, assign_folds, build_manifest


def dataset(tmp_path, clip_factory, rows, labels=("happy", "sad")):
    for file, *_ in rows:
        if file.startswith("ok") and not (tmp_path / file).exists():
            clip_factory(file, seconds=0.5)
    pd.DataFrame(rows, columns=["file", "label", "speaker"]).to_csv(tmp_path / "labels.csv", index=False)
    return DataParams(dataset="csv", root=str(tmp_path), labels=list(labels))


def test_manifest_rows_folds_and_failures(tmp_path, clip_factory):
    (tmp_path / "zero.mp4").write_bytes(b"")
    (tmp_path / "corrupt.mp4").write_bytes(b"not a video" * 50)
    clip_factory("ok_noaudio.mp4", seconds=0.5, audio=False)
    params = dataset(
        tmp_path,
        clip_factory,
        [("ok1.mp4", "happy", "s1"), ("ok2.mp4", "sad", "s2"), ("ok3.mp4", "sad", "s3"),
         ("zero.mp4", "sad", "s1"), ("corrupt.mp4", "happy", "s2"), ("ok_noaudio.mp4", "happy", "s3")],
    )
    manifest, failures, counts = build_manifest(params)
    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert manifest["clip_id"].tolist() == ["ok1", "ok2", "ok3", "ok_noaudio"]
    assert manifest.set_index("clip_id").loc["ok_noaudio", "has_audio"] == False  # noqa: E712
    assert manifest["has_video"].all()
    assert manifest["duration_s"].between(0.4, 0.7).all()
    assert manifest.groupby("speaker")["fold"].nunique().eq(1).all()
    assert manifest["fold"].nunique() == 3
    reasons = {f["clip_id"]: f["reason"] for f in failures}
    assert set(reasons) == {"zero", "corrupt"}
    assert "empty" in reasons["zero"] and "zero.mp4" in reasons["zero"]
    assert "corrupt.mp4" in reasons["corrupt"]
    assert counts == {"listed": 6, "dropped_by_label_map": 0, "failed": 2, "kept": 4}


def test_unknown_label_is_an_error_naming_the_files(tmp_path, clip_factory):
    params = dataset(tmp_path, clip_factory, [("ok1.mp4", "happy", "a"), ("ok2.mp4", "bored", "b")])
    with pytest.raises(DatasetError, match=r"ok2\.mp4 \(bored\)"):
        build_manifest(params)


def test_label_map_renames_and_drops(tmp_path, clip_factory):
    params = dataset(tmp_path, clip_factory, [("ok1.mp4", "joy", "a"), ("ok2.mp4", "bored", "b"), ("ok3.mp4", "sad", "b")])
    params = DataParams(**{**params.__dict__, "label_map": {"joy": "happy", "bored": ""}})
    manifest, _, counts = build_manifest(params)
    assert manifest["label"].tolist() == ["happy", "sad"]
    assert counts["dropped_by_label_map"] == 1


def test_duplicate_ids_and_missing_files_are_errors(tmp_path, clip_factory):
    params = dataset(tmp_path, clip_factory, [("ok1.mp4", "happy", "a"), ("sub/ok1.mp4", "sad", "b")])
    with pytest.raises(DatasetError, match="duplicate clip ids: ok1"):
        build_manifest(params)
    params = dataset(tmp_path, clip_factory, [("ok1.mp4", "happy", "a"), ("gone.mp4", "sad", "b")])
    with pytest.raises(DatasetError, match="gone.mp4"):
        build_manifest(params)


def test_k_folds_keep_speakers_together_and_balance_sizes():
    speakers = pd.Series(["a"] * 6 + ["b"] * 5 + ["c"] * 3 + ["d"] * 2)
    folds = assign_folds(speakers, 2)
    assert speakers.groupby(folds).size().tolist() == [8, 8]
    assert pd.DataFrame({"s": speakers, "f": folds}).groupby("s")["f"].nunique().eq(1).all()
    with pytest.raises(DatasetError, match="only 4 speakers"):
        assign_folds(speakers, 5)


def test_held_out_test_groups_and_official_split_get_fold_minus_one(tmp_path, clip_factory):
    rows = [("ok1.mp4", "happy", "s1"), ("ok2.mp4", "sad", "s2"), ("ok3.mp4", "sad", "s3"), ("ok4.mp4", "happy", "s4")]
    params = dataset(tmp_path, clip_factory, rows)
    manifest, _, _ = build_manifest(DataParams(**{**params.__dict__, "test_groups": ["s4"]}))
    folds = dict(zip(manifest["clip_id"], manifest["fold"]))
    assert folds["ok4"] == -1 and sorted(folds[c] for c in ("ok1", "ok2", "ok3")) == [0, 1, 2]

    table = pd.read_csv(tmp_path / "labels.csv")
    table["split"] = ["train", "train", "train", "val"]
    table.to_csv(tmp_path / "labels.csv", index=False)
    manifest, _, _ = build_manifest(DataParams(**{**params.__dict__, "test_split": "val"}))
    assert manifest.set_index("clip_id")["fold"].to_dict() == {"ok1": 0, "ok2": 1, "ok3": 2, "ok4": -1}
    with pytest.raises(DatasetError, match="test_split 'test' matches no clip"):
        build_manifest(DataParams(**{**params.__dict__, "test_split": "test"}))
