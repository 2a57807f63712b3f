"""Where per-clip jobs run.

Stages describe the work as a picklable *processor factory* (builds the per-process state,
e.g. a loaded model or mediapipe graph, once) and a list of jobs; an executor decides where
the processor runs. ``local`` with one worker runs in-process; with more workers it uses a
process pool whose initializer builds the processor once per process. A distributed engine
plugs in as another executor with the same ``map`` contract.
"""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Callable, Iterable, Iterator, Protocol

from tqdm import tqdm

Processor = Callable[[Any], Any]
ProcessorFactory = Callable[[], Processor]

_worker_processor: Processor | None = None


class Executor(Protocol):
    def map(self, factory: ProcessorFactory, jobs: list[Any], desc: str) -> Iterator[tuple[Any, Any]]:
        """Yield (job, result) pairs in completion order; exceptions are raised by the processor's caller."""


class InProcessExecutor:
    def map(self, factory: ProcessorFactory, jobs: list[Any], desc: str) -> Iterator[tuple[Any, Any]]:
        processor = factory()
        try:
            for job in tqdm(jobs, desc=desc, unit="clip", mininterval=2.0):
                yield job, processor(job)
        finally:
            close = getattr(processor, "close", None)
            if close is not None:
                close()


def _init_worker(factory: ProcessorFactory) -> None:
    global _worker_processor
    _worker_processor = factory()


def _run_job(job: Any) -> Any:
    assert _worker_processor is not None, "worker used before its initializer ran"
    return _worker_processor(job)


class ProcessPoolJobExecutor:
    def __init__(self, workers: int) -> None:
        self.workers = workers

    def map(self, factory: ProcessorFactory, jobs: list[Any], desc: str) -> Iterator[tuple[Any, Any]]:
        # spawn, not fork: torch and mediapipe start threads at import, and forking a
        # process that holds their locks can deadlock the children.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(self.workers, mp_context=context, initializer=_init_worker, initargs=(factory,)) as pool:
            futures = {pool.submit(_run_job, job): job for job in jobs}
            for future in tqdm(as_completed(futures), total=len(futures), desc=desc, unit="clip", mininterval=2.0):
                yield futures[future], future.result()


def make_executor(kind: str, workers: int, num_jobs: int) -> Executor:
    if kind != "local":
        raise ValueError(f"unknown executor {kind!r}; available: ['local']")
    if workers <= 1 or num_jobs <= 1:
        return InProcessExecutor()
    return ProcessPoolJobExecutor(min(workers, num_jobs))


def run(executor: Executor, factory: ProcessorFactory, jobs: Iterable[Any], desc: str) -> list[tuple[Any, Any]]:
    return list(executor.map(factory, list(jobs), desc))
