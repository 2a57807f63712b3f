"""Applying a trained experiment to new clips: the experiment's own faces, audio and
extractor chain into a cache of its own, then its branches, cross-modal fusion and late
fusion, with the fold models combined as for the held-out test split (the fold -1 rows of
the score matrices)::

    predictor = Predictor.from_experiment("path/to/project")   # loads every model once
    rows = predictor("new_clip.mp4")                           # predictions.csv's rows
    result = predictor.predict(["clips/", "more.csv"])         # rows, timelines, faces

Inputs are media files, folders (searched recursively; the files of each sub-folder are one
speaker's) or CSV tables like the csv adapter's (``path`` or ``file``, optional ``clip_id``,
``speaker``, ``audio_path``, ``label``; paths relative to the table). Every input that cannot
be scored becomes a row with its reason.

**Cache.** New clips' entries never go into the corpus's ``features/``: they go to
``~/.cache/aver/predict/<fingerprint>`` (``$AVER_PREDICT_CACHE``, or ``cache=``), where the
fingerprint hashes the identities of the faces, audio and extractor configs the experiment
uses. Entries carry the same lineage keys as the stages' (:mod:`pipeline.store.lineage`), so
predicting the same files again reuses them, and a changed file or config redoes them. The
cache keeps every clip it has seen (``clips.parquet``) whose file still exists; a lock
serialises two predictions on one cache.

**Speaker statistics** (``train.speaker_standardization``): a speaker with two or more clips
given together is standardised with its own clips' statistics; a single clip of a speaker
the experiment was trained on with that speaker's stored statistics; any other clip with the
training speakers' statistics pooled (each speaker weighted equally). The ``standardization``
column says which.

torch is imported only by :meth:`Predictor.from_experiment` (the models); collecting the
inputs and the extraction run without it.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from pipeline.datasets import AUDIO_SUFFIXES, VIDEO_SUFFIXES
from pipeline.store import FeatureStore
from pipeline.store.files import atomic_write_text, read_parquet, write_parquet

TRAINING_STATISTICS = "<training speakers>"  # the pseudo-speaker of clips standardised with the pooled statistics
MEDIA_SUFFIXES = VIDEO_SUFFIXES + AUDIO_SUFFIXES
MODALITY_OF_STORE = {"faces": "face", "audio": "audio"}


class PredictError(ValueError):
    """The experiment cannot predict (no trained models, inconsistent params); names the file."""


@dataclass(frozen=True)
class InputClip:
    clip: str                 # the name in the outputs
    path: str
    audio_path: str = ""
    speaker: str = ""         # "" : not known
    label: str = ""           # given in a CSV: kept beside the prediction, never used
    key: str = ""             # the clip's id in the feature stores

    @property
    def store_id(self) -> str:
        return self.key or cache_key(self.path, self.audio_path)


def cache_key(path: str, audio_path: str = "") -> str:
    """A clip's id in the cache: its file name and a digest of its absolute path(s), so that two
    files of one name in different folders never share an entry."""
    digest = hashlib.sha1(f"{Path(path).resolve()}|{Path(audio_path).resolve() if audio_path else ''}".encode()).hexdigest()[:12]
    return f"{Path(path).stem}-{digest}"


def _bad(clip: str, path: str, reason: str) -> dict[str, str]:
    return {"clip": clip, "path": path, "reason": reason}


def collect_inputs(paths: Iterable[str | Path]) -> tuple[list[InputClip], list[dict[str, str]]]:
    """The clips named by files, folders and CSV tables, and a row for each input that is not
    a clip (missing path, unreadable table)."""
    clips: list[InputClip] = []
    bad: list[dict[str, str]] = []
    for given in paths:
        path = Path(given)
        if not path.exists():
            bad.append(_bad(path.stem, str(path), f"{path}: no such file or folder"))
        elif path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES)
            if not found:
                bad.append(_bad(path.name, str(path), f"{path}: folder holds no video or audio file ({', '.join(MEDIA_SUFFIXES)})"))
            for media in found:
                relative = media.relative_to(path)
                speaker = str(relative.parent) if relative.parent != Path(".") else ""
                clips.append(InputClip(str(relative.with_suffix("")), str(media), speaker=speaker))
        elif path.suffix.lower() == ".csv":
            table_clips, table_bad = _table_inputs(path)
            clips += table_clips
            bad += table_bad
        else:
            clips.append(InputClip(path.stem, str(path)))
    return _unique_names(_first_of_each_file(clips)), bad


def _first_of_each_file(clips: list[InputClip]) -> list[InputClip]:
    """A file given twice (in a folder and a table, say) is predicted once, as first given."""
    seen, unique = set(), []
    for clip in clips:
        if clip.store_id not in seen:
            seen.add(clip.store_id)
            unique.append(clip)
    return unique


def _table_inputs(path: Path) -> tuple[list[InputClip], list[dict[str, str]]]:
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (ValueError, OSError, UnicodeDecodeError) as error:
        return [], [_bad(path.stem, str(path), f"{path}: not a readable CSV table ({type(error).__name__}: {error})")]
    column = "path" if "path" in table.columns else "file" if "file" in table.columns else None
    if column is None:
        return [], [_bad(path.stem, str(path), f"{path}: needs a 'path' or 'file' column; has {list(table.columns)}")]
    clips = []
    for record in table.to_dict("records"):
        media = path.parent / record[column]
        audio = str(path.parent / record["audio_path"]) if record.get("audio_path") else ""
        clips.append(InputClip(record.get("clip_id") or media.stem, str(media), audio, record.get("speaker", ""), record.get("label", "")))
    return clips, []


def _unique_names(clips: list[InputClip]) -> list[InputClip]:
    seen: dict[str, int] = {}
    unique = []
    for clip in clips:
        count = seen.get(clip.clip, 0)
        seen[clip.clip] = count + 1
        unique.append(clip if not count else replace(clip, clip=f"{clip.clip}#{count + 1}"))
    return unique


def progress(iterable, total: int, desc: str):
    """tqdm where installed, else one line on stderr per step."""
    try:
        from tqdm import tqdm
    except ImportError:
        def plain():
            for i, item in enumerate(iterable, 1):
                yield item
                print(f"\r{desc}: {i}/{total}", end="\n" if i == total else "", file=sys.stderr, flush=True)
        return plain()
    return tqdm(iterable, total=total, desc=desc, unit="clip", file=sys.stderr, leave=False)


# -- frames and files ------------------------------------------------------------------------


def frame_values(grid_times: np.ndarray, values: np.ndarray, frames: int, fps: float) -> np.ndarray:
    """Per-step predictions ([steps, D] at ``grid_times``) on every video frame (frame i at
    i / fps), linearly interpolated, the ends held."""
    times = np.arange(frames) / fps if fps > 0 else np.zeros(frames)
    return np.stack([np.interp(times, grid_times, values[:, d]) for d in range(values.shape[1])], axis=1) if frames else np.zeros((0, values.shape[1]))


def write_frame_file(path: Path, dimensions: list[str], values: np.ndarray) -> None:
    """Aff-Wild2's annotation layout: a header line, then one ``valence,arousal`` line per frame."""
    lines = [",".join(dimensions)] + [",".join(f"{v:.6f}" for v in row) for row in values]
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "\n".join(lines) + "\n")


