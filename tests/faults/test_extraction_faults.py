"""The extraction stages under faults, on a tiny demo project reproduced once cleanly: kill -9
of the faces stage and of a torch extract stage (fer, 2 workers each) at seeded random moments
and at exact points (between the index and the failures writes among them), unreadable store
files, a full disk and two stage processes writing one store at once. After each fault a plain
re-run must leave the store equal, array for array, to the clean run's, no temporary file, and
no process of the killed stage alive; at the end the pipeline trained on the repaired stores
reports the clean run's metrics and failures."""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import psutil
import pytest
import yaml

from pipeline.devtools import copy_project, run, run_timed, set_params, stages_run
from pipeline.extraction import FAULT_POINT_VARIABLE

# -- the project and how its stages are run and compared ------------------------------------

REPO = Path(__file__).resolve().parents[2]
STORES = ("faces", "audio", "fer", "logmel", "egemaps")
# 4 speakers x 2 emotions x 1 take of 0.6-0.8 s, plus the demo's four bad clips.
DEMO = {"identities": 4, "emotions": ["neutral", "happy"], "takes": 1, "min_duration_s": 0.6, "max_duration_s": 0.8}
TRAIN = {"epochs": 2, "patience": 2, "batch_size": 8}


def make_project(target: Path) -> Path:
    """Every extraction stage as the demo has them (fer with 2 workers, so a kill leaves helpers
    behind), and two small branches with their fusion: enough to see the stores' failures
    reach the report."""
    root = copy_project(REPO, target)
    set_params(root, demo=DEMO, train=TRAIN, late_fusion={"method": "mean", "members": ["face", "voice", "fusion"]},
               cross_modal={"branches": ["face", "voice"]}, **{"extractors.fer": {"workers": 2}})
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["branches"] = {name: params["branches"][name] for name in ("face", "voice")}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def store_digest(store: Path) -> dict:
    """Everything a store holds, array by array: equal digests mean equal stores."""
    digest = {}
    for path in sorted(store.rglob("*")):
        if path.is_dir():
            continue
        name = str(path.relative_to(store))
        if path.suffix == ".h5":
            with h5py.File(path, "r") as handle:
                arrays = {key: hashlib.sha256(np.ascontiguousarray(handle[key][()]).tobytes()).hexdigest() for key in handle}
                digest[name] = {"arrays": arrays, "attrs": {key: str(value) for key, value in handle.attrs.items()}}
        elif path.suffix == ".parquet":
            digest[name] = pd.read_parquet(path).to_json()
        else:
            digest[name] = path.read_text()
    return digest


def temporary_files(root: Path) -> list[Path]:
    return sorted((root / "features").rglob("*.tmp"))


@dataclass
class Clean:
    """The clean run's results."""

    stores: dict[str, dict]
    failures: str
    metrics: dict
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> wall time of a full run


def snapshot(root: Path) -> Clean:
    return Clean(
        {name: store_digest(root / "features" / name) for name in STORES},
        (root / "reports" / "failures.csv").read_text(),
        json.loads((root / "reports" / "metrics.json").read_text()),
    )


def stage_command(stage: str) -> list[str]:
    """``faces`` or ``extract@fer`` -> the command dvc.yaml runs."""
    name, _, item = stage.partition("@")
    return [sys.executable, "-m", f"pipeline.stages.{name}", *([item] if item else [])]


@dataclass
class StageRun:
    returncode: int
    output: str
    seconds: float
    descendants: set[int]  # every process the stage started (helpers, resource tracker)


