from pipeline.executors import MIN_JOBS_PER_WORKER, InProcessExecutor, ProcessPoolJobExecutor, make_executor


def test_a_pool_starts_only_when_every_worker_gets_enough_clips():
    assert isinstance(make_executor("local", 2, 2 * MIN_JOBS_PER_WORKER - 1), InProcessExecutor)
    pool = make_executor("local", 2, 2 * MIN_JOBS_PER_WORKER)
    assert isinstance(pool, ProcessPoolJobExecutor) and pool.workers == 2
    assert make_executor("local", 4, 3 * MIN_JOBS_PER_WORKER).workers == 3
    assert isinstance(make_executor("local", 1, 1000), InProcessExecutor)
