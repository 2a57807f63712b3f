"""Predicting new clips with a trained experiment, and the pipeline's unlabeled clips.

One tiny demo experiment (4 speakers x 2 emotions, face geometry and a coarse log-Mel, stats
heads, speaker standardisation; the voice branch a seed ensemble of two) with speaker spk03
held out as the test set and two unlabeled rows, run through `dvc repro`; then
`python -m pipeline.predict` on the held-out speaker's clips must give the pipeline's fold -1
probabilities. The continuous variant re-trains on the
same cached features."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.datasets.demo.generator import generate
from pipeline.datasets.demo.spec import DemoSpec
from pipeline.devtools import commit, copy_project, run, tiny_experiment_params

REPO = Path(__file__).resolve().parents[1]
UNLABELED = ["u_spk02_happy", "u_spk02_sad"]  # copies of spk02's clips listed without a label
HELD_OUT = "spk03"


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("predict")
    corpus = base / "corpus"
    generate(corpus, DemoSpec(identities=4, emotions=["happy", "sad"], takes=1, min_duration_s=2.0, max_duration_s=3.0, size=128))
    table = pd.read_csv(corpus / "labels.csv", dtype=str, keep_default_na=False)
    copies = table[table["clip_id"].isin(["spk02_happy_t0", "spk02_sad_t0"])].assign(clip_id=UNLABELED, label="")
    pd.concat([table, copies]).to_csv(corpus / "labels.csv", index=False)
    root = copy_project(REPO, base / "project")
    params = tiny_experiment_params(REPO, corpus, test_groups=[HELD_OUT], speaker_standardization=True)
    params["branches"]["voice"]["seeds"] = 2  # each fold the mean of two models, in training and in prediction alike
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    commit(root, "tiny experiment")
    (root / "repro.log").write_text(run(["dvc", "repro", "predict_unlabeled", "evaluate"], root))
    return root


def predict(project: Path, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.predict", *arguments], cwd=project, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.fixture(scope="module")
def predicted(project, tmp_path_factory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """The command on a CSV of the held-out speaker's clips (a speaker column), a corrupt file
    and a missing one."""
    manifest = pd.read_parquet(project / "data/manifest.parquet")
    held_out = manifest[manifest["speaker"] == HELD_OUT]
    work = tmp_path_factory.mktemp("predicted")
    held_out.assign(path=held_out["path"])[["clip_id", "path", "speaker"]].to_csv(work / "held_out.csv", index=False)
    corpus = Path(manifest["path"].iloc[0]).parent
    out, cache = work / "out", work / "cache"
    result = predict(project, str(work / "held_out.csv"), str(corpus / "bad_corrupt.mp4"), str(work / "missing.mp4"),
                     "--out", str(out), "--cache", str(cache), "--window", "1.0", "--hop", "0.5")
    assert result.returncode == 0, result.stderr[-3000:]
    return out, cache, result


def rows_of(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "predictions.csv", keep_default_na=False).set_index("clip")


def test_command_reproduces_the_pipelines_fold_minus_one_probabilities(project, predicted):
    out, _, _ = predicted
    rows = rows_of(out)
    final = pd.read_parquet(project / "models/late_fusion/scores.parquet")
    test = final[final["fold"] == -1].set_index("clip_id")
    assert len(test) >= 3 and set(test.index) <= set(rows.index)
    for column in ("p_happy", "p_sad"):
        np.testing.assert_allclose(rows.loc[test.index, column].astype(float), test[column], atol=1e-5, rtol=0)
    assert (rows.loc[test.index, "predicted"] == np.where(test["p_happy"] >= test["p_sad"], "happy", "sad")).all()
    good = [c for c in test.index if not c.startswith("bad_")]
    assert (rows.loc[good, "standardization"].str.startswith(f"own speaker statistics ({HELD_OUT}")).all()
    assert (rows.loc[good, "modalities"] == "audio+face").all() and (rows.loc[good, "members"] == "face+voice+fusion").all()


def test_missing_modalities_are_named_and_bad_inputs_get_their_reason(project, predicted):
    out, _, result = predicted
    rows = rows_of(out)
    manifest = pd.read_parquet(project / "data/manifest.parquet").set_index("clip_id")
    assert manifest.loc["bad_no_face", "speaker"] == HELD_OUT  # in the CSV: predicted with a face missing
    no_face = rows.loc["bad_no_face"]
    assert no_face["reason"] == "" and no_face["modalities"] == "audio" and no_face["members"] == "voice+fusion"
    assert no_face["missing"].startswith("face: ") and "no face detected" in no_face["missing"]
    assert rows.loc["bad_corrupt", "reason"].startswith(str(Path(manifest["path"].iloc[0]).parent / "bad_corrupt.mp4"))
    assert "cannot open container" in rows.loc["bad_corrupt", "reason"] and rows.loc["missing", "reason"].endswith("no such file or folder")
    assert rows.loc[["bad_corrupt", "missing"], "p_happy"].eq("").all()
    assert "bad_corrupt: " in result.stdout and "bad_no_face: scored without face" in result.stdout


def test_timelines_plots_and_the_cache(project, predicted):
    out, cache, _ = predicted
    rows = rows_of(out)
    scored = rows.index[rows["reason"] == ""]
    timelines = pd.read_parquet(out / "timelines.parquet")
    assert set(timelines["member"]) == {"face", "voice", "fusion", "late_fusion"}
    assert timelines["time_axis"].all()  # geometry and log-Mel are sequences: sliding windows
    fused = timelines[timelines["member"] == "late_fusion"]
    for clip in scored:
        windows = fused[fused["clip"] == clip]
        # 1 s windows every 0.5 s over a 2-3 s clip
        assert len(windows) >= 2 and (windows["end_s"] - windows["start_s"]).max() == pytest.approx(1.0)
        np.testing.assert_allclose(windows[["p_happy", "p_sad"]].sum(1), 1.0, atol=1e-6)
        assert (out / "plots" / f"{clip}.png").stat().st_size > 1000
    assert not (fused["clip"] == "bad_corrupt").any()
    # New clips never go into the corpus's stores; predicting them again redoes nothing.
    corpus_faces = set(pd.read_parquet(project / "features/faces/index.parquet")["clip_id"])
    cached = set(pd.read_parquet(cache / "faces/index.parquet")["clip_id"])
    assert cached and not cached & corpus_faces
    again = predict(project, str(out.parent / "held_out.csv"), "--out", str(out.parent / "again"), "--cache", str(cache), "--no-plots")
    assert again.returncode == 0, again.stderr[-3000:]
    log = (out.parent / "again" / "extraction.log").read_text()
    for stage in ("faces", "audio", "extract@geometry", "extract@logmel"):
        assert f"{stage}: 0 of " in log, log
    np.testing.assert_allclose(rows_of(out.parent / "again")["p_happy"].astype(float), rows.loc[rows_of(out.parent / "again").index, "p_happy"].astype(float), atol=1e-9)


def test_api_loads_once_and_gives_the_commands_rows(project, predicted, monkeypatch):
    import pipeline.checkpoint

    from pipeline.inference import Predictor

    out, cache, _ = predicted
    predictor = Predictor.from_experiment(project, cache)
    assert predictor.members["voice"].seeds == 2 and predictor.members["face"].seeds == 1
    monkeypatch.setattr(pipeline.checkpoint, "load_member", lambda *a: pytest.fail("a model was loaded again"))
    manifest = pd.read_parquet(project / "data/manifest.parquet").set_index("clip_id")
    rows = rows_of(out)
    first = predictor(manifest.loc["spk03_happy_t0", "path"])
    second = predictor(manifest.loc["spk03_sad_t0", "path"]).set_index("clip")
    # Alone and without a speaker, a clip is standardised with the training speakers' statistics.
    assert first["standardization"].iloc[0].startswith("training statistics")
    assert second.loc["spk03_sad_t0", "reason"] == "" and second.loc["spk03_sad_t0", "predicted"] in ("happy", "sad")
    both = predictor(out.parent / "held_out.csv").set_index("clip")
    np.testing.assert_allclose(both["p_happy"].astype(float), rows.loc[both.index, "p_happy"].astype(float), atol=1e-9)


def test_the_report_names_the_seed_ensemble(project):
    metrics = json.loads((project / "reports/metrics.json").read_text())
    assert metrics["models"]["voice"]["seeds"] == 2 and "seeds" not in metrics["models"]["face"]
    report = (project / "reports/report.md").read_text()
    assert "| voice (mean of 2 seeds) |" in report and "| face |" in report
    curves = pd.read_csv(project / "models/branches/voice/curves.csv")
    assert sorted(curves["seed"].unique()) == [0, 1] and curves.groupby(["fold", "seed"]).ngroups == 2 * curves["fold"].nunique()


def test_unlabeled_clips_are_predicted_and_never_trained_or_scored(project):
    manifest = pd.read_parquet(project / "data/manifest.parquet").set_index("clip_id")
    assert (manifest.loc[UNLABELED, "label"] == "").all() and (manifest.loc[UNLABELED, "fold"] == -1).all()
    predictions = pd.read_csv(project / "reports/predictions.csv", keep_default_na=False)
    assert sorted(predictions["clip"]) == UNLABELED and (predictions["reason"] == "").all()
    np.testing.assert_allclose(predictions[["p_happy", "p_sad"]].sum(1), 1.0, atol=1e-6)
    for member in ("models/branches/face", "models/branches/voice", "models/fusion", "models/late_fusion"):
        assert not set(UNLABELED) & set(pd.read_parquet(project / member / "scores.parquet")["clip_id"]), member
    metrics = json.loads((project / "reports/metrics.json").read_text())
    labelled_test = ((manifest["fold"] == -1) & (manifest["label"] != "")).sum()
    assert metrics["unlabeled"] == 2 and metrics["test"]["late_fusion"]["clips"] == labelled_test
    assert metrics["models"]["late_fusion"]["clips"] == (manifest["fold"] >= 0).sum()
    assert "Unlabeled clips: 2" in (project / "reports/report.md").read_text()


def test_continuous_setup_writes_a_line_per_video_frame_of_each_unlabeled_video(project, tmp_path):
    root = tmp_path / "continuous"
    shutil.copytree(project, root, symlinks=True)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["task"] = "continuous"
    params["continuous"].update(window=6, hop=3)
    tcn = {"type": "tcn", "options": {"channels": 8, "levels": 2, "pool": 1}}
    for branch in params["branches"].values():
        branch["head"] = tcn
    params["fusion"] = "leader_follower"
    params["cross_modal"]["options"] = {"leader_follower": {"dim": 8, "heads": 2, "dropout": 0.0}}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    output = run(["dvc", "repro", "predict_unlabeled"], root)
    assert "Running stage 'faces'" not in output  # the cached features are reused
    predictions = pd.read_csv(root / "reports/predictions.csv", keep_default_na=False).set_index("clip")
    manifest = pd.read_parquet(root / "data/manifest.parquet").set_index("clip_id")
    assert set(UNLABELED) <= set(predictions.index)  # no per-frame annotation: unlabeled for this task
    for clip in UNLABELED:
        with av.open(manifest.loc[clip, "path"]) as container:
            frames = sum(1 for _ in container.decode(video=0))
        lines = (root / "reports/predictions" / f"{clip}.txt").read_text().splitlines()
        assert lines[0] == "valence,arousal" and len(lines) - 1 == frames == predictions.loc[clip, "frames"]
        values = np.array([[float(v) for v in line.split(",")] for line in lines[1:]])
        assert np.isfinite(values).all() and values.std(0).max() > 0


def test_inputs_from_files_speaker_folders_and_tables(tmp_path):
    from pipeline.inference import collect_inputs

    for name in ("alice/a1.mp4", "alice/a2.mp4", "bob/b1.wav", "loose.mp4", "notes.txt", "empty/readme.md"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    pd.DataFrame({"file": ["alice/a1.mp4", "bob/b1.wav"], "speaker": ["A", "B"], "clip_id": ["x", "y"]}).to_csv(tmp_path / "t.csv", index=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other/loose.mp4").write_bytes(b"")
    clips, bad = collect_inputs([tmp_path / "t.csv", tmp_path, tmp_path / "loose.mp4", tmp_path / "gone.mp4", tmp_path / "empty"])
    # A file given twice is predicted once, as first given (a1 and b1 by the table, with its speakers).
    assert {c.clip: c.speaker for c in clips} == {"x": "A", "y": "B", "alice/a2": "alice", "loose": "", "other/loose": "other"}
    assert len({c.store_id for c in clips}) == len(clips)
    assert [b["reason"] for b in bad] == [f"{tmp_path / 'gone.mp4'}: no such file or folder",
                                           f"{tmp_path / 'empty'}: folder holds no video or audio file "
                                           "(.mp4, .avi, .flv, .mkv, .mov, .webm, .mpg, .wav, .flac, .mp3, .m4a, .ogg)"]


def test_pooled_training_statistics_weigh_speakers_equally():
    from pipeline.inference import pooled_statistics

    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, (500, 3)), rng.normal(4, 2, (500, 3))
    mean, std = pooled_statistics({"a": (a.mean(0), a.std(0)), "b": (b.mean(0), b.std(0))})
    both = np.concatenate([a, b])
    np.testing.assert_allclose(mean, both.mean(0), rtol=1e-5)
    np.testing.assert_allclose(std, both.std(0), rtol=1e-5)


def test_params_whose_extractors_differ_from_the_checkpoints_are_refused(project, tmp_path):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["extractors"]["logmel"]["options"]["n_mels"] = 24
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "models").symlink_to(project / "models")
    result = predict(project, "whatever.mp4", "--experiment", str(tmp_path), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "extractors.logmel is not what member" in result.stderr and "was trained on" in result.stderr
