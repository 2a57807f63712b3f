"""Each adapter on a tiny tree with the corpus's real naming conventions (generated media)."""
from pathlib import Path

import pandas as pd
import pytest

from pipeline.config import DataParams
from pipeline.datasets import DATASETS, DatasetError, read_frame_targets
from pipeline.datasets.manifest import build_manifest


@pytest.fixture
def tree(tmp_path, clip_factory):
    def make(*names: str) -> Path:
        for name in names:
            clip_factory(name, seconds=0.3, size=32, video=not name.endswith(".wav"))
        return tmp_path

    return make


def clips(dataset: str, root: Path, **options) -> pd.DataFrame:
    cls = DATASETS.get(dataset)
    return cls(DATASETS.config(dataset, options, "data.options")).clips(root).set_index("clip_id")


def test_ravdess_modalities_channels_emotions_and_actors(tree):
    root = tree(
        "Actor_01/01-01-03-01-01-01-01.mp4",  # audio-video speech, happy
        "Actor_01/02-01-03-01-01-01-01.mp4",  # video-only copy of the same take
        "Actor_02/01-02-05-02-01-02-02.mp4",  # song, angry
        "Audio_Speech_Actors_01-24/Actor_02/03-01-08-01-02-01-02.wav",  # audio-only speech, surprised
    )
    table = clips("ravdess", root)
    assert list(table.index) == ["01-01-03-01-01-01-01"]
    assert table.loc["01-01-03-01-01-01-01", ["label", "speaker"]].tolist() == ["happy", "01"]
    everything = clips("ravdess", root, modalities=["01", "03"], vocal_channels=["01", "02"])
    assert everything.loc["01-02-05-02-01-02-02", "label"] == "angry"
    assert everything.loc["03-01-08-01-02-01-02", ["label", "speaker"]].tolist() == ["surprised", "02"]


def test_crema_d_pairs_video_with_wav_and_reads_crowd_ratings(tree):
    root = tree("VideoFlash/1001_DFA_ANG_XX.flv", "VideoFlash/1002_IEO_HAP_HI.flv", "AudioWAV/1001_DFA_ANG_XX.wav")
    table = clips("crema_d", root)
    assert table.loc["1001_DFA_ANG_XX", "label"] == "angry"
    assert table.loc["1001_DFA_ANG_XX", "audio_path"].endswith("AudioWAV/1001_DFA_ANG_XX.wav")
    assert table.loc["1002_IEO_HAP_HI", ["label", "speaker", "audio_path"]].tolist() == ["happy", "1002", ""]
    (root / "processedResults").mkdir()
    (root / "processedResults/summaryTable.csv").write_text(
        ",FileName,VoiceVote,VoiceLevel,FaceVote,FaceLevel,MultiModalVote,MultiModalLevel\n"
        "1,1001_DFA_ANG_XX,D,50,A,60,A:D,40\n2,1002_IEO_HAP_HI,H,80,H,90,N,70\n"
    )
    assert clips("crema_d", root, ratings="voice")["label"].tolist() == ["disgust", "happy"]
    assert clips("crema_d", root, ratings="multimodal")["label"].tolist() == ["", "neutral"]  # tie -> unlabeled


def test_afew_official_split_and_emotion_folders(tree):
    root = tree("Train_AFEW/Angry/000046280.avi", "Train_AFEW/Happy/000150720.avi", "Val_AFEW/Surprise/000339774.avi")
    table = clips("afew", root)
    assert table["label"].to_dict() == {"train/000046280": "angry", "train/000150720": "happy", "val/000339774": "surprise"}
    assert table["split"].tolist() == ["train", "train", "val"]


def test_vgaf_label_lists_and_class_folders(tree):
    root = tree("Train/10_1.mp4", "Train/11_2.mp4", "Val/3_7.mp4")
    (root / "Train_labels.txt").write_text("Vid_name Label\n10_1.mp4 1\n11_2.mp4 3\n")
    (root / "Val_labels.txt").write_text("Vid_name Label\n3_7.mp4 2\n")
    table = clips("vgaf", root)
    assert table["label"].to_dict() == {"train/10_1": "positive", "train/11_2": "negative", "val/3_7": "neutral"}
    (root / "Val_labels.txt").write_text("Vid_name Label\nmissing.mp4 2\n")
    with pytest.raises(DatasetError, match="missing.mp4"):
        clips("vgaf", root)


def test_affwild2_annotations_splits_and_ignored_frames(tree):
    root = tree("videos/batch1/118-30-640x480.mp4", "videos/batch2/video10_1.avi")
    annotations = root / "annotations/VA_Estimation_Challenge"
    (annotations / "Train_Set").mkdir(parents=True)
    (annotations / "Validation_Set").mkdir(parents=True)
    (annotations / "Train_Set/118-30-640x480.txt").write_text("valence,arousal\n0.1,0.2\n-5,-5\n0.3,0.4\n")
    (annotations / "Validation_Set/video10_1_left.txt").write_text("valence,arousal\n-0.2,0.5\n")
    table = clips("affwild2", root)
    assert table.loc["video10_1_left", ["speaker", "split"]].tolist() == ["video10_1", "val"]
    assert table.loc["118-30-640x480", "path"].endswith("118-30-640x480.mp4")
    times, values, valid = read_frame_targets(table.loc["118-30-640x480", "targets"], ["valence", "arousal"], fps=30.0)
    assert valid.tolist() == [True, False, True]
    assert times.tolist() == pytest.approx([0.0, 1 / 30, 2 / 30]) and values[2].tolist() == pytest.approx([0.3, 0.4])
    manifest, _, _ = build_manifest(DataParams(dataset="affwild2", root=str(root), labels=[]))
    assert set(manifest["split"]) == {"train", "val"}


