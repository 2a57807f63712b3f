"""Where per-clip jobs run: a registry of executors (``EXECUTORS``; params name one in
``executor:``), each a class with ``from_params(workers, num_jobs, num_gpus)`` and ``map``.

Stages describe the work as a picklable *processor* (a callable that builds its heavy state,
e.g. a loaded model or a mediapipe graph, lazily on its first job, or when its optional
``warm_up()`` is called) and a list of jobs; an
executor decides where the processor runs. ``local`` with one worker runs in-process; with
more, the stage process works on the clips itself beside ``workers - 1`` helper processes,
each of which receives one copy of the processor and keeps it for all its clips, so the
state is built once per process. ``ray`` runs one stateful actor per worker on a Ray
cluster (the one ``RAY_ADDRESS`` names, else a local instance started for the stage).

Every executor yields ``(job, result)`` pairs, where a job that raised, or whose worker died
under it, yields a :class:`JobError` instead of stopping the stage: the caller records it and
leaves that clip's entry out of the index, so a re-run redoes exactly those clips.

A processor may split its work into ``load(job)`` (decoding or reading its input) and
``process(job, loaded)`` (the model); a Ray actor then loads its next clip while the model
runs on the current one.

An error that no other clip would escape (a full disk) yields a :class:`JobError` marked
``fatal``: the caller stops the stage instead of failing every remaining clip alike.
Helper processes watch the stage process and exit when it is gone, however it died.
"""
from __future__ import annotations

import errno
import multiprocessing
import os
import pickle
import queue
import sys
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol

from pipeline.registry import Registry

Processor = Callable[[Any], Any]


@dataclass(frozen=True)
class JobError:
    """A job that raised or lost its worker; ``reason`` goes to the failures table. ``fatal``:
    the error would hit every clip alike (a full disk), so the stage should stop."""

    reason: str
    fatal: bool = False


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def is_disk_full(error: BaseException) -> bool:
    """An OSError (or an HDF5 error wrapping one) caused by a full disk or an exhausted quota."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(error)
    return "No space left on device" in text or "Disk quota exceeded" in text or "errno = 28" in text


def job_error(error: BaseException) -> JobError:
    return JobError(describe(error), fatal=is_disk_full(error))


class Executor(Protocol):
    def map(self, processor: Processor, jobs: list[Any], desc: str) -> Iterator[tuple[Any, Any]]:
        """Yield (job, result or JobError) pairs in completion order."""


def progress_bar(**options: Any):
    """A tqdm bar over a stage's clips (tqdm is imported here: finding its version scans the
    installed packages, a cost a stage with nothing to do should not pay)."""
    from tqdm import tqdm

    return tqdm(unit="clip", mininterval=2.0, **options)


def read_ahead(items: Iterator[Any], depth: int = 8) -> Iterator[Any]:
    """Yield ``items`` while a thread produces up to ``depth`` of them ahead, so decoding
    (which releases the GIL) overlaps with the work done on earlier items; memory stays
    bounded by ``depth``. An exception of the producer is raised in the consumer."""
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((end, None))
        except BaseException as error:  # handed to the consumer, which re-raises it
            put((end, error))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    producer = threading.Thread(target=produce, name="read-ahead", daemon=True)
    producer.start()
    try:
        while True:
            item, error = buffer.get()
            if error is not None:
                raise error
            if item is end:
                return
            yield item
    finally:
        stop.set()
        producer.join()


def _run_here(processor: Processor, jobs: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
    """Run ``processor`` on ``jobs`` in this process; closes it when done."""
    try:
        for job in jobs:
            try:
                result = processor(job)
            except Exception as error:  # one bad clip must not stop the others
                result = job_error(error)
            yield job, result
    finally:
        close = getattr(processor, "close", None)
        if close is not None:
            close()


EXECUTORS: Registry[type] = Registry("executor")


class InProcessExecutor:
    """Every clip in the stage process, one after the other (``local`` with one worker)."""

    def map(self, processor: Processor, jobs: list[Any], desc: str) -> Iterator[tuple[Any, Any]]:
        _warm_up(processor)
        yield from _run_here(processor, progress_bar(iterable=jobs, desc=desc))


def _warm_up(processor: Processor) -> None:
    """Build the processor's state before its first clip, outside the per-clip error handling:
    a model that cannot be built stops the stage with its error instead of failing every clip."""
    warm_up = getattr(processor, "warm_up", None)
    if warm_up is not None:
        warm_up()


def _limit_threads(threads: int) -> None:
    # Each process gets its share of the cores: torch and OpenMP default to a thread per
    # core in every process, and several processes doing so oversubscribe the machine (as
    # Ray does for its actors). Set before the processor's first job imports torch.
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, str(threads))


def watch_parent(parent_pid: int, poll_seconds: float = 0.5) -> threading.Thread:
    """Exit this process as soon as ``parent_pid`` is no longer its parent: a helper whose stage
    process died (a kill -9 included) would otherwise wait on its inbox forever, holding its
    model's memory and the multiprocessing resource tracker. On Linux the kernel also sends
    SIGKILL at the parent's death (PR_SET_PDEATHSIG); the thread covers the rest, and the
    moment between the fork and the prctl call."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass  # not Linux: the thread alone

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_seconds)
        os._exit(70)  # no cleanup: the stage that would use our results is gone

    watcher = threading.Thread(target=watch, name="parent-watch", daemon=True)
    watcher.start()
    return watcher


