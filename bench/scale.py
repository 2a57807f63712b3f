"""Scaling of extraction on the demo clips, in a fresh copy of the project:

    python bench/scale.py [--keep DIR] [--extractor fer] [--repeat 4] [--identities N --takes N]
                          [--parts throughput,incremental,memory] [--source DIR] [--idle-runs 3]

1. clips per second of the faces stage and of one extractor stage with the ``local`` executor
   (1 and 2 worker processes) and the ``ray`` executor (1 and 2 actors, on a Ray head started
   here with 2 CPUs and reached through RAY_ADDRESS, as on a cluster);
2. incremental: the demo clips less every tenth one are extracted, then the held-out tenth is
   added; the second run's time as a share of a full extraction (target <= 15 %), for the
   whole stage processes and for their extraction alone, and the fixed cost of a stage run
   that has nothing to extract;
3. memory: peak resident memory of the stage's process tree (sampled) when extracting the demo
   clips once and ``--repeat`` times over (the same files under new clip ids); target: the
   repeated run stays within 1.2x of the single one;
4. the incremental figure again at ``--repeat`` times the clips.

Every stage is run as the pipeline runs it (``python -m pipeline.stages.<stage>``), so the
times include interpreter start-up and imports. ``--parts`` picks the measurements (the
incremental part always prints the fixed cost); ``--source`` copies another checkout of the
project (e.g. an older commit, for a before/after figure) instead of this one.
"""
from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.devtools import copy_project, set_params  # noqa: E402

INCREMENTAL_TARGET = 0.15
MEMORY_TARGET = 1.2
FIXED_COST_TARGET = 1.0  # seconds, per stage run with nothing to extract


EXTRACTION_TIME = re.compile(r"extraction took ([0-9.]+) s")


@dataclass
class StageRun:
    seconds: float
    peak_rss: int  # bytes, summed over the stage process and its children
    output: str
    cpu_seconds: float = 0.0  # user + system time of the stage process and the children it waited for

    @property
    def extraction_seconds(self) -> float:
        """What fill_store reports: the skip check, the executor (worker start-up and model
        builds included) and the index; not the interpreter start-up, imports and params
        validation that every stage run pays once."""
        return float(EXTRACTION_TIME.findall(self.output)[-1])


