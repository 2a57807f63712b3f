"""The validate_params stage, with real `dvc exp run` in a copy of the project: a key no
stage depends on stops the run, and a valid change re-runs the check without re-running the
manifest that depends on it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.datasets.demo.encode import write_clip
from pipeline.devtools import commit, copy_project, run, stages_run
from pipeline.stages.validate_params import CHECKED, CONTENT

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A project copy whose manifest (on a four-clip csv corpus) is reproduced."""
    root = copy_project(REPO, tmp_path_factory.mktemp("params_stage"))
    corpus = root / "corpus"
    corpus.mkdir()
    rows = []
    for index, (label, speaker) in enumerate([("happy", "a"), ("sad", "a"), ("happy", "b"), ("sad", "b")]):
        frames = [np.full((32, 32, 3), 40 * index + i, np.uint8) for i in range(8)]
        write_clip(corpus / f"c{index}.mp4", frames, 25, 32, np.zeros(4800, np.float32), 16000)
        rows.append({"path": f"c{index}.mp4", "label": label, "speaker": speaker})
    pd.DataFrame(rows).to_csv(corpus / "labels.csv", index=False)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["data"].update(dataset="csv", root="corpus", labels=["happy", "sad"])
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # The manifest alone, as `--single-item` or `manifest --downstream` run it: the check's
    # output is in git, so a fresh checkout has it.
    output = run(["dvc", "repro", "--single-item", "manifest"], root)
    assert stages_run(output) == {"manifest"}, output
    commit(root, "manifest")
    return root


def test_a_key_no_stage_depends_on_stops_the_run_naming_it(project):
    with pytest.raises(RuntimeError) as caught:
        run(["dvc", "exp", "run", "-S", "+foo=1", "manifest"], project)
    output = str(caught.value)
    assert "params.yaml: unknown key(s) ['foo']; allowed: ['audio'," in output
    assert stages_run(output) == {"validate_params"}  # stopped before the manifest
    run(["git", "checkout", "--", "params.yaml"], project)


def test_a_valid_change_is_checked_and_reruns_nothing_else(project):
    # The manifest ran on the committed output; the check rewrites it byte for byte.
    output = run(["dvc", "exp", "run", "-S", "train.lr=0.01", "manifest"], project)
    assert stages_run(output) == {"validate_params"}, output
    assert "validate_params: params.yaml is valid" in output
    assert "Stage 'manifest' didn't change, skipping" in output
    run(["git", "checkout", "--", "params.yaml"], project)


def test_the_committed_output_is_what_a_valid_run_writes():
    assert (REPO / CHECKED).read_text() == CONTENT
