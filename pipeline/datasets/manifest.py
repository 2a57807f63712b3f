"""The manifest: one row per usable clip, with its fold for speaker-independent CV.

Problems with the dataset's *description* (unknown labels, duplicate ids, missing files)
stop the stage with an error naming every offending clip, because they mean the params or
the corpus are wrong. Problems with a clip's *media* (empty, corrupt, undecodable) are
recorded as failures and the clip is left out, so one bad file never stops a corpus.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.config import DataParams
from pipeline.datasets import DATASETS, DatasetError
from pipeline.media import MediaError, probe

MANIFEST_COLUMNS = [
    "clip_id", "path", "audio_path", "label", "speaker", "split", "targets", "fold", "duration_s", "fps", "has_video", "has_audio",
]


def _listing(names: pd.Series, limit: int = 10) -> str:
    values = list(names)
    more = f" ... and {len(values) - limit} more" if len(values) > limit else ""
    return ", ".join(map(str, values[:limit])) + more


def apply_label_map(clips: pd.DataFrame, data: DataParams) -> tuple[pd.DataFrame, int]:
    """Map corpus labels onto ``data.labels``; returns the clips kept and the count dropped."""
    if not data.labels and (clips["label"] == "").all():
        return clips, 0  # a continuous corpus: per-frame targets, no class labels
    labels = clips["label"].map(lambda label: data.label_map.get(label, label))
    dropped = labels == ""
    clips = clips.assign(label=labels)[~dropped]
    unknown = clips[~clips["label"].isin(data.labels)]
    if len(unknown):
        raise DatasetError(
            f"{len(unknown)} clip(s) have labels outside data.labels {data.labels}: "
            + _listing(unknown["path"] + " (" + unknown["label"] + ")")
            + ". Map them with data.label_map, or map them to '' to drop them."
        )
    return clips, int(dropped.sum())


def check_clips(clips: pd.DataFrame) -> None:
    duplicated = clips[clips["clip_id"].duplicated(keep=False)]
    if len(duplicated):
        raise DatasetError(f"duplicate clip ids: {_listing(duplicated['clip_id'].drop_duplicates())}")
    listed = pd.concat([clips["path"], clips["audio_path"], clips["targets"]])
    missing = listed[(listed != "") & ~listed.map(lambda p: Path(p).exists())]
    if len(missing):
        raise DatasetError(f"{len(missing)} file(s) listed but missing: {_listing(missing)}")


def assign_folds(speakers: pd.Series, folds: int) -> pd.Series:
    """Group-independent folds: every speaker's (group's) clips land in one fold.

    ``folds == 0`` gives one fold per speaker; otherwise speakers are dealt, largest first,
    to the fold with the fewest clips so far, which keeps folds balanced and deterministic.
    """
    counts = speakers.value_counts()
    ordered = sorted(counts.index, key=lambda s: (-counts[s], str(s)))
    if folds == 0:
        fold_of = {speaker: i for i, speaker in enumerate(sorted(ordered, key=str))}
    else:
        if folds > len(ordered):
            raise DatasetError(f"data.folds={folds} but the dataset has only {len(ordered)} speakers (groups)")
        sizes = [0] * folds
        fold_of = {}
        for speaker in ordered:
            target = min(range(folds), key=lambda i: (sizes[i], i))
            fold_of[speaker] = target
            sizes[target] += counts[speaker]
    return speakers.map(fold_of).astype(int)


def build_manifest(data: DataParams) -> tuple[pd.DataFrame, list[dict[str, str]], dict[str, int]]:
    """Returns (manifest, failures, counts)."""
    root = Path(data.root)
    if not root.exists():
        raise DatasetError(f"data.root {root} does not exist")
    adapter = DATASETS.get(data.dataset)(DATASETS.config(data.dataset, data.options, "data.options"))
    clips = adapter.clips(root)
    clips, dropped = apply_label_map(clips, data)
    check_clips(clips)

    rows, failures = [], []
    for clip in clips.itertuples(index=False):
        try:
            info = probe(clip.path)
            has_audio = probe(clip.audio_path).has_audio if clip.audio_path else info.has_audio
        except MediaError as error:
            failures.append({"clip_id": clip.clip_id, "stage": "manifest", "reason": str(error)})
            continue
        rows.append({**clip._asdict(), "duration_s": info.duration_s, "fps": info.fps, "has_video": info.has_video, "has_audio": has_audio})
    if not rows:
        raise DatasetError(f"no usable clip in {root}; failures: {failures[:5]}")
    manifest = pd.DataFrame(rows)
    groups = manifest["speaker"] if data.group_by == "speaker" else manifest["clip_id"]
    # The held-out test set (fold -1): the corpus's official test split, or listed groups.
    test = (manifest["split"] == data.test_split) if data.test_split else pd.Series(False, index=manifest.index)
    test |= groups.astype(str).isin(data.test_groups)
    if data.test_split and not test.any():
        raise DatasetError(f"{root}: data.test_split {data.test_split!r} matches no clip; splits: {sorted(set(manifest['split']))}")
    manifest["fold"] = -1
    manifest.loc[~test, "fold"] = assign_folds(groups[~test].astype(str), data.folds)
    if manifest.loc[~test, "fold"].nunique() < 2:
        raise DatasetError(
            f"{root}: cross-validation needs at least 2 folds, but all {len(manifest)} clips share one "
            f"{data.group_by}; set data.group_by: clip (and data.folds) for a single-speaker corpus"
        )
    manifest = manifest[MANIFEST_COLUMNS].sort_values("clip_id").reset_index(drop=True)
    counts = {"listed": len(clips) + dropped, "dropped_by_label_map": dropped, "failed": len(failures), "kept": len(manifest)}
    return manifest, failures, counts


CLIPS = Path("data/clips.parquet")  # the manifest without folds, labels and splits: extraction's input


def read_manifest(path: str | Path = "data/manifest.parquet") -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: manifest missing (run `dvc repro manifest`)")
    return pd.read_parquet(path)