def run_stage(root: Path, args: list[str], env: dict[str, str] | None = None) -> StageRun:
    """Run ``python -m pipeline.stages.<args>`` in ``root``, sampling the process tree's memory."""
    command = [sys.executable, "-m", f"pipeline.stages.{args[0]}", *args[1:]]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=root, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak, done = 0, threading.Event()

    def sample() -> None:
        nonlocal peak
        parent = psutil.Process(process.pid)
        while not done.is_set():
            try:
                tree = [parent, *parent.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                pass  # a child exited between listing and reading it
            done.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = process.communicate()[0]
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}):\n{output[-4000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return StageRun(seconds, peak, output, cpu)


def use_clips(root: Path, table: pd.DataFrame) -> None:
    """Point data.root at a labels.csv listing ``table``'s clips (csv adapter)."""
    data_root = root / "data" / "bench"
    data_root.mkdir(parents=True, exist_ok=True)
    table.to_csv(data_root / "labels.csv", index=False)
    # The listed clips stay where demo_data wrote them (outside data/bench): the bench runs the
    # stages directly, never through DVC, so DVC not tracking them costs nothing here.
    set_params(root, data={"dataset": "csv", "root": "data/bench", "options": {}, "allow_outside_root": True})


def clear_features(root: Path, *stores: str) -> None:
    for store in stores:
        shutil.rmtree(root / "features" / store, ignore_errors=True)


def extract(root: Path, extractor: str, env: dict[str, str] | None = None) -> tuple[StageRun, StageRun]:
    """The manifest, then faces and the extractor; returns the faces and extractor runs."""
    run_stage(root, ["manifest"])
    return run_stage(root, ["faces"], env), run_stage(root, ["extract", extractor], env)


def clip_count(root: Path, store: str) -> int:
    return len(pd.read_parquet(root / "features" / store / "index.parquet"))


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RayHead:
    """``ray start --head --block`` in its own session, ended through that session's id.
    Drivers reach it with ``env`` (its address, and the token authentication that ``ray
    start`` enables, with the token in ~/.ray/auth_token)."""

    def __init__(self, cpus: int) -> None:
        self.temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
        port = free_port()
        self.address = f"127.0.0.1:{port}"
        self.env = {"RAY_ADDRESS": self.address, "RAY_AUTH_MODE": "token"}
        os.environ["RAY_AUTH_MODE"] = "token"  # for the readiness check below
        ray = Path(sys.executable).parent / "ray"
        command = [str(ray), "start", "--head", "--block", f"--port={port}", f"--num-cpus={cpus}", "--num-gpus=0",
                   "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={self.temp_dir}"]
        started = time.perf_counter()
        self.process = subprocess.Popen(
            command, env={**os.environ, **self.env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        import ray as ray_api

        deadline = time.time() + 120
        while True:
            try:
                ray_api.init(address=self.address, include_dashboard=False, log_to_driver=False)
                ray_api.shutdown()
                break
            except Exception:
                if time.time() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise
                time.sleep(1)
        self.start_seconds = time.perf_counter() - started

    def stop(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=60)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.process.pid, signal.SIGKILL)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def incremental(root: Path, clips: pd.DataFrame, extractor: str, full_faces: StageRun, full_features: StageRun) -> None:
    """Extract all clips but every tenth, then add those; print the second run's cost as a
    share of the full extraction (``full_*``: the stages run on all clips from scratch)."""
    held_out = np.arange(len(clips)) % 10 == 9
    clear_features(root, "faces", extractor)
    use_clips(root, clips[~held_out])
    extract(root, extractor)
    use_clips(root, clips)
    added_faces, added_features = extract(root, extractor)
    full = full_faces.seconds + full_features.seconds
    added = added_faces.seconds + added_features.seconds
    full_extraction = full_faces.extraction_seconds + full_features.extraction_seconds
    added_extraction = added_faces.extraction_seconds + added_features.extraction_seconds
    print(f"\nincremental (local executor, default workers): {held_out.sum()} clips added to {(~held_out).sum()} extracted, "
          f"faces then {extractor} (target <= {100 * INCREMENTAL_TARGET:.0f} % of a full extraction)")
    print(f"  whole stage processes: {added_faces.seconds:.1f} + {added_features.seconds:.1f} = {added:.1f} s "
          f"vs {full:.1f} s full = {100 * added / full:.1f} % {verdict(added / full <= INCREMENTAL_TARGET)}")
    added_cpu = added_faces.cpu_seconds + added_features.cpu_seconds
    full_cpu = full_faces.cpu_seconds + full_features.cpu_seconds
    print(f"  CPU time of the stage process trees: {added_cpu:.1f} s vs {full_cpu:.1f} s full = {100 * added_cpu / full_cpu:.1f} % "
          f"(load average {os.getloadavg()[0]:.1f})")
    print(f"  extraction (fill_store): {added_faces.extraction_seconds:.1f} + {added_features.extraction_seconds:.1f} = "
          f"{added_extraction:.1f} s vs {full_extraction:.1f} s full = {100 * added_extraction / full_extraction:.1f} % "
          f"{verdict(added_extraction / full_extraction <= INCREMENTAL_TARGET)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=Path, help="run in this (new) folder and keep it")
    parser.add_argument("--extractor", default="fer", help="the extractor timed beside faces (params.yaml extractors)")
    parser.add_argument("--repeat", type=int, default=4, help="clip multiple of the memory run")
    parser.add_argument("--identities", type=int, help="demo.identities (default: params.yaml)")
    parser.add_argument("--takes", type=int, help="demo.takes (default: params.yaml)")
    parser.add_argument("--parts", default="throughput,incremental,memory",
                        help="comma-separated: throughput, incremental (with the fixed cost), memory (with the large incremental run)")
    parser.add_argument("--source", type=Path, default=REPO, help="the project checkout to copy and time (default: this one)")
    parser.add_argument("--idle-runs", type=int, default=3, help="runs with nothing to extract; the fixed cost is their median")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    unknown = parts - {"throughput", "incremental", "memory"}
    if unknown:
        parser.error(f"unknown --parts {sorted(unknown)}")
    sys.stdout.reconfigure(line_buffering=True)  # progress shows while the stages run
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="aver-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    root = copy_project(args.source.resolve(), workdir)
    extractor = args.extractor
    print(f"project copy: {root}  (cores: {os.cpu_count()})")

    demo_size = {key: value for key, value in (("identities", args.identities), ("takes", args.takes)) if value is not None}
    set_params(root, demo=demo_size)
    start = time.perf_counter()
    run_stage(root, ["demo_data"])
    demo = pd.read_csv(root / "data" / "demo" / "labels.csv")
    demo["path"] = [str((root / "data" / "demo" / f).resolve()) for f in demo.pop("file")]
    print(f"demo clips: {len(demo)} ({time.perf_counter() - start:.1f} s to generate)")

    defaults = yaml.safe_load((root / "params.yaml").read_text())
    faces_workers = defaults["faces"]["workers"]
    extractor_workers = defaults["extractors"].get(extractor, {}).get("workers", 1)
    use_clips(root, demo)
    if "throughput" in parts:
        runs = throughput(root, extractor)
        full_faces, full_features = runs["local", faces_workers][0], runs["local", extractor_workers][1]
    else:
        clear_features(root, "faces", extractor)
        full_faces, full_features = extract(root, extractor)
        print(f"\nfull extraction of {len(demo)} clips (local executor, default workers): "
              f"faces {full_faces.seconds:.1f} s, {extractor} {full_features.seconds:.1f} s")

    # 2. Incremental: 90 % extracted, then the other 10 % added, each stage with its default
    # local worker count (params.yaml: faces 2 processes; an extractor 1 process, whose torch
    # uses both cores), against the full runs with the same counts.
    set_params(root, faces={"executor": "local", "workers": faces_workers},
               **{f"extractors.{extractor}": {"executor": "local", "workers": extractor_workers}})
    if "incremental" in parts:
        incremental(root, demo, extractor, full_faces, full_features)
        held_out = demo.index % 10 == 9
        use_clips(root, demo[~held_out])
        run_stage(root, ["manifest"])
        removed_faces = run_stage(root, ["faces"])
        print(f"removing them again: faces index {clip_count(root, 'faces')} clips ({removed_faces.seconds:.1f} s, nothing extracted)")
        fixed_cost(root, extractor, args.idle_runs)

    if "memory" in parts:
        # 3. Memory: the demo clips once and --repeat times over (the default worker counts).
        repeated = pd.concat([demo.assign(clip_id=[f"{c}_r{k}" for c in demo["clip_id"]]) for k in range(args.repeat)], ignore_index=True)
        clear_features(root, "faces", extractor)
        use_clips(root, repeated)
        many_faces, many_features = extract(root, extractor)
        print(f"\npeak memory of the stage process tree (local executor, faces {faces_workers} workers, {extractor} {extractor_workers}), "
              f"{len(demo)} vs {len(repeated)} clips:")
        for stage, one, many in [("faces", full_faces, many_faces), (extractor, full_features, many_features)]:
            ratio = many.peak_rss / one.peak_rss
            print(f"  {stage:<8}{one.peak_rss / 2**20:>8.0f} MiB  {many.peak_rss / 2**20:>8.0f} MiB  = {ratio:.2f}x "
                  f"(target <= {MEMORY_TARGET}x) {verdict(ratio <= MEMORY_TARGET)}")
        print(f"  clips indexed at {args.repeat}x: faces {clip_count(root, 'faces')}, {extractor} {clip_count(root, extractor)}")

        # 4. Incremental at --repeat times the clips, where the fixed cost per stage run weighs less.
        incremental(root, repeated, extractor, many_faces, many_features)


def throughput(root: Path, extractor: str) -> dict[tuple[str, int], tuple[StageRun, StageRun]]:
    """Full extractions with each executor and worker count; prints clips per second."""
    runs: dict[tuple[str, int], tuple[StageRun, StageRun]] = {}
    head = RayHead(cpus=2)
    print(f"ray head with 2 CPUs started in {head.start_seconds:.1f} s (not counted below)")
    try:
        for executor, workers in [("local", 1), ("local", 2), ("ray", 1), ("ray", 2)]:
            clear_features(root, "faces", extractor)
            execution = {"executor": executor, "workers": workers}
            set_params(root, faces=execution, **{f"extractors.{extractor}": execution})
            env = head.env if executor == "ray" else {}
            runs[executor, workers] = extract(root, extractor, env)
    finally:
        head.stop()
    faces_clips, extractor_clips = clip_count(root, "faces"), clip_count(root, extractor)
    print(f"\nthroughput: faces {faces_clips} clips, {extractor} {extractor_clips} clips; clips/s of the whole stage process "
          f"(start-up included) and of its extraction (fill_store: workers started, clips processed, index written)")
    print(f"{'executor':<9}{'workers':>8}{'faces s':>9}{'clips/s':>9}{'extr. s':>9}{'clips/s':>9}"
          f"{extractor + ' s':>9}{'clips/s':>9}{'extr. s':>9}{'clips/s':>9}")
    for (executor, workers), (faces, features) in runs.items():
        row = [faces.seconds, faces_clips / faces.seconds, faces.extraction_seconds, faces_clips / faces.extraction_seconds,
               features.seconds, extractor_clips / features.seconds, features.extraction_seconds, extractor_clips / features.extraction_seconds]
        print(f"{executor:<9}{workers:>8}" + "".join(f"{value:>9.{1 if i % 2 == 0 else 2}f}" for i, value in enumerate(row)))
    return runs


def fixed_cost(root: Path, extractor: str, idle_runs: int) -> None:
    """The median wall time of ``idle_runs`` faces and extractor stage runs with nothing to extract."""
    faces, features = [], []
    for _ in range(idle_runs):
        faces_run, features_run = extract(root, extractor)
        faces.append(faces_run)
        features.append(features_run)
    wall = {name: float(np.median([r.seconds for r in runs])) for name, runs in (("faces", faces), (extractor, features))}
    cpu = {name: float(np.median([r.cpu_seconds for r in runs])) for name, runs in (("faces", faces), (extractor, features))}
    print(f"fixed cost of a stage run with nothing to extract (median of {idle_runs}): faces {wall['faces']:.2f} s, "
          f"{extractor} {wall[extractor]:.2f} s (target <= {FIXED_COST_TARGET:.1f} s each: "
          f"{verdict(max(wall.values()) <= FIXED_COST_TARGET)}); CPU time faces {cpu['faces']:.2f} s, {extractor} {cpu[extractor]:.2f} s; "
          f"load average {os.getloadavg()[0]:.1f}; wall per run: faces {', '.join(f'{r.seconds:.2f}' for r in faces)}; "
          f"{extractor} {', '.join(f'{r.seconds:.2f}' for r in features)}")


if __name__ == "__main__":
    main()
