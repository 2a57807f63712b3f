"""The faces stage on a corpus without video (EmoDB-like: 1440 audio-only clips) once aborted
after its report with "terminate called without an active exception" (exit -6). The cause:
pandas.read_parquet hands Arrow a Python file object, whose read-ahead runs on Arrow's IO
threads and takes the GIL; one still doing so while the interpreter shuts down is stopped
with pthread_exit inside C++ code, which aborts the process. The stores and the extraction
stages now let Arrow read and write files by path."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipeline.config import FacesParams
from pipeline.extraction import extract_faces, read_clips
from pipeline.store import FeatureStore

REPO = Path(__file__).resolve().parents[2]
RUNS = 10


def audio_only_clips(count: int) -> pd.DataFrame:
    return pd.DataFrame({
        "clip_id": [f"{i // 10:02d}a{i:04d}" for i in range(count)],
        "path": [f"wav/{i:04d}.wav" for i in range(count)],
        "audio_path": "", "speaker": [f"{i % 10:02d}" for i in range(count)],
        "duration_s": 2.5, "fps": 0.0, "has_video": False, "has_audio": True,
    })


def test_the_faces_stage_exits_cleanly_run_after_run_on_a_corpus_without_video(tmp_path):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "data").mkdir()
    audio_only_clips(1440).to_parquet(tmp_path / "data" / "clips.parquet", index=False)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for attempt in range(RUNS):
        run = subprocess.run([sys.executable, "-m", "pipeline.stages.faces"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=120)
        output = run.stdout + run.stderr
        assert run.returncode == 0 and "terminate called" not in output, f"run {attempt}: exit {run.returncode}\n{output[-2000:]}"
    assert "faces: 0 of 0 clips to process" in run.stdout
    failures = FeatureStore(tmp_path / "features" / "faces").failures()
    assert len(failures) == 1440 and set(failures["reason"].str.endswith(": no video stream")) == {True}


def test_the_extraction_chain_never_reads_parquet_through_pandas(tmp_path, monkeypatch, capsys):
    clips = audio_only_clips(20)
    clips.to_parquet(tmp_path / "clips.parquet", index=False)

    def through_a_python_file(*args, **kwargs):
        raise AssertionError("pandas.read_parquet passes Arrow a Python file object (aborts at exit)")

    monkeypatch.setattr(pd, "read_parquet", through_a_python_file)
    table = read_clips(tmp_path / "clips.parquet")
    extract_faces(FacesParams(workers=1), table, tmp_path / "faces")
    # One line for the 20 clips without video, naming a few, not one line per clip.
    printed = [line for line in capsys.readouterr().out.splitlines() if "no video stream" in line]
    assert printed == ["  20 clips: no video stream (e.g. 00a0000, 00a0001, 00a0002 and 17 more)"]
    extract_faces(FacesParams(workers=1), table, tmp_path / "faces")  # reads its own index this time
    assert FeatureStore(tmp_path / "faces").clip_ids() == []
    with pytest.raises(FileNotFoundError, match="manifest missing"):
        read_clips(tmp_path / "none.parquet")
