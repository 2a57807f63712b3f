"""The DVC pipeline on real clips from the shared data folder: MEAD (video only, 3 actors)
and CREMA-D (Flash video with mp3 audio, one actor) go through manifest, faces, every
extractor, training and evaluation without error."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from pipeline.devtools import copy_project, run, stages_run

REPO = Path(__file__).resolve().parents[1]


def run_on(root: Path, overrides: list[str]) -> tuple[str, dict, pd.DataFrame]:
    command = ["dvc", "exp", "run", "manifest", "--downstream"]
    for override in overrides:
        command += ["-S", override]
    output = run(command, root)
    metrics = json.loads((root / "reports/metrics.json").read_text())["models"]
    return output, metrics, pd.read_csv(root / "reports/failures.csv", keep_default_na=False)


@pytest.fixture(scope="module")
def project(tmp_path_factory, shared_data) -> Path:
    return copy_project(REPO, tmp_path_factory.mktemp("real"))


def test_mead_video_only_clips(project, shared_data):
    output, metrics, failures = run_on(project, [
        "data.dataset=mead", f"data.root={shared_data / 'mead-mini'}",
        "data.labels=[angry,contempt,disgusted,fear,happy,neutral,sad,surprised]",
    ])
    assert {"faces", "audio", "extract@fer", "extract@logmel", "evaluate"} <= stages_run(output)
    assert metrics["face"]["clips"] == 24 and metrics["late_fusion"]["clips"] == 24
    assert metrics["voice"]["clips"] == 0  # no audio track: recorded, not fatal
    assert (failures.query("stage == 'audio'")["reason"].str.contains("no audio stream")).sum() == 24
    assert metrics["face"]["uar"] > 1 / 8  # above chance, leave one actor out


def test_crema_d_flash_video_with_mp3(project, shared_data):
    output, metrics, failures = run_on(project, [
        "data.dataset=crema_d", f"data.root={shared_data / 'crema-d-mini'}",
        "data.labels=[angry,disgust,fear,happy,neutral,sad]", "data.group_by=clip", "data.folds=3",
    ])
    assert {"faces", "audio", "extract@fer", "extract@logmel", "evaluate"} <= stages_run(output)
    for model in ("face", "voice", "late_fusion"):
        assert metrics[model]["clips"] == 6
    assert failures.empty
