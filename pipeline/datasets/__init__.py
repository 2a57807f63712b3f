"""Dataset adapters: each turns a corpus as downloaded into rows of
(clip_id, path, label, speaker). Registering one is one class plus one decorator line."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.registry import Registry

CLIP_COLUMNS = ["clip_id", "path", "label", "speaker"]


class DatasetError(ValueError):
    """The dataset on disk does not match what its adapter expects."""


class DatasetAdapter:
    """Lists the clips of a corpus; ``root`` is the corpus folder as downloaded."""

    def clips(self, root: Path) -> pd.DataFrame:
        raise NotImplementedError


DATASETS: Registry[type[DatasetAdapter]] = Registry("dataset")


def _read_table(path: Path, required: list[str]) -> pd.DataFrame:
    if not path.exists():
        raise DatasetError(f"{path}: label table not found")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [column for column in required if column not in table.columns]
    if missing:
        raise DatasetError(f"{path}: missing column(s) {missing}; has {list(table.columns)}")
    return table


@DATASETS.register("labels_csv")
class LabelsCsv(DatasetAdapter):
    """Generic: ``labels.csv`` in the root with columns file, label, speaker (clip_id optional)."""

    table_name = "labels.csv"

    def clips(self, root: Path) -> pd.DataFrame:
        table = _read_table(root / self.table_name, ["file", "label", "speaker"])
        clip_ids = table["clip_id"] if "clip_id" in table.columns else table["file"].map(lambda f: Path(f).stem)
        return pd.DataFrame(
            {
                "clip_id": clip_ids,
                "path": [str(root / f) for f in table["file"]],
                "label": table["label"],
                "speaker": table["speaker"],
            }
        )


@DATASETS.register("demo")
class Demo(LabelsCsv):
    """The generated demo set (``pipeline.datasets.demo``): labels.csv plus per-frame ``va/``."""


@DATASETS.register("emodb")
class EmoDB(DatasetAdapter):
    """Berlin EmoDB: ``wav/SSTTTEV.wav``: speaker = chars 1-2, emotion = char 6."""

    emotions = {"W": "anger", "L": "boredom", "E": "disgust", "A": "fear", "F": "happiness", "T": "sadness", "N": "neutral"}

    def clips(self, root: Path) -> pd.DataFrame:
        folder = root / "wav" if (root / "wav").is_dir() else root
        rows = []
        for path in sorted(folder.glob("*.wav")):
            name = path.stem
            if len(name) < 7 or name[5] not in self.emotions:
                raise DatasetError(f"{path}: not an EmoDB file name (expected e.g. 03a01Wa.wav)")
            rows.append((name, str(path), self.emotions[name[5]], name[:2]))
        if not rows:
            raise DatasetError(f"{folder}: no .wav files found")
        return pd.DataFrame(rows, columns=CLIP_COLUMNS)


@DATASETS.register("mead")
class Mead(DatasetAdapter):
    """MEAD clips named ``<actor>_<view>_<emotion>_level<k>_<take>.mp4``."""

    def clips(self, root: Path) -> pd.DataFrame:
        rows = []
        for path in sorted(root.rglob("*.mp4")):
            parts = path.stem.split("_")
            if len(parts) != 5 or not parts[3].startswith("level"):
                raise DatasetError(f"{path}: not a MEAD clip name (<actor>_<view>_<emotion>_level<k>_<take>.mp4)")
            rows.append((path.stem, str(path), parts[2], parts[0]))
        if not rows:
            raise DatasetError(f"{root}: no .mp4 files found")
        return pd.DataFrame(rows, columns=CLIP_COLUMNS)


@DATASETS.register("crema_d")
class CremaD(DatasetAdapter):
    """CREMA-D ``AAAA_SSS_EEE_LL`` clips (.flv or .mp4), anywhere under the root."""

    emotions = {"ANG": "angry", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}

    def clips(self, root: Path) -> pd.DataFrame:
        rows = []
        for path in sorted([*root.rglob("*.flv"), *root.rglob("*.mp4")]):
            parts = path.stem.split("_")
            if len(parts) != 4 or parts[2] not in self.emotions:
                raise DatasetError(f"{path}: not a CREMA-D clip name (AAAA_SSS_EEE_LL)")
            rows.append((path.stem, str(path), self.emotions[parts[2]], parts[0]))
        if not rows:
            raise DatasetError(f"{root}: no .flv or .mp4 clips found")
        return pd.DataFrame(rows, columns=CLIP_COLUMNS)

