"""The manifest: one row per usable clip, with its fold for speaker-independent CV.

Problems with the dataset's *description* (unknown labels, fewer than two classes,
duplicate ids, missing files, files outside data.root) stop the stage with an error naming
every offending clip, because they mean the params or the corpus are wrong. Problems with a
clip's *media* (empty, corrupt, undecodable) are recorded as failures, so one bad file never
stops a corpus: a clip keeps whichever modality still decodes (a good video whose audio file
is broken stays, without audio), and is left out only when none does.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.config import DataParams
from pipeline.datasets import DATASETS, DatasetError
from pipeline.store.files import read_parquet
from pipeline.media import MediaError, MediaInfo, probe

MANIFEST_COLUMNS = [
    "clip_id", "path", "audio_path", "label", "speaker", "split", "targets", "fold", "duration_s", "fps", "has_video", "has_audio",
]


def _listing(names: pd.Series, limit: int = 10) -> str:
    values = list(names)
    more = f" ... and {len(values) - limit} more" if len(values) > limit else ""
    return ", ".join(map(str, values[:limit])) + more


def apply_label_map(clips: pd.DataFrame, data: DataParams) -> tuple[pd.DataFrame, int]:
    """Map corpus labels onto ``data.labels``; returns the clips kept and the count dropped
    (mapped to ''). A clip listed without a label (an official test split, ABAW test videos,
    unlabeled rows of a csv corpus) is kept unlabeled: extracted and predicted, never trained
    or scored on (see :func:`unlabeled_rows`)."""
    if not data.labels and (clips["label"] == "").all():
        return clips, 0  # a continuous corpus: per-frame targets, no class labels
    listed_without = clips["label"] == ""
    labels = clips["label"].map(lambda label: data.label_map.get(label, label))
    dropped = (labels == "") & ~listed_without
    clips = clips.assign(label=labels)[~dropped]
    unknown = clips[~clips["label"].isin(data.labels) & (clips["label"] != "")]
    if len(unknown):
        raise DatasetError(
            f"{len(unknown)} clip(s) have labels outside data.labels {data.labels}: "
            + _listing(unknown["path"] + " (" + unknown["label"] + ")")
            + ". Map them with data.label_map, or map them to '' to drop them."
        )
    return clips, int(dropped.sum())


def unlabeled_rows(manifest: pd.DataFrame, data: DataParams) -> pd.Series:
    """The clips without what a model learns from: no class label where the experiment has
    classes, no per-frame annotation file where it has none (a continuous corpus)."""
    if data.labels:
        return manifest["label"].fillna("").astype(str) == ""
    return manifest["targets"].fillna("").astype(str) == ""


def check_clips(clips: pd.DataFrame, root: Path, allow_outside_root: bool = False) -> None:
    duplicated = clips[clips["clip_id"].duplicated(keep=False)]
    if len(duplicated):
        files = duplicated.groupby("clip_id", sort=True)["path"].apply(lambda paths: " and ".join(sorted(paths)))
        raise DatasetError(
            "duplicate clip ids: " + _listing(files.index + " (" + files + ")")
            + ". Each id must name one clip: give the files distinct ids (the csv adapter takes the clip_id "
            "column, else the file name without its suffix) or remove the copies."
        )
    listed = pd.concat([clips["path"], clips["audio_path"], clips["targets"]])
    listed = listed[listed != ""]
    if not allow_outside_root:
        outside = listed[~listed.map(lambda p: _is_under(p, root))]
        if len(outside):
            raise DatasetError(
                f"{len(outside)} file(s) listed outside data.root {root}: {_listing(outside)}. DVC tracks only "
                "data.root, so a change to these files re-runs nothing (`dvc status` says up to date) and the "
                "manifest, features and models go on describing the old files. Move or link them under "
                "data.root (a symlink there is tracked by its target's content), or set "
                "data.allow_outside_root: true to accept that."
            )
    missing = listed[~listed.map(lambda p: Path(p).exists())]
    if len(missing):
        raise DatasetError(f"{len(missing)} file(s) listed but missing: {_listing(missing)}")


def _is_under(path: str, root: Path) -> bool:
    """Lexically, as DVC sees the dependency: ``..`` and absolute paths leave the root; a
    symlink inside it does not."""
    base = os.path.normpath(os.path.abspath(root))
    return os.path.commonpath([base, os.path.normpath(os.path.abspath(path))]) == base


def check_classes(labels: pd.Series, data: DataParams, dropped: int, left_out: int) -> None:
    """A classification experiment needs two classes among its usable clips."""
    if not data.labels:
        return  # a continuous corpus: no class labels
    counts = labels.value_counts()
    if len(counts) < 2:
        found = ", ".join(f"{label} ({n} clips)" for label, n in counts.items()) or "none"
        raise DatasetError(
            f"{data.root}: the usable clips carry {len(counts)} class(es): {found}; a classification experiment "
            f"needs at least two. data.labels is {data.labels}, data.label_map dropped {dropped} clip(s)"
            + (f", and {left_out} clip(s) had no usable media" if left_out else "")
            + "."
        )


def clip_media(path: str, audio_path: str) -> tuple[dict[str, Any] | None, list[str]]:
    """The manifest's media columns of one clip (None when neither modality is usable) and
    the problems to record. ``audio_path``, when given, is the clip's audio: the main file's
    own audio track is then not used."""
    problems: list[str] = []
    main = _probe_noting(path, problems)
    if main is not None:
        problems += [f"{path}: {problem}" for kind, problem in main.unusable.items() if not (kind == "audio" and audio_path)]
    audio = main
    if audio_path:
        audio = _probe_noting(audio_path, problems)
        if audio is not None and not audio.has_audio:
            problems.append(f"{audio_path}: {audio.unusable.get('audio', 'no audio stream')}")
    has_video = main is not None and main.has_video
    has_audio = audio is not None and audio.has_audio
    if not (has_video or has_audio):
        return None, problems
    info = main or audio
    if has_video != has_audio:
        problems = [f"{problem} (the clip is used with its {'video' if has_video else 'audio'} only)" for problem in problems]
    return {"duration_s": info.duration_s, "fps": info.fps if has_video else 0.0, "has_video": has_video, "has_audio": has_audio}, problems


def _probe_noting(path: str, problems: list[str]) -> MediaInfo | None:
    try:
        return probe(path)
    except MediaError as error:
        problems.append(str(error))
        return None


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
    config = DATASETS.config(data.dataset, data.options, "data.options", "data.dataset")
    adapter = DATASETS.get(data.dataset)(config)
    clips = adapter.clips(root)
    for note in adapter.skipped:  # files found that these data.options leave out
        print(f"manifest: {note}")
    clips, dropped = apply_label_map(clips, data)
    check_clips(clips, root, data.allow_outside_root)

    rows, failures = [], []
    for clip in clips.itertuples(index=False):
        media, problems = clip_media(clip.path, clip.audio_path)
        if media is None:
            failures.append({"clip_id": clip.clip_id, "stage": "manifest", "reason": "; ".join(problems)})
            continue
        failures += [{"clip_id": clip.clip_id, "stage": "manifest", "reason": problem} for problem in problems]
        rows.append({**clip._asdict(), **media})
    left_out = len(clips) - len(rows)
    if not rows:
        raise DatasetError(f"no usable clip in {root}; failures: {failures[:5]}")
    manifest = pd.DataFrame(rows)
    unlabeled = unlabeled_rows(manifest, data)
    check_classes(manifest.loc[~unlabeled, "label"], data, dropped, left_out)
    groups = manifest["speaker"] if data.group_by == "speaker" else manifest["clip_id"]
    # The held-out test set (fold -1): the corpus's official test split, or listed groups.
    test = (manifest["split"] == data.test_split) if data.test_split else pd.Series(False, index=manifest.index)
    test |= groups.astype(str).isin(data.test_groups)
    if data.test_split and not test.any():
        raise DatasetError(f"{root}: data.test_split {data.test_split!r} matches no clip; splits: {sorted(set(manifest['split']))}")
    # Unlabeled clips are in no fold (-1, like the test set, which they join in prediction
    # only: every task leaves them out of training and scoring).
    folded = ~test & ~unlabeled
    manifest["fold"] = -1
    manifest.loc[folded, "fold"] = assign_folds(groups[folded].astype(str), data.folds)
    if manifest.loc[folded, "fold"].nunique() < 2:
        raise DatasetError(
            f"{root}: cross-validation needs at least 2 folds, but all {len(manifest)} clips share one "
            f"{data.group_by}; set data.group_by: clip (and data.folds) for a single-speaker corpus"
        )
    manifest = manifest[MANIFEST_COLUMNS].sort_values("clip_id").reset_index(drop=True)
    counts = {"listed": len(clips) + dropped, "dropped_by_label_map": dropped, "failed": left_out, "kept": len(manifest),
              "unlabeled": int(unlabeled_rows(manifest, data).sum())}
    return manifest, failures, counts


CLIPS = Path("data/clips.parquet")  # the manifest without folds, labels and splits: extraction's input


def read_manifest(path: str | Path = "data/manifest.parquet") -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: manifest missing (run `dvc repro manifest`)")
    return read_parquet(path)