def plot_timeline(path: Path, clip: str, timeline: pd.DataFrame, columns: list[str], no_face: np.ndarray, step: float,
                  duration: float, note: str = "") -> None:
    """One PNG: the final model's timeline (each column over time) with the sampled frames
    where no face was found shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 3.2))
    if len(timeline):
        times = timeline["time_s"].to_numpy()
        for column in columns:
            axes.plot(times, timeline[column].to_numpy(), marker="." if len(times) < 3 else None, label=column.removeprefix("p_").removeprefix("pred_"))
    for t in no_face:
        axes.axvspan(t - step / 2, t + step / 2, color="0.85", lw=0)
    if len(no_face):
        axes.axvspan(0, 0, color="0.85", label="no face")
    axes.set_xlim(0, max(duration, 1e-3))
    if all(c.startswith("p_") for c in columns):
        axes.set_ylim(0, 1)
        axes.set_ylabel("probability")
    axes.set_xlabel("time (s)")
    axes.set_title(f"{clip}{' - ' + note if note else ''}", fontsize=9)
    axes.legend(fontsize=7, loc="upper right", ncol=2)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)


def safe_name(clip: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.#" else "_" for c in clip)


# -- the predictor ---------------------------------------------------------------------------


@dataclass
class Prediction:
    """What one call predicts: ``rows`` (predictions.csv), ``timelines`` (timelines.parquet),
    and per clip the times of the sampled frames without a face (``no_face``)."""

    rows: pd.DataFrame
    timelines: pd.DataFrame
    no_face: dict[str, np.ndarray] = field(default_factory=dict)
    face_step: float = 0.2
    frame_values: dict[str, np.ndarray] = field(default_factory=dict)  # continuous: clip -> [frames, D]

    def save(self, out: Path, dimensions: list[str] | None = None, plots: bool = True) -> None:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "predictions.csv", self.rows.to_csv(index=False))
        write_parquet(self.timelines, out / "timelines.parquet")
        if dimensions:
            self.save_frame_files(out / "predictions", dimensions)
        if plots:
            columns = [c for c in self.timelines.columns if c.startswith(("p_", "pred_"))]
            final = self.timelines[self.timelines["member"] == "late_fusion"] if len(self.timelines) else self.timelines
            for row in self.rows.itertuples():
                if row.reason:
                    continue
                timeline, note = final[final["clip"] == row.clip], ""
                if not len(timeline):  # no member has a time axis: the clip's one value
                    timeline = pd.DataFrame({"time_s": [row.duration_s / 2], **{c: [getattr(row, c)] for c in columns if hasattr(row, c)}})
                    note = "per-clip functionals: one value"
                plot_timeline(out / "plots" / f"{safe_name(row.clip)}.png", row.clip, timeline, columns,
                              self.no_face.get(row.clip, np.zeros(0)), self.face_step, float(row.duration_s), note)

    def save_frame_files(self, folder: Path, dimensions: list[str]) -> None:
        for clip, values in self.frame_values.items():
            write_frame_file(folder / f"{safe_name(clip)}.txt", dimensions, values)


def manifest_inputs(manifest: pd.DataFrame) -> tuple[list[InputClip], pd.DataFrame]:
    """The pipeline's clips (manifest rows) as predictor inputs, already probed: their
    features are in the pipeline's stores under their clip ids."""
    clips = [InputClip(r.clip_id, r.path, r.audio_path, str(r.speaker), "", r.clip_id) for r in manifest.itertuples()]
    probed = manifest[["clip_id", "path", "audio_path", "duration_s", "fps", "has_video", "has_audio"]].reset_index(drop=True)
    probed["problems"] = [[] for _ in range(len(probed))]
    return clips, probed