def _helper_main(helper: int, payload: bytes, threads: int, inbox, outbox, parent_pid: int) -> None:
    """A helper process of :class:`SharedWorkExecutor`: says it is ready, then runs the clips
    the stage process hands it, one at a time, until it receives None (or its stage process dies)."""
    watch_parent(parent_pid)
    _limit_threads(threads)
    processor = pickle.loads(payload)  # after the thread limits: unpickling may import torch
    _warm_up(processor)  # ready means ready: a clip handed over now does not wait for imports or a model
    outbox.put((helper, None, None))
    for job, result in _run_here(processor, iter(inbox.get, None)):
        outbox.put((helper, job, result))


@contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    """The stage process's share of the cores for torch, if it has loaded torch. A fixed share:
    more OpenMP threads than free cores (while a helper starts beside it) slow torch down
    several times over instead of speeding it up."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@EXECUTORS.register("local")
class SharedWorkExecutor:
    """``workers`` processes on this machine, the stage process being one of them.

    The stage process builds its processor's state (``warm_up``) while ``workers - 1``
    helper processes start (interpreter, imports, model: seconds), then starts on the clips. A helper is handed a clip
    only when it says it is ready, one clip at a time, so no clip waits behind a helper that
    is still starting: a few clips (an incremental run) cost no more than in one process,
    and many clips keep every worker busy. Helpers still starting when no clip is left are
    stopped. A helper that dies loses only the clip it held (yielded as a
    :class:`JobError`); the others carry on.
    """

    poll_seconds = 0.1

    def __init__(self, workers: int) -> None:
        self.workers = workers

    @classmethod
    def from_params(cls, workers: int, num_jobs: int, num_gpus: float = 0.0):
        if workers <= 1 or num_jobs <= 1:
            return InProcessExecutor()
        return cls(workers)

    def map(self, processor: Processor, jobs: list[Any], desc: str) -> Iterator[tuple[Any, Any]]:
        helpers = min(self.workers, len(jobs)) - 1
        if helpers < 1:
            yield from InProcessExecutor().map(processor, jobs, desc)
            return
        # spawn, not fork: torch and mediapipe start threads at import, and forking a
        # process that holds their locks can deadlock the children.
        context = multiprocessing.get_context("spawn")
        threads = max(1, (os.cpu_count() or 1) // self.workers)
        work = _WorkQueue(jobs)
        outbox = context.Queue()
        inboxes = [context.SimpleQueue() for _ in range(helpers)]
        payload = pickle.dumps(processor)
        processes = [
            context.Process(
                target=_helper_main, args=(i, payload, threads, inboxes[i], outbox, os.getpid()), name=f"{desc}-{i}", daemon=True
            )
            for i in range(helpers)
        ]
        for process in processes:
            process.start()
        try:
            # While the helpers start: the stage process's own model (it may import torch,
            # whose threads _torch_threads then limits).
            _warm_up(processor)
        except BaseException:
            for process in processes:
                process.terminate()
            raise
        finished: queue.Queue = queue.Queue()  # (job, result) pairs from the helpers
        dispatcher = threading.Thread(
            target=self._dispatch, args=(processes, inboxes, outbox, work, finished), name=f"{desc}-dispatch", daemon=True
        )
        dispatcher.start()
        progress = progress_bar(total=len(jobs), desc=desc)

        def collected(wait: float = 0.0) -> Iterator[tuple[Any, Any]]:
            try:
                while True:
                    item = finished.get(timeout=wait) if wait else finished.get_nowait()
                    progress.update()
                    yield item
            except queue.Empty:
                return

        try:
            with _torch_threads(threads):
                for item in _run_here(processor, iter(work.take, None)):
                    progress.update()
                    yield item
                    yield from collected()
            while dispatcher.is_alive():
                yield from collected(self.poll_seconds)
            yield from collected()
        finally:
            progress.close()
            work.cancel()  # the caller stopped early: helpers get no more clips
            dispatcher.join()
            for process in processes:
                process.join(timeout=30)
                if process.is_alive():
                    process.terminate()
                    process.join()

    def _dispatch(self, processes, inboxes, outbox, work: "_WorkQueue", finished: queue.Queue) -> None:
        """Hands clips to ready helpers and passes on their results, until every helper is done."""
        holding: dict[int, Any] = {}  # helper -> the clip it is processing
        running = set(range(len(processes)))
        while running:
            try:
                helper, job, result = outbox.get(timeout=self.poll_seconds)
            except queue.Empty:
                for helper in [h for h in running if not processes[h].is_alive()]:
                    running.discard(helper)
                    if helper in holding:
                        reason = f"worker died while processing the clip (exit code {processes[helper].exitcode})"
                        finished.put((holding.pop(helper), JobError(reason)))
                if work.empty():
                    for helper in running - set(holding):  # still starting, and nothing left for it
                        processes[helper].terminate()
                        running.discard(helper)
                continue
            if helper not in running:
                continue  # a helper stopped while starting said it was ready
            if job is not None:
                finished.put((holding.pop(helper), result))
            next_job = work.take()
            if next_job is None:
                inboxes[helper].put(None)
                running.discard(helper)
            else:
                holding[helper] = next_job
                inboxes[helper].put(next_job)


class _WorkQueue:
    """The clips not yet handed out, taken by the stage process and the dispatcher alike."""

    def __init__(self, jobs: list[Any]) -> None:
        self._jobs = deque(jobs)
        self._lock = threading.Lock()

    def take(self) -> Any | None:
        with self._lock:
            return self._jobs.popleft() if self._jobs else None

    def empty(self) -> bool:
        with self._lock:
            return not self._jobs

    def cancel(self) -> None:
        with self._lock:
            self._jobs.clear()


class ClipWorker:
    """The body of a Ray actor: one processor copy, built once, for all the actor's clips.

    The actor runs two calls at a time (``max_concurrency=2``): the model part is serialised
    by a lock, while the other call loads its clip, so reading and decoding overlap with
    inference without two threads ever sharing the model.
    """

    def __init__(self, processor: Processor, working_dir: str) -> None:
        # Stores and clips are addressed relative to the project root, which every machine
        # of the cluster sees at the same path (a shared filesystem).
        os.chdir(working_dir)
        self.processor = processor
        self.model_lock = threading.Lock()

    def run(self, job: Any) -> Any:
        load = getattr(self.processor, "load", None)
        if load is None:
            with self.model_lock:
                return self.processor(job)
        loaded = load(job)
        with self.model_lock:
            return self.processor.process(job, loaded)

    def close(self) -> None:
        close = getattr(self.processor, "close", None)
        if close is not None:
            with self.model_lock:
                close()


def ray_runtime_env() -> dict[str, Any]:
    """Ships this package to the cluster's workers, so other machines only need the locked
    dependencies installed, not a copy of the code."""
    return {"py_modules": [str(Path(__file__).resolve().parent)]}


def connect_ray() -> bool:
    """Connect to ``RAY_ADDRESS`` or start a local instance; True if this call started or
    joined it (and should shut it down), False if the process was already connected."""
    import ray

    if ray.is_initialized():
        return False
    ray.init(address=os.environ.get("RAY_ADDRESS") or None, include_dashboard=False, runtime_env=ray_runtime_env(), log_to_driver=False)
    return True


@EXECUTORS.register("ray")
class RayExecutor:
    """Stateful actors on a Ray cluster, each asking for one CPU and ``num_gpus`` GPUs when
    the cluster has GPUs. Clips go to whichever actor has a free slot (two per actor, see
    :class:`ClipWorker`), so a slow clip does not hold up the others and the clips in
    flight, hence the memory used, stay bounded whatever the number of clips. An actor that
    dies is replaced; the clips it held are yielded as :class:`JobError`."""

    slots_per_worker = 2

    def __init__(self, workers: int, num_gpus: float = 0.0) -> None:
        self.workers = workers
        self.num_gpus = num_gpus

    @classmethod
    def from_params(cls, workers: int, num_jobs: int, num_gpus: float = 0.0) -> "RayExecutor":
        return cls(workers, num_gpus)

    def map(self, processor: Processor, jobs: list[Any], desc: str) -> Iterator[tuple[Any, Any]]:
        import ray

        started = connect_ray()
        try:
            yield from self._map(ray, processor, jobs, desc)
        finally:
            if started:
                ray.shutdown()

    def actor_options(self, ray) -> dict[str, Any]:
        has_gpus = ray.cluster_resources().get("GPU", 0) > 0
        return {"num_cpus": 1, "num_gpus": self.num_gpus if has_gpus else 0, "max_concurrency": self.slots_per_worker}

    def _map(self, ray, processor: Processor, jobs: list[Any], desc: str) -> Iterator[tuple[Any, Any]]:
        from ray.exceptions import RayActorError, RayTaskError

        # More actors than the cluster has CPUs would wait forever for a slot.
        cpus = int(ray.cluster_resources().get("CPU", 1))
        count = max(1, min(self.workers, len(jobs), cpus))
        worker_class = ray.remote(ClipWorker).options(**self.actor_options(ray))
        shared_processor = ray.put(processor)
        working_dir = os.getcwd()
        spawn = lambda: worker_class.remote(shared_processor, working_dir)  # noqa: E731
        actors = [spawn() for _ in range(count)]
        replacements_left = 2 * count
        queue = list(reversed(jobs))
        in_flight: dict[Any, tuple[Any, Any]] = {}  # result ref -> (job, actor)

        def submit(actor) -> None:
            job = queue.pop()
            in_flight[actor.run.remote(job)] = (job, actor)

        for _ in range(self.slots_per_worker):
            for actor in actors:
                if queue:
                    submit(actor)
        progress = progress_bar(total=len(jobs), desc=desc)
        try:
            while in_flight:
                [ref], _ = ray.wait(list(in_flight), num_returns=1)
                job, actor = in_flight.pop(ref)
                try:
                    result = ray.get(ref)
                except RayTaskError as error:  # the processor raised
                    result = job_error(error.cause) if error.cause is not None else JobError(str(error).splitlines()[0])
                except RayActorError as error:  # the actor's process died
                    result = JobError(f"worker died while processing the clip: {type(error).__name__}")
                    if actor in actors:
                        actors.remove(actor)
                        if replacements_left > 0:
                            replacements_left -= 1
                            actors.append(spawn())
                            for _ in range(self.slots_per_worker):
                                if queue:
                                    submit(actors[-1])
                    actor = None
                if actor is not None and queue:
                    submit(actor)
                if not actors and queue:
                    # Every worker died and could not be replaced: report the rest, do not hang.
                    while queue:
                        lost = queue.pop()
                        progress.update()
                        yield lost, JobError("no live worker left to process the clip")
                progress.update()
                yield job, result
        finally:
            progress.close()
            for actor in actors:
                try:
                    ray.get(actor.close.remote(), timeout=60)
                except (RayActorError, RayTaskError, ray.exceptions.GetTimeoutError):
                    pass  # releasing a model in a worker that is going away anyway
                ray.kill(actor)


def make_executor(kind: str, workers: int, num_jobs: int, num_gpus: float = 0.0) -> Executor:
    """The registered executor ``kind`` for ``num_jobs`` clips."""
    try:
        cls = EXECUTORS.get(kind)
    except KeyError as error:
        raise ValueError(error.args[0]) from None
    return cls.from_params(workers, num_jobs, num_gpus)
