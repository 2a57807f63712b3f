"""The local executor: the stage process works beside its helper processes, helpers get clips
only once they are ready, and a helper that dies loses only the clip it held."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import pytest

from pipeline.executors import InProcessExecutor, JobError, SharedWorkExecutor, make_executor


@dataclass
class WhoRanIt:
    """Returns the pid of the process that ran the job. ``start_delay`` makes a helper slow
    to start (it sleeps while being unpickled, i.e. before it says it is ready);
    ``dies_on`` makes a helper (never the stage process) exit hard on that job."""

    seconds_per_job: float = 0.0
    start_delay: float = 0.0
    warm_up_seconds: float = 0.0
    dies_on: tuple[int, ...] = ()
    stage_pid: int = field(default_factory=os.getpid)

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        time.sleep(self.start_delay)

    def warm_up(self) -> None:
        """What a processor does to load its model: a helper runs it before it says it is ready."""
        if os.getpid() != self.stage_pid:
            time.sleep(self.warm_up_seconds)

    def __call__(self, job: int) -> int:
        if job in self.dies_on and os.getpid() != self.stage_pid:
            os._exit(3)
        if job < 0:
            raise ValueError(f"clip {job} is broken")
        time.sleep(self.seconds_per_job)
        return os.getpid()


def test_several_workers_share_the_work_with_the_stage_process():
    assert isinstance(make_executor("local", 2, 20), SharedWorkExecutor)
    assert isinstance(make_executor("local", 1, 1000), InProcessExecutor)
    assert isinstance(make_executor("local", 4, 1), InProcessExecutor)

    jobs = list(range(40))
    results = dict(SharedWorkExecutor(2).map(WhoRanIt(seconds_per_job=0.1), jobs, desc="t"))
    assert sorted(results) == jobs  # every clip exactly once
    pids = set(results.values())
    assert os.getpid() in pids and len(pids) == 2, "both the stage process and its helper took clips"


@pytest.mark.parametrize("slow_start", [{"start_delay": 5.0}, {"warm_up_seconds": 5.0}])
def test_no_clip_waits_for_a_helper_that_is_still_starting(slow_start):
    # The helper needs 5 s to start (imports, or loading its model in warm_up); the stage
    # process is done with the 6 clips long before, so it does them all and the helper is
    # stopped unused.
    results = dict(SharedWorkExecutor(2).map(WhoRanIt(**slow_start), list(range(6)), desc="t"))
    assert sorted(results) == list(range(6))
    assert set(results.values()) == {os.getpid()}


def test_a_helper_that_dies_loses_only_its_clip_and_errors_are_reported():
    jobs = list(range(-2, 30))
    processor = WhoRanIt(seconds_per_job=0.05, dies_on=tuple(range(30)))  # the helper dies on its first clip
    results = dict(SharedWorkExecutor(2).map(processor, jobs, desc="t"))
    assert sorted(results) == jobs
    died = [job for job, result in results.items() if isinstance(result, JobError) and "worker died" in result.reason]
    assert len(died) == 1 and died[0] >= 0
    assert all(results[job] == os.getpid() for job in jobs if job >= 0 and job not in died)
    for broken in (-2, -1):
        assert isinstance(results[broken], JobError) and f"clip {broken} is broken" in results[broken].reason


HELPER_SCRIPT = """
import os, sys, time
from pipeline.executors import SharedWorkExecutor


def slow(job):
    time.sleep(0.3)
    return os.getpid()


if __name__ == "__main__":
    for job, pid in SharedWorkExecutor(2).map(slow, list(range(200)), desc="t"):
        if pid != os.getpid():
            print("helper", pid, flush=True)
"""


def test_helpers_exit_when_the_stage_process_is_killed(tmp_path):
    # kill -9 of the stage process leaves its helper (and multiprocessing's resource tracker)
    # without a parent: they must go too, not wait on their inbox forever.
    import psutil

    script = tmp_path / "stage.py"
    script.write_text(HELPER_SCRIPT)
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    stage = subprocess.Popen([sys.executable, str(script)], cwd=repo, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": repo})
    try:
        line = stage.stdout.readline()  # a helper has started and finished a clip
        assert line.startswith("helper"), line
        children = psutil.Process(stage.pid).children(recursive=True)
        assert len(children) >= 2  # the helper and the resource tracker
    finally:
        stage.send_signal(signal.SIGKILL)
        stage.wait()
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, [p.cmdline() for p in alive]
