"""Dataset adapters: each turns a corpus as downloaded into rows of
(clip_id, path, audio_path, label, speaker, split, targets).

- ``path``: the media file the faces stage reads (and the audio stage, unless ``audio_path``
  names a separate audio file);
- ``speaker``: the group that must not straddle folds (actor, video, or the clip itself);
- ``split``: the corpus's official partition (``train``, ``val``, ``test``) or empty;
- ``targets``: for continuous corpora, a per-frame annotation file (empty otherwise).

Registering one is one class plus one decorator line; its options come from
``data.options`` in params.yaml, validated against the class's ``Config``. An adapter also
declares the corpus's defaults (``labels``, ``folds``, ``group_by``, ``test_split``): a setup
applied with ``--dataset`` (:mod:`pipeline.setups`) writes them, and the options' defaults,
into params.yaml (see :func:`dataset_defaults`), so that ``-S data.options.<key>=...``
overrides an option without DVC's ``+``.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from pipeline.registry import Registry

CLIP_COLUMNS = ["clip_id", "path", "audio_path", "label", "speaker", "split", "targets"]
VIDEO_SUFFIXES = (".mp4", ".avi", ".flv", ".mkv", ".mov", ".webm", ".mpg")
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".m4a", ".ogg")


class DatasetError(ValueError):
    """The dataset on disk does not match what its adapter expects."""


class DatasetAdapter:
    """Lists the clips of a corpus; ``root`` is the corpus folder as downloaded."""

    registry_name: ClassVar[str]
    Config: ClassVar[type]
    # The corpus's defaults for the data block (classes in their conventional order; 0 folds:
    # leave one group out), which a setup applied with --dataset writes into params.yaml.
    labels: ClassVar[list[str]] = []
    folds: ClassVar[int] = 0
    group_by: ClassVar[str] = "speaker"
    test_split: ClassVar[str] = ""

    def __init__(self, config: Any) -> None:
        self.config = config
        # Files the adapter found and did not list, as "<count> <what> skipped; set <option>" notes.
        self.skipped: list[str] = []

    def clips(self, root: Path) -> pd.DataFrame:
        raise NotImplementedError


DATASETS: Registry[type[DatasetAdapter]] = Registry("dataset")


def dataset_defaults(name: str) -> dict[str, Any]:
    """The data block of params.yaml for adapter ``name`` with the corpus's own defaults (root
    excepted): its labels, options (every key, at its default), folds, grouping, test split."""
    cls = DATASETS.get(name)
    return {"dataset": name, "options": asdict(cls.Config()), "labels": list(cls.labels), "label_map": {},
            "folds": cls.folds, "group_by": cls.group_by, "test_split": cls.test_split, "test_groups": []}


def clip_table(rows: list[dict[str, str]], root: Path, skipped: list[str] = ()) -> pd.DataFrame:
    if not rows:
        raise DatasetError(f"{root}: no clips found" + (f": {'; '.join(skipped)}" if skipped else ""))
    table = pd.DataFrame(rows)
    for column in CLIP_COLUMNS:
        if column not in table.columns:
            table[column] = ""
    return table[CLIP_COLUMNS].fillna("")


def media_files(root: Path, suffixes: tuple[str, ...]) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in suffixes and p.is_file())


def split_class_folders(folder: Path, split: str) -> list[dict[str, str]]:
    """``<folder>/<Label>/<video>`` of one official split; without speaker ids each clip is
    its own group."""
    if not folder.is_dir():
        return []
    rows = []
    for label_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        for path in media_files(label_dir, VIDEO_SUFFIXES):
            clip_id = f"{split}/{path.stem}"
            rows.append({"clip_id": clip_id, "path": str(path), "label": label_dir.name.lower(), "speaker": clip_id, "split": split})
    return rows


def _read_table(path: Path, required: list[str]) -> pd.DataFrame:
    if not path.exists():
        raise DatasetError(f"{path}: label table not found")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [column for column in required if column not in table.columns]
    if missing:
        raise DatasetError(f"{path}: missing column(s) {missing}; has {list(table.columns)}")
    return table


@DATASETS.register("csv")
class CsvManifest(DatasetAdapter):
    """Generic: a CSV with columns ``path`` (or ``file``, relative to the root), ``label``,
    ``speaker``, and optional ``clip_id``, ``split``, ``audio_path``."""

    @dataclass(frozen=True)
    class Config:
        table: str = "labels.csv"

    def clips(self, root: Path) -> pd.DataFrame:
        path = root / self.config.table
        table = _read_table(path, ["label", "speaker"])
        column = "path" if "path" in table.columns else "file" if "file" in table.columns else None
        if column is None:
            raise DatasetError(f"{path}: needs a 'path' or 'file' column; has {list(table.columns)}")
        rows = []
        for record in table.to_dict("records"):
            media = root / record[column]
            rows.append({
                "clip_id": record.get("clip_id") or media.stem,
                "path": str(media),
                "audio_path": str(root / record["audio_path"]) if record.get("audio_path") else "",
                "label": record["label"],
                "speaker": record["speaker"],
                "split": record.get("split", ""),
            })
        return clip_table(rows, root)


@DATASETS.register("demo")
class Demo(CsvManifest):
    """The generated demo set (``pipeline.datasets.demo``): labels.csv plus per-frame ``va/``."""

    labels = ["neutral", "happy", "sad", "angry", "fear", "disgust", "surprise"]

    def clips(self, root: Path) -> pd.DataFrame:
        table = super().clips(root)
        targets = table["clip_id"].map(lambda c: root / "va" / f"{c}.csv")
        table["targets"] = [str(t) if t.exists() else "" for t in targets]
        return table


@DATASETS.register("folders")
class ClassFolders(DatasetAdapter):
    """``<root>/<label>/<clip>`` (any depth below the label folder). The speaker comes from
    ``speaker_pattern`` (a regex whose first group matches the file name), else each clip is
    its own group."""

    @dataclass(frozen=True)
    class Config:
        speaker_pattern: str = ""

    def clips(self, root: Path) -> pd.DataFrame:
        pattern = re.compile(self.config.speaker_pattern) if self.config.speaker_pattern else None
        rows = []
        for label_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            for media in media_files(label_dir, VIDEO_SUFFIXES + AUDIO_SUFFIXES):
                speaker = media.stem
                if pattern is not None:
                    match = pattern.search(media.name)
                    if match is None:
                        raise DatasetError(f"{media}: file name does not match data.options.speaker_pattern {pattern.pattern!r}")
                    speaker = match.group(1)
                rows.append({"clip_id": f"{label_dir.name}/{media.stem}", "path": str(media), "label": label_dir.name, "speaker": speaker})
        return clip_table(rows, root)


@DATASETS.register("emodb")
class EmoDB(DatasetAdapter):
    """Berlin EmoDB: ``wav/SSTTTEV.wav``: speaker = chars 1-2, emotion = char 6."""

    emotions = {"W": "anger", "L": "boredom", "E": "disgust", "A": "fear", "F": "happiness", "T": "sadness", "N": "neutral"}
    labels = sorted(emotions.values())

    def clips(self, root: Path) -> pd.DataFrame:
        folder = root / "wav" if (root / "wav").is_dir() else root
        rows = []
        for path in sorted(folder.glob("*.wav")):
            name = path.stem
            if len(name) < 7 or name[5] not in self.emotions:
                raise DatasetError(f"{path}: not an EmoDB file name (expected e.g. 03a01Wa.wav)")
            rows.append({"clip_id": name, "path": str(path), "label": self.emotions[name[5]], "speaker": name[:2]})
        return clip_table(rows, folder)


@DATASETS.register("mead")
class Mead(DatasetAdapter):
    """MEAD clips named ``<actor>_<view>_<emotion>_level<k>_<take>.mp4``."""

    labels = ["angry", "contempt", "disgusted", "fear", "happy", "neutral", "sad", "surprised"]

    def clips(self, root: Path) -> pd.DataFrame:
        rows = []
        for path in sorted(root.rglob("*.mp4")):
            parts = path.stem.split("_")
            if len(parts) != 5 or not parts[3].startswith("level"):
                raise DatasetError(f"{path}: not a MEAD clip name (<actor>_<view>_<emotion>_level<k>_<take>.mp4)")
            rows.append({"clip_id": path.stem, "path": str(path), "label": parts[2], "speaker": parts[0]})
        return clip_table(rows, root)


@DATASETS.register("ravdess")
class Ravdess(DatasetAdapter):
    """RAVDESS ``Actor_XX/MM-VV-EE-II-SS-RR-AA.(mp4|wav)``: modality MM (01 audio-video,
    02 video-only, 03 audio-only), vocal channel VV (01 speech, 02 song), emotion EE."""

    emotions = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry", "06": "fearful", "07": "disgust", "08": "surprised"}
    modality_names = {"01": "audio-video", "02": "video-only", "03": "audio-only"}
    channel_names = {"01": "speech", "02": "song"}
    labels = list(emotions.values())
    folds = 5  # actor-independent; 0 gives 24 leave-one-actor-out folds

    @dataclass(frozen=True)
    class Config:
        modalities: list[str] = field(default_factory=lambda: ["01"])
        vocal_channels: list[str] = field(default_factory=lambda: ["01"])

    def clips(self, root: Path) -> pd.DataFrame:
        rows, skipped = [], {}
        for path in media_files(root, (".mp4", ".wav")):
            parts = path.stem.split("-")
            if len(parts) != 7 or parts[2] not in self.emotions:
                raise DatasetError(f"{path}: not a RAVDESS file name (MM-VV-EE-II-SS-RR-AA)")
            modality, channel, emotion, actor = parts[0], parts[1], parts[2], parts[6]
            if modality not in self.config.modalities:
                what = f"{self.modality_names.get(modality, 'unknown-modality')} files (modality {modality})"
                skipped.setdefault((what, "data.options.modalities"), []).append(path)
            elif channel not in self.config.vocal_channels:
                what = f"{self.channel_names.get(channel, 'unknown-channel')} files (vocal channel {channel})"
                skipped.setdefault((what, "data.options.vocal_channels"), []).append(path)
            else:
                rows.append({"clip_id": path.stem, "path": str(path), "label": self.emotions[emotion], "speaker": actor})
        self.skipped = [f"{len(paths)} {what} skipped; set {option}" for (what, option), paths in sorted(skipped.items())]
        return clip_table(rows, root, self.skipped)


@DATASETS.register("crema_d")
class CremaD(DatasetAdapter):
    """CREMA-D ``AAAA_SSS_EEE_LL`` clips: ``VideoFlash/*.flv`` (or .mp4 conversions) with
    the matching ``AudioWAV/*.wav`` as audio when present. ``ratings`` takes the label from
    the crowd's majority vote in ``processedResults/summaryTable.csv`` for that modality
    instead of the acted emotion; clips whose vote is a tie get the label '' (map or drop)."""

    emotions = {"ANG": "angry", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
    labels = sorted(emotions.values())
    votes = {"A": "angry", "D": "disgust", "F": "fear", "H": "happy", "N": "neutral", "S": "sad"}

    @dataclass(frozen=True)
    class Config:
        ratings: str = ""  # "", "voice", "face" or "multimodal"

    def clips(self, root: Path) -> pd.DataFrame:
        video_dir = root / "VideoFlash" if (root / "VideoFlash").is_dir() else root
        audio_dir = root / "AudioWAV"
        ratings = self._ratings(root) if self.config.ratings else {}
        rows = []
        for path in media_files(video_dir, (".flv", ".mp4")):
            parts = path.stem.split("_")
            if len(parts) != 4 or parts[2] not in self.emotions:
                raise DatasetError(f"{path}: not a CREMA-D clip name (AAAA_SSS_EEE_LL)")
            wav = audio_dir / f"{path.stem}.wav"
            label = ratings.get(path.stem, self.emotions[parts[2]]) if ratings else self.emotions[parts[2]]
            rows.append({"clip_id": path.stem, "path": str(path), "audio_path": str(wav) if wav.exists() else "",
                         "label": label, "speaker": parts[0]})
        return clip_table(rows, root)

    def _ratings(self, root: Path) -> dict[str, str]:
        column = {"voice": "VoiceVote", "face": "FaceVote", "multimodal": "MultiModalVote"}.get(self.config.ratings)
        if column is None:
            raise DatasetError(f"data.options.ratings: {self.config.ratings!r} is not one of voice, face, multimodal")
        table = _read_table(root / "processedResults" / "summaryTable.csv", ["FileName", column])
        # A vote like "A:D" is a tie between emotions: no majority label.
        return {r["FileName"]: self.votes.get(r[column], "") for r in table.to_dict("records")}


@DATASETS.register("afew")
class Afew(DatasetAdapter):
    """EmotiW AFEW: ``Train_AFEW/<Emotion>/*.avi`` and ``Val_AFEW/<Emotion>/*.avi``. No
    speaker ids are distributed, so each clip is its own group; the official split is kept."""

    splits = {"Train_AFEW": "train", "Val_AFEW": "val"}
    labels = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
    folds = 5

    def clips(self, root: Path) -> pd.DataFrame:
        rows = []
        for folder, split in self.splits.items():
            rows += split_class_folders(root / folder, split)
        if not rows:
            raise DatasetError(f"{root}: expected Train_AFEW/<Emotion>/*.avi and Val_AFEW/<Emotion>/*.avi")
        return clip_table(rows, root)


@DATASETS.register("vgaf")
class Vgaf(DatasetAdapter):
    """VGAF group emotion: ``Train/`` and ``Val/`` videos with ``Train_labels.txt`` and
    ``Val_labels.txt`` (``Vid_name Label`` lines, label 1 Positive, 2 Neutral, 3 Negative, or
    the name), or class folders ``<Split>/<Positive|Neutral|Negative>/*.mp4``."""

    names = {"1": "positive", "2": "neutral", "3": "negative"}
    labels = ["positive", "neutral", "negative"]
    folds = 5

    def clips(self, root: Path) -> pd.DataFrame:
        rows = []
        for split_dir, split in (("Train", "train"), ("Val", "val")):
            lists = root / f"{split_dir}_labels.txt"
            if lists.exists():
                rows += self._from_list(root / split_dir, lists, split)
            else:
                rows += split_class_folders(root / split_dir, split)
        if not rows:
            raise DatasetError(f"{root}: expected Train/ and Val/ with Train_labels.txt / Val_labels.txt or class folders")
        return clip_table(rows, root)

    def _from_list(self, folder: Path, lists: Path, split: str) -> list[dict[str, str]]:
        videos = {p.name: p for p in media_files(folder, VIDEO_SUFFIXES)}
        videos.update({p.stem: p for p in videos.values()})
        rows = []
        for number, line in enumerate(lists.read_text().splitlines(), 1):
            fields = line.replace(",", " ").split()
            if not fields or (number == 1 and not fields[-1].isdigit() and fields[-1].lower() not in self.names.values()):
                continue  # blank line or header
            if len(fields) != 2:
                raise DatasetError(f"{lists}:{number}: expected 'Vid_name Label', got {line!r}")
            name, label = fields
            if name not in videos:
                raise DatasetError(f"{lists}:{number}: video {name!r} not found under {folder}")
            clip_id = f"{split}/{Path(name).stem}"
            rows.append({"clip_id": clip_id, "path": str(videos[name]), "label": self.names.get(label, label.lower()),
                         "speaker": clip_id, "split": split})
        return rows


@DATASETS.register("affwild2")
class AffWild2(DatasetAdapter):
    """Aff-Wild2 valence/arousal: videos anywhere under the root, and per-video annotation
    files ``.../Train_Set/<video>.txt`` and ``.../Validation_Set/<video>.txt`` (a header, then
    one ``valence,arousal`` line per frame, -5 marking frames to ignore). Videos annotated
    per subject (``<video>_left``, ``<video>_right``) share the video; the group is the video."""

    splits = {"Train_Set": "train", "Validation_Set": "val", "Test_Set": "test"}
    folds = 6
    test_split = "val"

    def clips(self, root: Path) -> pd.DataFrame:
        videos = {p.stem: p for p in media_files(root, VIDEO_SUFFIXES)}
        rows = []
        for annotation in sorted(root.rglob("*.txt")):
            split = self.splits.get(annotation.parent.name)
            if split is None:
                continue
            name = annotation.stem
            base = re.sub(r"_(left|right)$", "", name)
            video = videos.get(name) or videos.get(base)
            if video is None:
                raise DatasetError(f"{annotation}: no video named {name} or {base} under {root}")
            rows.append({"clip_id": name, "path": str(video), "label": "", "speaker": base, "split": split, "targets": str(annotation)})
        if not rows:
            raise DatasetError(f"{root}: no annotation files in Train_Set/ or Validation_Set/ folders")
        return clip_table(rows, root)


def read_frame_targets(path: str, dimensions: list[str], fps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(times [N], values [N, D], valid [N]) of a per-frame annotation file. A ``time_s``
    column gives the times (the demo); otherwise row i is video frame i (Aff-Wild2), and
    Aff-Wild2's -5 marks a frame without annotation."""
    table = pd.read_csv(path)
    table.columns = [str(c).strip().lower() for c in table.columns]
    missing = [d for d in dimensions if d not in table.columns]
    if missing:
        raise DatasetError(f"{path}: annotation has no column(s) {missing}; columns: {list(table.columns)}")
    if "time_s" in table.columns:
        times = table["time_s"].to_numpy(float)
    elif fps > 0:
        times = np.arange(len(table)) / fps
    else:
        raise DatasetError(f"{path}: no time_s column and the video's frame rate is unknown")
    values = table[dimensions].to_numpy(np.float32)
    valid = ~(values == -5).any(1) & np.isfinite(values).all(1)
    return times, values, valid
