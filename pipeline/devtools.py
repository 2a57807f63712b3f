"""Helpers for tests and benchmarks that run the pipeline as a user would: a fresh git
checkout of the working tree, and DVC commands timed stage by stage."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

STAGE_START = re.compile(r"Running stage '([^']+)'")


def set_params(root: Path, **groups: dict) -> None:
    """Merge ``{"faces": {...}, "extractors.fer": {...}}`` into ``root``'s params.yaml."""
    import yaml

    path = root / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for dotted, values in groups.items():
        node = params
        for key in dotted.split("."):
            node = node[key]
        node.update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def copy_project(source: Path, target: Path) -> Path:
    """Copy the tracked and untracked-but-not-ignored files into a new git repo at ``target``."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=source, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in files:
        if (source / name).is_file() and name != "dvc.lock":
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / name, target / name)
    run(["git", "init", "-q"], target)
    # dvc exp run commits experiments, which needs an identity even on a machine without one.
    run(["git", "config", "user.name", "pipeline"], target)
    run(["git", "config", "user.email", "pipeline@localhost"], target)
    commit(target, "project copy")
    return target


def commit(root: Path, message: str) -> None:
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", message, "--allow-empty"], root)


def run(command: list[str], cwd: Path) -> str:
    output, _ = run_timed(command, cwd)
    return output


def run_timed(command: list[str], cwd: Path) -> tuple[str, dict[str, float]]:
    """Run with the current interpreter's environment on PATH; returns (output, seconds per
    DVC stage, measured from one 'Running stage' line to the next)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, times, current, started = [], {}, None, time.perf_counter()
    for line in process.stdout:
        lines.append(line)
        match = STAGE_START.search(line)
        if match:
            now = time.perf_counter()
            if current:
                times[current] = now - started
            current, started = match.group(1), now
    process.wait()
    if current:
        times[current] = time.perf_counter() - started
    output = "".join(lines)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}):\n{output[-6000:]}")
    return output, times


def stages_run(output: str) -> set[str]:
    return set(STAGE_START.findall(output))


def tiny_experiment_params(repo: Path, corpus: Path, dataset: str = "demo", folds: int = 0, test_groups: tuple[str, ...] = (),
                           speaker_standardization: bool = False) -> dict:
    """The repository's params with a cheap experiment on ``corpus`` (happy and sad): face
    geometry and a coarse log-Mel, stats heads, two epochs; ``folds`` speaker folds (0: one
    per speaker) with the speakers ``test_groups`` held out as the test set."""
    import yaml

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"].update(dataset=dataset, root=str(corpus), labels=["happy", "sad"], folds=folds, test_groups=list(test_groups))
    params["faces"].update(fps=2.0, workers=1)
    params["audio"].update(workers=1)
    params["extractors"] = {
        "geometry": {"type": "face_geometry", "input": "faces"},
        "logmel": {"type": "logmel", "input": "audio", "options": {"n_mels": 16, "hop_ms": 50.0}},
    }
    head = {"type": "stats", "options": {"hidden": 8, "dropout": 0.0}}
    params["branches"] = {"face": {"features": "geometry", "head": head}, "voice": {"features": "logmel", "head": head}}
    params["train"].update(epochs=2, patience=2, batch_size=8, workers=1, speaker_standardization=speaker_standardization)
    params["cross_modal"] = {"branches": ["face", "voice"], "options": {"concat": {"hidden": 8, "dropout": 0.0}}}
    params["fusion"] = "concat"
    params["late_fusion"] = {"members": ["face", "voice", "fusion"], "method": "mean", "grid_step": 0.1}
    return params
