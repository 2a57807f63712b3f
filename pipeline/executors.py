"""Where per-clip jobs run.

Stages describe the work as a picklable *processor* (a callable that builds its heavy state,
e.g. a loaded model or a mediapipe graph, lazily on its first job) and a list of jobs; an
executor decides where the processor runs. ``local`` with one worker runs in-process; with
more workers each pool process receives one copy of the processor and keeps it for all its
jobs, so the state is built once per process. A distributed engine plugs in as another
executor with the same ``map`` contract.
"""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Callable, Iterator, Protocol

from tqdm import tqdm

Processor = Callable[[Any], Any]

_worker_processor: Processor | None = None


class Executor(Protocol):
    def map(self, processor: Processor, jobs: list[Any], desc: str) -> Iterator[tuple[Any, Any]]:
        """Yield (job, result) pairs in completion order."""


class InProcessExecutor:
    def map(self, processor: Processor, jobs: list[Any], desc: str) -> Iterator[tuple[Any, Any]]:
        try:
            for job in tqdm(jobs, desc=desc, unit="clip", mininterval=2.0):
                yield job, processor(job)
        finally:
            close = getattr(processor, "close", None)
            if close is not None:
                close()


def _init_worker(processor: Processor) -> None:
    global _worker_processor
    _worker_processor = processor


def _run_job(job: Any) -> Any:
    assert _worker_processor is not None, "worker used before its initializer ran"
    return _worker_processor(job)


class ProcessPoolJobExecutor:
    def __init__(self, workers: int) -> None:
        self.workers = workers

    def map(self, processor: Processor, jobs: list[Any], desc: str) -> Iterator[tuple[Any, Any]]:
        # spawn, not fork: torch and mediapipe start threads at import, and forking a
        # process that holds their locks can deadlock the children.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(self.workers, mp_context=context, initializer=_init_worker, initargs=(processor,)) as pool:
            futures = {pool.submit(_run_job, job): job for job in jobs}
            for future in tqdm(as_completed(futures), total=len(futures), desc=desc, unit="clip", mininterval=2.0):
                yield futures[future], future.result()


def make_executor(kind: str, workers: int, num_jobs: int) -> Executor:
    if kind != "local":
        raise ValueError(f"unknown executor {kind!r}; available: ['local']")
    if workers <= 1 or num_jobs <= 1:
        return InProcessExecutor()
    return ProcessPoolJobExecutor(min(workers, num_jobs))