def test_emodb_mead_folders_and_csv(tree):
    root = tree("wav/03a01Fa.wav", "wav/16b10Td.wav")
    assert clips("emodb", root)[["label", "speaker"]].to_dict("index") == {
        "03a01Fa": {"label": "happiness", "speaker": "03"}, "16b10Td": {"label": "sadness", "speaker": "16"}}
    root = tree("mead/M030_front_happy_level3_001.mp4")
    assert clips("mead", root / "mead").loc["M030_front_happy_level3_001", ["label", "speaker"]].tolist() == ["happy", "M030"]
    root = tree("folders/happy/spk1_a.mp4", "folders/sad/spk2_b.wav")
    table = clips("folders", root / "folders", speaker_pattern=r"^(spk\d+)_")
    assert table[["label", "speaker"]].to_dict("index") == {
        "happy/spk1_a": {"label": "happy", "speaker": "spk1"}, "sad/spk2_b": {"label": "sad", "speaker": "spk2"}}
    (root / "list.csv").write_text("path,label,speaker,split\nfolders/happy/spk1_a.mp4,happy,s1,train\n")
    table = clips("csv", root, table="list.csv")
    assert table.loc["spk1_a", ["label", "speaker", "split"]].tolist() == ["happy", "s1", "train"]


def test_label_map_drops_with_count_or_names_unmapped_files(tree):
    root = tree("Actor_01/01-01-02-01-01-01-01.mp4", "Actor_02/01-01-03-01-01-01-02.mp4", "Actor_03/01-01-05-01-01-01-03.mp4")
    base = dict(dataset="ravdess", root=str(root), labels=["happy", "angry"])
    with pytest.raises(DatasetError, match=r"01-01-02-01-01-01-01\.mp4 \(calm\)"):
        build_manifest(DataParams(**base))
    manifest, _, counts = build_manifest(DataParams(**base, label_map={"calm": ""}))
    assert manifest["clip_id"].tolist() == ["01-01-03-01-01-01-02", "01-01-05-01-01-01-03"]
    assert counts["dropped_by_label_map"] == 1


def test_single_speaker_corpus_needs_clip_grouping(tree):
    root = tree("Actor_01/01-01-03-01-01-01-01.mp4", "Actor_01/01-01-05-02-01-01-01.mp4")
    base = dict(dataset="ravdess", root=str(root), labels=["happy", "angry"])
    with pytest.raises(DatasetError, match="data.group_by: clip"):
        build_manifest(DataParams(**base))
    manifest, _, _ = build_manifest(DataParams(**base, group_by="clip"))
    assert manifest["fold"].tolist() == [0, 1]


def test_unknown_adapter_option_is_a_params_error(tmp_path):
    from pipeline.config import ParamsError

    with pytest.raises(ParamsError, match=r"data\.options: unknown key\(s\) \['modality'\]"):
        DATASETS.config("ravdess", {"modality": ["01"]}, "data.options")


def test_ravdess_with_only_audio_only_files_names_the_count_and_the_option(tmp_path):
    for actor in (1, 2):
        for emotion in ("03", "05", "08"):
            path = tmp_path / f"Actor_{actor:02d}" / f"03-01-{emotion}-01-01-01-{actor:02d}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()  # the adapter reads names only
    with pytest.raises(DatasetError, match=r"no clips found: 6 audio-only files \(modality 03\) skipped; set data\.options\.modalities"):
        clips("ravdess", tmp_path)
    assert len(clips("ravdess", tmp_path, modalities=["03"])) == 6
    adapter = DATASETS.get("ravdess")(DATASETS.config("ravdess", {"vocal_channels": ["02"], "modalities": ["03"]}, "data.options"))
    with pytest.raises(DatasetError, match=r"6 speech files \(vocal channel 01\) skipped; set data\.options\.vocal_channels"):
        adapter.clips(tmp_path)


def test_every_adapter_declares_defaults_that_validate():
    from pipeline.config import from_dict
    from pipeline.datasets import dataset_defaults

    for name in DATASETS.names():
        defaults = dataset_defaults(name)
        data = from_dict(DataParams, {**defaults, "root": "x"}, "data")
        DATASETS.config(name, data.options, "data.options", "data.dataset")
        assert data.labels == list(dict.fromkeys(data.labels))  # no class twice
    assert dataset_defaults("ravdess")["options"] == {"modalities": ["01"], "vocal_channels": ["01"]}
    assert dataset_defaults("ravdess")["labels"][:3] == ["neutral", "calm", "happy"]
