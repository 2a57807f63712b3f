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
    assert counts == {"listed": 6, "dropped_by_label_map": 0, "failed": 2, "kept": 4, "unlabeled": 0}


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


def csv_corpus(root, rows, labels=("happy", "sad"), **data):
    """labels.csv from dict rows (path, label, speaker, and optionally clip_id, audio_path)."""
    pd.DataFrame(rows).fillna("").to_csv(root / "labels.csv", index=False)
    return DataParams(dataset="csv", root=str(root), labels=list(labels), **data)


def test_a_broken_audio_file_keeps_the_video_and_the_reverse(tmp_path, clip_factory):
    for name in ("s1.mp4", "s2.mp4", "s3.mp4"):
        clip_factory(name, seconds=0.5)
    clip_factory("video_only.mp4", seconds=0.5, audio=False)
    clip_factory("voice.wav", seconds=0.5, video=False)
    (tmp_path / "broken.wav").write_bytes(b"RIFF" + bytes(range(256)) * 20)
    (tmp_path / "broken.mp4").write_bytes(b"not a video" * 50)
    params = csv_corpus(tmp_path, [
        {"path": "s1.mp4", "label": "happy", "speaker": "a"}, {"path": "s2.mp4", "label": "sad", "speaker": "b"},
        {"path": "s3.mp4", "label": "sad", "speaker": "c"},
        {"path": "video_only.mp4", "audio_path": "broken.wav", "label": "happy", "speaker": "a", "clip_id": "bad_audio"},
        {"path": "broken.mp4", "audio_path": "voice.wav", "label": "sad", "speaker": "b", "clip_id": "bad_video"},
        {"path": "broken.mp4", "audio_path": "broken.wav", "label": "sad", "speaker": "c", "clip_id": "bad_both"},
    ])
    manifest, failures, counts = build_manifest(params)
    media = manifest.set_index("clip_id")[["has_video", "has_audio"]].astype(bool)
    assert media.loc["bad_audio"].tolist() == [True, False]
    assert media.loc["bad_video"].tolist() == [False, True]
    assert "bad_both" not in media.index
    assert manifest.set_index("clip_id").loc["bad_video", "duration_s"] == pytest.approx(0.5, abs=0.05)  # from the wav
    reasons = pd.DataFrame(failures).groupby("clip_id")["reason"].apply(list).to_dict()
    assert set(reasons) == {"bad_audio", "bad_video", "bad_both"}
    [audio_reason] = reasons["bad_audio"]
    assert audio_reason.startswith(str(tmp_path / "broken.wav")) and "cannot open container" in audio_reason
    assert audio_reason.endswith("(the clip is used with its video only)")
    [video_reason] = reasons["bad_video"]
    assert str(tmp_path / "broken.mp4") in video_reason and video_reason.endswith("(the clip is used with its audio only)")
    [both] = reasons["bad_both"]
    assert str(tmp_path / "broken.mp4") in both and str(tmp_path / "broken.wav") in both
    assert {f["stage"] for f in failures} == {"manifest"}
    assert counts == {"listed": 6, "dropped_by_label_map": 0, "failed": 1, "kept": 5, "unlabeled": 0}


def test_duplicate_stems_name_every_file(tmp_path, clip_factory):
    (tmp_path / "a.webm").write_bytes(clip_factory("a.mkv", seconds=0.3).read_bytes())  # matroska inside
    clip_factory("b.mp4", seconds=0.3)
    rows = [{"path": name, "label": label, "speaker": name} for name, label in (("a.mkv", "happy"), ("a.webm", "sad"), ("b.mp4", "sad"))]
    with pytest.raises(DatasetError, match="duplicate clip ids: a ") as caught:
        build_manifest(csv_corpus(tmp_path, rows))
    assert f"a ({tmp_path / 'a.mkv'} and {tmp_path / 'a.webm'})" in str(caught.value)
    assert "clip_id column" in str(caught.value) and "b.mp4" not in str(caught.value)
    rows[0]["clip_id"], rows[1]["clip_id"] = "a_mkv", "a_webm"
    manifest, _, _ = build_manifest(csv_corpus(tmp_path, rows))
    assert manifest["clip_id"].tolist() == ["a_mkv", "a_webm", "b"]


def test_files_outside_the_root_are_refused_unless_allowed(tmp_path, clip_factory):
    root = tmp_path / "corpus"
    root.mkdir()
    for name in ("corpus/in1.mp4", "corpus/in2.mp4", "corpus/sub/in3.mp4", "elsewhere/out.mp4", "elsewhere/linked.mp4"):
        clip_factory(name, seconds=0.3)
    (root / "link.mp4").symlink_to(tmp_path / "elsewhere/linked.mp4")
    rows = [
        {"path": "in1.mp4", "label": "happy", "speaker": "a"}, {"path": "sub/../in2.mp4", "label": "sad", "speaker": "b"},
        {"path": "../elsewhere/out.mp4", "label": "sad", "speaker": "c"},
        {"path": str(tmp_path / "corpus/sub/in3.mp4"), "label": "happy", "speaker": "c"},  # absolute, but inside
        {"path": "link.mp4", "label": "happy", "speaker": "b", "audio_path": str(tmp_path / "elsewhere/out.mp4"), "clip_id": "l"},
    ]
    with pytest.raises(DatasetError, match=r"2 file\(s\) listed outside data.root") as caught:
        build_manifest(csv_corpus(root, rows))
    message = str(caught.value)
    assert "../elsewhere/out.mp4" in message and str(tmp_path / "elsewhere/out.mp4") in message
    assert "re-runs nothing" in message and "data.allow_outside_root: true" in message
    assert "in1.mp4" not in message and "in3.mp4" not in message and "link.mp4" not in message
    manifest, failures, _ = build_manifest(csv_corpus(root, rows, allow_outside_root=True))
    assert manifest["clip_id"].tolist() == ["in1", "in2", "in3", "l", "out"] and failures == []
    del rows[2]
    rows[-1]["audio_path"] = ""
    manifest, _, _ = build_manifest(csv_corpus(root, rows))  # a symlink under the root is tracked: accepted
    assert "l" in set(manifest["clip_id"])


def test_fewer_than_two_classes_is_an_error_naming_the_classes(tmp_path, clip_factory):
    rows = [("ok1.mp4", "joy", "a"), ("ok2.mp4", "joy", "b"), ("ok3.mp4", "bored", "c")]
    params = dataset(tmp_path, clip_factory, rows)
    params = DataParams(**{**params.__dict__, "label_map": {"joy": "happy", "bored": ""}})
    with pytest.raises(DatasetError, match=r"carry 1 class\(es\): happy \(2 clips\); a classification experiment needs at least two"):
        build_manifest(params)
    # The count is of usable clips: a class whose every file is broken does not count.
    (tmp_path / "ok3.mp4").write_bytes(b"")
    params = DataParams(**{**params.__dict__, "label_map": {"joy": "happy", "bored": "sad"}})
    with pytest.raises(DatasetError, match=r"happy \(2 clips\).*1 clip\(s\) had no usable media"):
        build_manifest(params)