def run_stage(root: Path, stage: str, kill_after: float | None = None, env: dict[str, str] | None = None,
              timeout: float = 300) -> StageRun:
    """Run one stage in ``root``; ``kill_after`` seconds: SIGKILL the stage process then (its
    children are left to fend for themselves, as after a kill -9)."""
    started = time.perf_counter()
    process = subprocess.Popen(stage_command(stage), cwd=root, env={**os.environ, **(env or {})},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    descendants: set[int] = set()
    done = threading.Event()

    def watch() -> None:
        try:
            parent = psutil.Process(process.pid)
            while not done.is_set():
                try:
                    descendants.update(child.pid for child in parent.children(recursive=True))
                except psutil.Error:
                    return
                done.wait(0.05)
        except psutil.Error:
            return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    if kill_after is not None:
        try:
            process.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
    output = process.communicate(timeout=timeout)[0]
    done.set()
    watcher.join()
    return StageRun(process.returncode, output, time.perf_counter() - started, descendants)


def survivors(pids: set[int], grace: float = 10.0) -> list[str]:
    """The processes of ``pids`` still alive after ``grace`` seconds (zombies count as gone)."""
    deadline = time.time() + grace
    alive = []
    while True:
        alive = []
        for pid in pids:
            try:
                process = psutil.Process(pid)
                if process.status() != psutil.STATUS_ZOMBIE:
                    alive.append(f"{pid} {' '.join(process.cmdline())[:120]}")
            except psutil.Error:
                continue
        if not alive or time.time() > deadline:
            return alive
        time.sleep(0.2)


# -- the faults -----------------------------------------------------------------------------

SEED = 14


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """(project root, the clean run, a copy of its features/)."""
    base = tmp_path_factory.mktemp("faults")
    root = make_project(base / "project")
    _, seconds = run_timed(["dvc", "repro"], root)
    clean = snapshot(root)
    clean.seconds = seconds
    shutil.copytree(root / "features", base / "clean_features")
    return root, clean, base / "clean_features"


KILLS = [
    ("faces", "random"),
    ("faces", "random"),
    ("faces", "after-clip-3"),
    ("faces", "between-index-and-failures"),
    ("extract@fer", "random"),
    ("extract@fer", "after-clip-2"),
    ("extract@fer", "between-index-and-failures"),
]


@pytest.mark.parametrize("attempt", range(len(KILLS)), ids=[f"{stage}-{point}-{i}" for i, (stage, point) in enumerate(KILLS)])
def test_a_killed_stage_is_repaired_by_a_plain_rerun(project, attempt):
    root, clean, _ = project
    stage, point = KILLS[attempt]
    store = stage.rpartition("@")[2]
    shutil.rmtree(root / "features" / store)
    if point == "random":
        # Somewhere in the run: after start-up (imports, helpers) as often as during it.
        moment = random.Random(f"{SEED}-{attempt}").uniform(0.15, 0.85) * clean.seconds[stage]
        killed = run_stage(root, stage, kill_after=moment)
    else:
        killed = run_stage(root, stage, env={FAULT_POINT_VARIABLE: f"{stage}:{point}"})
        assert killed.returncode == -9, killed.output[-2000:]
    assert killed.returncode in (-9, 0), killed.output[-2000:]
    assert not survivors(killed.descendants), "a process of the killed stage outlived it"

    rerun = run_stage(root, stage)
    assert rerun.returncode == 0, rerun.output[-3000:]
    assert store_digest(root / "features" / store) == clean.stores[store]
    assert not temporary_files(root)
    assert not survivors(rerun.descendants, grace=0)


def test_an_unreadable_index_or_failures_file_is_rebuilt_with_a_warning(project):
    root, clean, _ = project
    store = root / "features" / "faces"
    (store / "failures.csv").write_bytes(b"")  # what a kill between the two writes used to leave
    index = store / "index.parquet"
    index.write_bytes(index.read_bytes()[: index.stat().st_size // 2])
    rerun = run_stage(root, "faces")
    assert rerun.returncode == 0, rerun.output[-3000:]
    assert "index.parquet: cannot be read" in rerun.output
    assert "0 of 10 clips to process" in rerun.output
    assert store_digest(store) == clean.stores["faces"]


def test_two_stage_processes_writing_one_store_leave_every_clip_indexed(project):
    root, clean, _ = project
    shutil.rmtree(root / "features" / "faces")
    first = subprocess.Popen(stage_command("faces"), cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(0.4 * clean.seconds["faces"])  # the second starts while the first is writing entries
    second = run_stage(root, "faces")
    first_output = first.communicate(timeout=300)[0]
    assert first.returncode == 0 and second.returncode == 0, first_output[-2000:] + second.output[-2000:]
    assert store_digest(root / "features" / "faces") == clean.stores["faces"]
    assert not temporary_files(root)


def test_a_full_disk_stops_the_stage_clearly_and_a_rerun_with_room_completes(project):
    root, clean, clean_features = project
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem for features/faces needs root")
    target = root / "features" / "faces"
    entries = sum(path.stat().st_size for path in (clean_features / "faces").rglob("*.h5"))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={entries // 2}", "tmpfs", str(target)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs on {target}: {mounted.stderr.strip()}")
    try:
        full = run_stage(root, "faces")
        assert full.returncode == 1, full.output[-3000:]
        assert "faces: no space left on the device holding features/faces" in full.output
        assert "run the stage again" in full.output
        assert not survivors(full.descendants)
        assert not temporary_files(root)
        kept = len(list((target / "entries").glob("*.h5")))
        assert kept > 0
        subprocess.run(["mount", "-o", "remount,size=64m", str(target)], check=True)
        again = run_stage(root, "faces")
        assert again.returncode == 0, again.output[-3000:]
        assert f"{10 - kept} of 10 clips to process" in again.output  # nothing written before the disk filled is redone
        assert store_digest(target) == clean.stores["faces"]
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)
    assert store_digest(target) == clean.stores["faces"]  # the clean store, under the mount point


def test_after_the_faults_the_pipeline_reports_what_a_clean_run_reports(project):
    root, clean, _ = project
    for name in STORES:
        assert store_digest(root / "features" / name) == clean.stores[name], name
    # DVC sees every store as the clean run left it, so nothing re-runs ...
    assert stages_run(run(["dvc", "repro"], root)) == set()
    # ... and training the face branch again on the repaired faces and fer stores, then
    # evaluating, gives the same numbers and the same failures, each blamed on the stage that
    # failed it (bad_no_face on faces, not on extract@fer).
    run(["dvc", "repro", "-f", "-s", "train@face", "late_fusion", "evaluate"], root)
    assert json.loads((root / "reports" / "metrics.json").read_text()) == clean.metrics
    failures = (root / "reports" / "failures.csv").read_text()
    assert failures == clean.failures
    assert "bad_no_face,faces," in failures and "extract@fer" not in failures
    # With nothing changed, a forced extract stage processes nothing.
    forced = run(["dvc", "repro", "-f", "-s", "extract@fer"], root)
    assert "extract@fer: 0 of 10 clips to process: 0 new, 0 stale; 10 up to date (1 known failures)" in forced


def test_a_changed_faces_param_says_why_every_derived_entry_is_redone(project):
    root, _, clean_features = project
    params, lock = root / "params.yaml", root / "dvc.lock"
    original, locked = params.read_text(), lock.read_text()
    params.write_text(original.replace("  fps: 5.0", "  fps: 10.0"))
    try:
        output = run(["dvc", "repro", "extract@fer"], root)
        assert "faces: 10 of 10 clips to process: 0 new, 10 stale (config 10)" in output
        assert "extract@fer: 10 of 10 clips to process: 0 new, 10 stale (input entry 10)" in output
    finally:
        params.write_text(original)
        lock.write_text(locked)
        for name in ("faces", "fer"):
            shutil.rmtree(root / "features" / name)
            shutil.copytree(clean_features / name, root / "features" / name)
