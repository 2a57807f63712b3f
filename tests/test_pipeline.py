"""End to end, as a user runs it: `dvc repro` on the demo data in a fresh copy of the
project, then `dvc exp run -S fusion=fbp`, which must not re-run any extraction."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipeline.devtools import commit, copy_project, run, stages_run

REPO = Path(__file__).resolve().parents[1]
EXTRACTION_STAGES = {"demo_data", "manifest", "faces", "audio", "extract@fer", "extract@logmel", "extract@egemaps"}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A fresh git + DVC checkout of the working tree with the demo pipeline reproduced."""
    root = copy_project(REPO, tmp_path_factory.mktemp("project"))
    (root / "repro.log").write_text(run(["dvc", "repro"], root))
    commit(root, "repro")
    return root


@pytest.fixture(scope="module")
def metrics(project) -> dict:
    return json.loads((project / "reports/metrics.json").read_text())["models"]


def test_repro_runs_every_stage_and_writes_reports(project, metrics):
    ran = stages_run((project / "repro.log").read_text())
    assert EXTRACTION_STAGES | {"validate_params", "train@face", "train@voice", "train@prosody", "fusion", "late_fusion", "evaluate"} <= ran
    for name in ["face", "voice", "prosody", "fusion_concat", "late_fusion"]:
        assert {"accuracy", "uar", "macro_f1"} <= set(metrics[name])
    assert (project / "reports/report.md").read_text().startswith("# Evaluation report")
    confusion = pd.read_csv(project / "reports/confusion.csv")
    assert list(confusion.columns) == ["model", "actual", "predicted", "clips"]
    final = confusion[confusion["model"] == "late_fusion"]
    assert final["clips"].sum() == metrics["late_fusion"]["clips"]
    labels = yaml.safe_load((project / "params.yaml").read_text())["data"]["labels"]
    assert list(dict.fromkeys(final["actual"])) == list(dict.fromkeys(final["predicted"])) == labels  # class order
    # One row per model (reports/metrics/<model>.json), a few columns each: fits a terminal.
    show = run(["dvc", "metrics", "show"], project)
    rows = {line.split()[0]: line.split()[1:] for line in show.splitlines() if line.startswith("reports/metrics/")}
    assert set(rows) == {f"reports/metrics/{name}.json" for name in metrics}
    assert show.splitlines()[0].split() == ["Path", "accuracy", "clips", "macro_f1", "uar", "uar_fold_std"]
    assert max(map(len, show.splitlines())) <= 120


def test_declared_plots_exist_and_show_offline(project, metrics):
    """Every image plot dvc.yaml declares for evaluate is written, report.md embeds them by
    relative path, and neither they nor the page `dvc plots show` writes name a network URL."""
    declared = [next(iter(p)) if isinstance(p, dict) else p for p in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["evaluate"]["plots"]]
    images = sorted(path for name in declared for path in (project / name).rglob("*") if path.is_file())
    expected = {f"confusion_{name}.png" for name in metrics} | {"recall.png"} | {f"curves_{m}.png" for m in ("face", "voice", "prosody", "fusion")}
    assert {path.name for path in images} == expected
    assert all(path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for path in images)
    report = (project / "reports/report.md").read_text()
    embedded = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert {Path(e).name for e in embedded} == expected and all((project / "reports" / e).is_file() for e in embedded)
    run(["dvc", "plots", "show", "-o", "plots_page"], project)
    page = project / "plots_page/index.html"
    sources = re.findall(r'<img src="([^"]+)"', page.read_text())
    assert len(sources) == len(images) and all((page.parent / s).is_file() for s in sources)
    for path in [project / "reports/report.md", page, *images]:
        assert not re.search(rb"https?://", path.read_bytes()), path


def test_each_modality_is_informative_and_fusion_beats_both(metrics):
    chance = 1 / 7
    for branch in ("face", "voice", "prosody"):
        assert metrics[branch]["uar"] > 2 * chance, metrics[branch]
    best_single = max(metrics[branch]["uar"] for branch in ("face", "voice", "prosody"))
    assert metrics["late_fusion"]["uar"] > best_single
    assert metrics["fusion_concat"]["uar"] > best_single