def empty_predictions(task) -> pd.DataFrame:
    """predictions.csv's header for ``task`` without rows (no model needed)."""
    return pd.DataFrame(columns=Predictor.columns_for(task))


def _identity_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


class Predictor:
    """A trained experiment loaded once: call it on files to predict them."""

    def __init__(self, root: Path, params, members: dict[str, Any], late, cache: Path | None = None) -> None:
        from pipeline.tasks import task_from_params

        self.root, self.params, self.members, self.late = root, params, members, late
        self.task = task_from_params(params)
        self.stores = sorted({store for member in members.values() for store in member.features})
        self.inputs = sorted({params.extractors[store].input for store in self.stores})
        self.cache = Path(cache or os.environ.get("AVER_PREDICT_CACHE") or Path.home() / ".cache" / "aver" / "predict" / self.fingerprint())

    @classmethod
    def from_experiment(cls, path: str | Path = ".", cache: str | Path | None = None) -> "Predictor":
        """Load the experiment at ``path`` (a project: params.yaml and models/): every member
        of its late fusion, from their checkpoints. A member trained on no clip is left out."""
        from pipeline.checkpoint import load_member
        from pipeline.config import load_params
        from pipeline.fusion.late import load_late_fusion
        from pipeline.results import LATE_FUSION_DIR

        root = Path(path)
        params = load_params(root / "params.yaml", check_components=False)
        late = load_late_fusion(root / LATE_FUSION_DIR / "checkpoint.json")
        members = {}
        for name, checkpoint in late.member_checkpoints.items():
            member = load_member(root / checkpoint)
            if member.folds:
                members[name] = member
        if not members:
            raise PredictError(f"{root}: no member of the late fusion was trained on any clip; nothing can be predicted")
        predictor = cls(root, params, members, late, Path(cache) if cache else None)
        predictor.check_extractors()
        return predictor

    # -- configuration ---------------------------------------------------------------------
    def extractor_processor(self, name: str, features_root: Path):
        from pipeline.extraction import ExtractorClipProcessor

        spec = self.params.extractors[name]
        return ExtractorClipProcessor(str(features_root / spec.input), str(features_root / name), spec.type, spec.options, spec.device, spec.batch_size)

    def fingerprint(self) -> str:
        from pipeline.extraction import audio_identity, faces_identity

        spec = {"faces": faces_identity(self.params.faces), "audio": audio_identity(self.params.audio),
                "extractors": {name: asdict(self.params.extractors[name]) for name in self.stores}}
        for name in self.stores:
            for key in ("workers", "executor", "num_gpus", "device", "batch_size"):
                spec["extractors"][name].pop(key, None)
        return hashlib.sha256(_identity_json(spec).encode()).hexdigest()[:16]

    def check_extractors(self) -> None:
        """params.yaml's extractors are those the members were trained with: the same
        identity (name, version, config, weights) as their entries record."""
        import tempfile

        identities: dict[str, dict] = {}
        for name, member in self.members.items():
            for branch, store in member.stores.items():
                recorded = [i.get("identity") for i in store.get("identities", []) if i.get("identity")]
                if not recorded or store["features"] not in self.params.extractors:
                    continue
                if store["features"] not in identities:
                    # Its weights' hash cache goes to a scratch folder: never into a store.
                    with tempfile.TemporaryDirectory() as scratch:
                        identities[store["features"]] = self.extractor_processor(store["features"], Path(scratch)).identity()
                current = identities[store["features"]]
                if all(_identity_json(r) != _identity_json(current) for r in recorded):
                    raise PredictError(
                        f"{self.root / 'params.yaml'}: extractors.{store['features']} is not what member {name!r} (branch {branch}) "
                        f"was trained on (recorded {recorded[0]}, now {current}); run `dvc repro` or restore the params"
                    )

    # -- extraction -------------------------------------------------------------------------
    def extract(self, clips: list[InputClip], log) -> tuple[pd.DataFrame, list[dict[str, str]]]:
        """Probe the clips and fill the cache's stores; returns (the probed clips, the
        rows of clips nothing in which decodes)."""
        from pipeline.datasets.manifest import clip_media
        from pipeline.extraction import extract_audio, extract_faces, extract_features

        rows, bad, problems = [], [], {}
        for clip in clips:
            media, found = clip_media(clip.path, clip.audio_path)
            if media is None:
                bad.append(_bad(clip.clip, clip.path, "; ".join(found) or f"{clip.path}: nothing decodes"))
                continue
            problems[clip.store_id] = found
            rows.append({"clip_id": clip.store_id, "path": clip.path, "audio_path": clip.audio_path, **media})
        probed = pd.DataFrame(rows, columns=["clip_id", "path", "audio_path", "duration_s", "fps", "has_video", "has_audio"])
        probed["problems"] = [problems.get(c, []) for c in probed["clip_id"]]
        if not len(probed):
            return probed, bad
        self.cache.mkdir(parents=True, exist_ok=True)
        with _locked(self.cache / ".lock"), contextlib.redirect_stdout(log):
            known = self.cache / "clips.parquet"
            previous = read_parquet(known) if known.exists() else probed.iloc[:0]
            previous = previous[~previous["clip_id"].isin(probed["clip_id"]) & previous["path"].map(lambda p: Path(p).exists())]
            manifest = pd.concat([previous, probed.drop(columns="problems")], ignore_index=True)
            manifest = manifest.astype({"has_video": bool, "has_audio": bool})
            write_parquet(manifest, known)
            small = min(len(probed), 2)  # one clip runs in this process: no worker to start
            if "faces" in self.inputs:
                extract_faces(replace(self.params.faces, workers=min(self.params.faces.workers, small), executor="local"), manifest, self.cache / "faces")
            if "audio" in self.inputs:
                extract_audio(replace(self.params.audio, workers=min(self.params.audio.workers, small), executor="local"), manifest, self.cache / "audio")
            for name in self.stores:
                spec = self.params.extractors[name]
                extract_features(name, replace(spec, workers=min(spec.workers, small), executor="local"), manifest, self.cache,
                                 augment=False)
        return probed, bad

    # -- scoring ----------------------------------------------------------------------------
    def predict(self, paths: str | Path | Iterable[str | Path], window: float = 2.0, hop: float = 0.5,
                show_progress: bool = False, log=None, timelines: bool = True) -> Prediction:
        """Predict the clips of ``paths`` (files, folders, CSV tables); ``timelines`` False
        skips the sliding windows (the rows stay the same)."""
        if isinstance(paths, (str, Path)):
            paths = [paths]
        clips, bad = collect_inputs(paths)
        own_log = log is None
        log = open(self.cache.parent / f"{self.cache.name}.log", "a") if own_log and _mkdir(self.cache.parent) else log
        try:
            probed, undecodable = self.extract(clips, log)
        finally:
            if own_log:
                log.close()
        return self.score(clips, probed, bad + undecodable, self.cache, window, hop, show_progress, timelines)

    def __call__(self, paths: str | Path | Iterable[str | Path], **options) -> pd.DataFrame:
        """The predictions.csv rows of ``paths`` (for notebooks; no timelines are computed)."""
        return self.predict(paths, **{"timelines": False, **options}).rows

    def score(self, clips: list[InputClip], probed: pd.DataFrame, bad: list[dict[str, str]], features_root: Path,
              window: float = 2.0, hop: float = 0.5, show_progress: bool = False, timelines: bool = True) -> Prediction:
        """Score the probed clips from the stores under ``features_root`` (the cache, or the
        pipeline's features/ for its unlabeled clips)."""
        by_id = {clip.store_id: clip for clip in clips}
        probed = probed[probed["clip_id"].isin(by_id)].reset_index(drop=True)
        ids = probed["clip_id"].tolist()
        features = {name: _read(FeatureStore(features_root / name), ids) for name in self.stores}
        durations = dict(zip(ids, probed["duration_s"].astype(float)))
        notes = self._notes(features_root, ids)
        no_face, face_step = self._no_face(features_root, ids)
        rows, per_frame = [], {}
        iterator = progress(range(len(ids)), len(ids), "predict") if show_progress else range(len(ids))
        # The members run on all the clips at once (each clip is still predicted on its own);
        # the bar advances as each clip's rows are assembled.
        member_scores, standardization = self._member_scores(features, ids, by_id, durations)
        fused = self.late.combine({n: s for n, s in member_scores.items() if len(s)}) if any(len(s) for s in member_scores.values()) else None
        window_frames = self._timelines(features, ids, by_id, durations, member_scores, fused, window, hop) if timelines else []
        for i in iterator:
            clip_id = ids[i]
            clip = by_id[clip_id]
            info = probed.iloc[i]
            scored_by = [n for n, s in member_scores.items() if len(s) and clip_id in set(s["clip_id"])]
            present, missing = self._modalities(clip_id, info, features, notes)
            row = {"clip": clip.clip, "path": clip.path, "speaker": clip.speaker, "label": clip.label,
                   "duration_s": float(info["duration_s"])}
            if fused is not None and scored_by:
                row.update(self._final(fused, clip_id))
                row["reason"] = ""
            else:
                row.update({c: np.nan for c in self.task.score_columns()})
                row["reason"] = "; ".join(missing.values()) or "no member could score it (no features)"
                if self.task.class_scores:
                    row["predicted"] = ""
            row.update({"modalities": "+".join(present), "missing": "; ".join(f"{m}: {r}" for m, r in missing.items()),
                        "members": "+".join(scored_by), "standardization": standardization.get(clip_id, ""),
                        "problems": "; ".join(info["problems"]) if isinstance(info["problems"], list) else ""})
            rows.append(row)
            if fused is not None and scored_by and not self.task.class_scores and info["has_video"]:
                from pipeline.media import frame_count

                grid = fused[fused["clip_id"] == clip_id]
                per_frame[clip.clip] = frame_values(grid["time_s"].to_numpy(float), grid[self.task.score_columns()].to_numpy(float),
                                                    frame_count(clip.path), float(info["fps"]))
                row["frames"] = len(per_frame[clip.clip])
        for entry in bad:
            rows.append({"clip": entry["clip"], "path": entry["path"], "reason": entry["reason"], "members": "", "modalities": ""})
        table = pd.DataFrame(rows, columns=self.columns())
        for column in ("speaker", "label", "modalities", "missing", "members", "standardization", "problems", "reason", "predicted"):
            if column in table:
                table[column] = table[column].fillna("")
        timeline = pd.concat(window_frames, ignore_index=True) if window_frames else pd.DataFrame(columns=self.timeline_columns())
        timeline["clip"] = timeline["clip_id"].map(lambda c: by_id[c].clip) if len(timeline) else []
        timeline = timeline[self.timeline_columns()]
        return Prediction(table, timeline, {by_id[c].clip: t for c, t in no_face.items()}, face_step, per_frame)

    def columns(self) -> list[str]:
        return self.columns_for(self.task)

    @staticmethod
    def columns_for(task) -> list[str]:
        scores = task.score_columns()
        head = ["clip", "path", "speaker", "label", "duration_s"]
        if task.class_scores:
            return head + ["predicted", *scores, "modalities", "missing", "members", "standardization", "problems", "reason"]
        return head + ["frames", *[f"mean_{c}" for c in scores], "modalities", "missing", "members", "standardization", "problems", "reason"]

    def timeline_columns(self) -> list[str]:
        if self.task.class_scores:
            return ["clip", "member", "start_s", "end_s", "time_s", "time_axis", *self.task.score_columns()]
        return ["clip", "member", "time_s", *self.task.score_columns()]

    def _final(self, fused: pd.DataFrame, clip_id: str) -> dict[str, Any]:
        columns = self.task.score_columns()
        rows = fused[fused["clip_id"] == clip_id]
        if self.task.class_scores:
            values = rows[columns].to_numpy(float)[0]
            return {"predicted": self.task.classes[int(values.argmax())], **dict(zip(columns, values))}
        return {f"mean_{c}": float(rows[c].mean()) for c in columns}

    def _member_scores(self, features, ids, by_id, durations) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
        scores, standardization = {}, {}
        for name, member in self.members.items():
            given = {store: features[store] for store in member.features}
            if not any(given.values()):
                scores[name] = pd.DataFrame(columns=["clip_id", *self.task.score_columns()])
                continue
            speakers, statistics, how = self._statistics(member, given, ids, by_id)
            for clip_id, text in how.items():
                standardization.setdefault(clip_id, text)
            scores[name] = member.predict(given, speakers, durations, statistics=statistics)
        return scores, standardization

    def _statistics(self, member, given, ids, by_id):
        """(speakers, statistics, how each clip is standardised) for a member."""
        if not member.standardize_speakers:
            return None, None, {}
        from pipeline.training import speaker_statistics

        counts = pd.Series([by_id[c].speaker for c in ids if by_id[c].speaker]).value_counts()
        speakers, how = {}, {}
        for clip_id in ids:
            speaker = by_id[clip_id].speaker
            known = any(speaker in member.speaker_statistics.get(b, {}) for b in member.stores)
            if speaker and counts.get(speaker, 0) >= 2:
                speakers[clip_id], how[clip_id] = speaker, f"own speaker statistics ({speaker}: {counts[speaker]} clips)"
            elif speaker and known:
                speakers[clip_id], how[clip_id] = speaker, f"stored statistics of training speaker {speaker}"
            else:
                speakers[clip_id] = TRAINING_STATISTICS
                how[clip_id] = f"training statistics ({len(next(iter(member.speaker_statistics.values()), {}))} speakers pooled)"
        statistics = {}
        for branch, store in member.stores.items():
            sequences = given[store["features"]]
            own = {c: s for c, s in sequences.items() if speakers.get(c) not in (None, TRAINING_STATISTICS) and counts.get(speakers[c], 0) >= 2}
            statistics[branch] = {**speaker_statistics(own, speakers), TRAINING_STATISTICS: pooled_statistics(member.speaker_statistics.get(branch, {}))}
        return speakers, statistics, how

    def _timelines(self, features, ids, by_id, durations, member_scores, fused, window, hop) -> list[pd.DataFrame]:
        columns = self.task.score_columns()
        frames = []
        if not self.task.class_scores:
            for name, scores in [*member_scores.items(), ("late_fusion", fused)]:
                if scores is not None and len(scores):
                    frames.append(scores.assign(member=name)[["clip_id", "member", "time_s", *columns]])
            return frames
        windowed, spans = {}, {}
        for name, member in self.members.items():
            given = {store: features[store] for store in member.features}
            timed = [c for c in ids if _has_time_axis(c, given)]
            clip_rows = member_scores[name]
            for c in set(clip_rows["clip_id"]) - set(timed):  # functionals: one value for the clip
                values = clip_rows[clip_rows["clip_id"] == c][columns]
                frames.append(pd.DataFrame({"clip_id": c, "member": name, "start_s": 0.0, "end_s": durations[c], "time_s": durations[c] / 2,
                                            "time_axis": False, **{k: values[k].to_numpy() for k in columns}}))
            pieces = {store: {} for store in member.features}
            for c in timed:
                starts = np.arange(0.0, max(durations[c] - window, 0.0) + 1e-9, hop)
                for k, start in enumerate(starts):
                    key = f"{c}@{k}"
                    spans[key] = (c, float(start), float(min(start + window, durations[c])))
                    for store in member.features:
                        sequence = given[store].get(c)
                        if sequence is None:
                            continue
                        inside = (sequence[2] >= start) & (sequence[2] < start + window)
                        if inside.any():
                            pieces[store][key] = (sequence[0][inside], sequence[1][inside], sequence[2][inside])
            if not any(pieces.values()):
                continue
            speakers, statistics, _ = self._statistics(member, given, ids, by_id)
            if speakers is not None:
                speakers = {key: speakers[spans[key][0]] for key in spans}
            windowed[name] = member.predict(pieces, speakers, statistics=statistics)
        if windowed:
            windowed["late_fusion"] = self.late.combine({n: s for n, s in windowed.items() if n in self.late.members})
        for name, scores in windowed.items():
            located = [spans[k] for k in scores["clip_id"]]
            frames.append(pd.DataFrame({"clip_id": [s[0] for s in located], "member": name, "start_s": [s[1] for s in located],
                                        "end_s": [s[2] for s in located], "time_s": [(s[1] + s[2]) / 2 for s in located],
                                        "time_axis": True, **{k: scores[k].to_numpy() for k in columns}}))
        return [f.sort_values(["clip_id", "start_s"]) for f in frames]

    def _notes(self, root: Path, ids: list[str]) -> dict[str, dict[str, str]]:
        """Per clip, per input store (faces, audio) and extractor, the failure or note recorded."""
        wanted = set(ids)
        notes: dict[str, dict[str, str]] = {}
        for name in [*self.inputs, *self.stores]:
            store = FeatureStore(root / name)
            for failure in store.failures().to_dict("records"):
                if failure["clip_id"] in wanted and failure.get("outcome") != "partial":
                    notes.setdefault(failure["clip_id"], {}).setdefault(name, failure["reason"])
        return notes

    def _modalities(self, clip_id, info, features, notes) -> tuple[list[str], dict[str, str]]:
        present, missing = [], {}
        for source in self.inputs:
            modality = MODALITY_OF_STORE[source]
            stores = [s for s in self.stores if self.params.extractors[s].input == source]
            if any(clip_id in features[s] for s in stores):
                present.append(modality)
                continue
            stream = "video" if source == "faces" else "audio"
            if not info[f"has_{stream}"]:
                reason = f"no {stream} stream"
            else:
                recorded = notes.get(clip_id, {})
                reason = recorded.get(source) or next((recorded[s] for s in stores if s in recorded), "no features")
            missing[modality] = reason
        return present, missing

    def _no_face(self, root: Path, ids: list[str]) -> tuple[dict[str, np.ndarray], float]:
        if "faces" not in self.inputs:
            return {}, 0.2
        store = FeatureStore(root / "faces")
        indexed = set(store.clip_ids())
        result = {}
        for clip_id in ids:
            if clip_id in indexed:
                arrays = store.read(clip_id, ["mask", "timestamps"]).arrays
                result[clip_id] = arrays["timestamps"][~arrays["mask"].astype(bool)]
        return result, 1.0 / self.params.faces.fps


def pooled_statistics(by_speaker: dict[str, tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """The training speakers' statistics pooled, each speaker weighted equally (the checkpoint
    keeps per-speaker means and stds, not frame counts)."""
    means = np.stack([m for m, _ in by_speaker.values()])
    variances = np.stack([s ** 2 for _, s in by_speaker.values()])
    mean = means.mean(0)
    variance = (variances + means ** 2).mean(0) - mean ** 2
    return mean.astype(np.float32), np.sqrt(np.maximum(variance, 1e-12)).astype(np.float32)


def _has_time_axis(clip_id: str, given: dict) -> bool:
    """The clip's features have several frames in every store that has it (functionals have one)."""
    having = [sequences[clip_id] for sequences in given.values() if clip_id in sequences]
    return bool(having) and all(len(sequence[0]) > 1 for sequence in having)


def _read(store: FeatureStore, ids: list[str]):
    from pipeline.training import load_sequences

    return load_sequences(store, ids) if store.index_path.exists() else {}


def _mkdir(path: Path) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return True


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock on the cache while its stores are filled (a second prediction waits)."""
    import fcntl

    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def elapsed(start: float) -> str:
    return f"{time.perf_counter() - start:.1f} s"