def test_bad_clips_are_reported_and_the_rest_processed(project, metrics):
    failures = pd.read_csv(project / "reports/failures.csv", keep_default_na=False)
    reasons = failures.groupby("clip_id")["reason"].apply(" | ".join)
    assert "empty" in reasons["bad_zero_bytes"]
    assert "bad_corrupt" in reasons
    assert "no audio stream" in reasons["bad_no_audio"]
    assert "no face detected" in reasons["bad_no_face"]
    final = pd.read_parquet(project / "models/late_fusion/scores.parquet")
    # Unusable files are left out; clips missing one modality are still predicted.
    assert {"bad_no_audio", "bad_no_face"} <= set(final["clip_id"])
    assert not {"bad_zero_bytes", "bad_corrupt"} & set(final["clip_id"])
    labels = pd.read_csv(project / "data/demo/labels.csv")
    assert len(final) == len(labels) - 2
    assert metrics["face"]["clips"] == len(labels) - 3  # no face in bad_no_face
    assert metrics["voice"]["clips"] == metrics["prosody"]["clips"] == len(labels) - 3  # no audio in bad_no_audio


def test_fusion_experiment_reuses_every_cached_feature(project):
    output = run(["dvc", "exp", "run", "-S", "fusion=fbp"], project)
    # validate_params checks every changed params file; its output is unchanged, so the
    # manifest and everything after it but the fusion are skipped.
    assert stages_run(output) == {"validate_params", "fusion", "late_fusion", "predict_unlabeled", "evaluate"}, output[-3000:]
    models = json.loads((project / "reports/metrics.json").read_text())["models"]
    assert "fusion_fbp" in models and models["fusion_fbp"]["uar"] > 2 / 7


def test_sequence_fusion_experiment_trains_on_cached_features(project):
    output = run(["dvc", "exp", "run", "-S", "fusion=leader_follower", "-S", "late_fusion.method=stacking"], project)
    assert stages_run(output) == {"validate_params", "fusion", "late_fusion", "predict_unlabeled", "evaluate"}, output[-3000:]
    models = json.loads((project / "reports/metrics.json").read_text())["models"]
    assert models["fusion_leader_follower"]["uar"] > 2 / 7
    weights = json.loads((project / "models/late_fusion/weights.json").read_text())
    assert weights["method"] == "stacking" and set(weights["weights"]) == {"face", "voice", "prosody", "fusion"}
    run(["git", "checkout", "--", "params.yaml"], project)


def test_continuous_setup_runs_end_to_end_and_reuses_the_features(project):
    output = run(["python", "-m", "pipeline.setups", "demo_continuous"], project)
    ran = stages_run(output)
    # The manifest re-runs (a test speaker is held out), but extraction reads the clips without
    # folds: only the new descriptor extractor runs; faces, audio, FER and log-Mel are reused.
    assert ran & (EXTRACTION_STAGES - {"manifest"}) == set(), output[-3000:]
    assert "extract@egemaps_lld" in ran
    metrics = json.loads((project / "reports/metrics.json").read_text())
    assert metrics["task"] == "continuous"
    for name in ["face", "voice", "prosody", "fusion_leader_follower", "late_fusion"]:
        for section in ("models", "test"):
            report = metrics[section][name]
            assert -1.0 <= report["ccc_valence"] <= 1.0 and -1.0 <= report["ccc_arousal"] <= 1.0
    # The demo's faces act the emotion, so the face branch follows valence out of fold.
    assert metrics["models"]["face"]["ccc_valence"] > 0.3, metrics["models"]["face"]
    scores = pd.read_parquet(project / "models/fusion/scores.parquet")
    manifest = pd.read_parquet(project / "data/manifest.parquet")
    held_out = set(manifest.loc[manifest["speaker"] == "spk05", "clip_id"])
    assert set(scores.loc[scores["fold"] == -1, "clip_id"]) == held_out & set(scores["clip_id"])
    assert held_out and not held_out & set(scores.loc[scores["fold"] >= 0, "clip_id"])
    run(["git", "checkout", "--", "params.yaml"], project)
