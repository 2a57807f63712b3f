"""The Ray executor: same stores as the local one, failed or killed workers leave their clips
out of the index, and a re-run processes exactly the clips that are missing.

One local Ray instance (2 CPUs) serves the whole module: starting one takes several seconds.
"""
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ray = pytest.importorskip("ray")

from pipeline.datasets.demo.generator import generate  # noqa: E402
from pipeline.datasets.demo.spec import DemoSpec  # noqa: E402
from pipeline.executors import JobError, RayExecutor, make_executor, ray_runtime_env, read_ahead  # noqa: E402
from pipeline.extraction import AudioClipProcessor, ClipJob, ExtractorClipProcessor, FaceClipProcessor, fill_store  # noqa: E402
from pipeline.store import FeatureStore  # noqa: E402

DEMO = DemoSpec(seed=3, identities=4, emotions=["neutral", "happy"], takes=1, min_duration_s=0.6, max_duration_s=0.8)


@pytest.fixture(scope="module")
def ray_instance():
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths have a length limit
    # Classes defined in this test module travel to the workers by value: the workers cannot import it.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=100 * 1024 * 1024,
        runtime_env=ray_runtime_env(),
        log_to_driver=False,
        _temp_dir=temp_dir,
    )
    try:
        yield ray
    finally:
        ray.shutdown()
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def demo_jobs(tmp_path_factory):
    """The demo generator's clips (8 good ones plus its zero-byte, corrupt, no-audio and no-face clips)."""
    root = tmp_path_factory.mktemp("demo")
    labels = generate(root, DEMO, workers=1)
    return [ClipJob(row.clip_id, str(root / row.file)) for row in labels.itertuples()]


def face_processor(root):
    return FaceClipProcessor(str(root), {"stage": "faces"}, 5.0, 0.5, 112, 64, "auto")


def fill_all(base: Path, jobs: list[ClipJob], executor: str, workers: int) -> dict[str, FeatureStore]:
    """The faces and audio stores and one extractor on each, as the stages build them."""
    stores = {name: FeatureStore(base / name) for name in ("faces", "audio", "fer", "logmel")}
    fill_store(stores["faces"], jobs, face_processor(stores["faces"].root), {"stage": "faces"}, "faces", workers, executor)
    fill_store(stores["audio"], jobs, AudioClipProcessor(str(stores["audio"].root), {}, 16000), {}, "audio", workers, executor)
    for name, source, extractor_type, options in [("fer", "faces", "fer_mini_xception", {}), ("logmel", "audio", "logmel", {"n_mels": 40})]:
        indexed = set(stores[source].clip_ids())
        processor = ExtractorClipProcessor(str(stores[source].root), str(stores[name].root), extractor_type, options, "cpu", 16)
        identity = processor.extractor().identity()
        fill_store(stores[name], [j for j in jobs if j.clip_id in indexed], processor, identity, name, workers, executor)
    return stores


def test_ray_and_local_executors_fill_identical_stores_from_the_demo_clips(ray_instance, demo_jobs, tmp_path):
    local = fill_all(tmp_path / "local", demo_jobs, "local", workers=1)
    distributed = fill_all(tmp_path / "ray", demo_jobs, "ray", workers=2)
    compared_arrays = 0
    for name, store in local.items():
        other = distributed[name]
        assert other.clip_ids() == store.clip_ids() and store.clip_ids(), name
        pd.testing.assert_frame_equal(other.failures().sort_values("clip_id", ignore_index=True), store.failures().sort_values("clip_id", ignore_index=True))
        pd.testing.assert_frame_equal(other.index(), store.index())
        for clip_id in store.clip_ids():
            expected, actual = store.read(clip_id), other.read(clip_id)
            assert sorted(actual.arrays) == sorted(expected.arrays)
            for key, array in expected.arrays.items():
                assert actual.arrays[key].dtype == array.dtype and actual.arrays[key].shape == array.shape, (name, clip_id, key)
                np.testing.assert_allclose(actual.arrays[key], array, rtol=1e-5, atol=1e-5, err_msg=f"{name}/{clip_id}/{key}")
                compared_arrays += 1
            assert actual.attrs["config_hash"] == expected.attrs["config_hash"]
    # Bad clips are reported the same way by both: no file, no stream, no face.
    failed = {(f["clip_id"], f["stage"]) for f in local["faces"].failures().to_dict("records")}
    assert {"bad_zero_bytes", "bad_corrupt", "bad_no_face"} <= {clip for clip, _ in failed}
    assert "bad_no_audio" not in local["audio"].clip_ids() and "bad_no_audio" in local["faces"].clip_ids()
    assert compared_arrays >= 4 * 8 * 3  # four stores, eight good clips, at least three arrays each


@dataclass
class FlakyAudioProcessor:
    """Fails the first time it meets some clips: raises, writes its entry and then raises
    (a worker lost after writing), or kills its own worker process. Marker files make each
    failure happen once, so a re-run succeeds."""

    inner: AudioClipProcessor
    markers: str
    raises: tuple[str, ...] = ()
    writes_then_raises: tuple[str, ...] = ()
    kills_worker: tuple[str, ...] = ()

    def __call__(self, job: ClipJob):
        marker = Path(self.markers) / job.clip_id
        first_time = not marker.exists()
        marker.touch()
        if first_time and job.clip_id in self.raises:
            raise RuntimeError(f"decoder exploded on {job.clip_id}")
        if first_time and job.clip_id in self.kills_worker:
            import os

            os._exit(1)
        result = self.inner(job)
        if first_time and job.clip_id in self.writes_then_raises:
            raise RuntimeError("lost after writing")
        return result


@pytest.mark.parametrize("executor,workers", [("local", 1), ("ray", 2)])
def test_failed_workers_leave_their_clips_out_and_a_rerun_redoes_only_those(ray_instance, demo_jobs, tmp_path, executor, workers):
    jobs = [job for job in demo_jobs if not job.clip_id.startswith("bad_")]
    raising, written, killed = jobs[1].clip_id, jobs[4].clip_id, jobs[6].clip_id
    store = FeatureStore(tmp_path / "audio")
    (tmp_path / "markers").mkdir()
    flaky = FlakyAudioProcessor(
        AudioClipProcessor(str(store.root), {}, 16000),
        str(tmp_path / "markers"),
        raises=(raising,),
        writes_then_raises=(written,),
        # In-process, the worker that exits would be the test itself.
        kills_worker=(killed,) if executor == "ray" else (),
    )
    results, failures = fill_store(store, jobs, flaky, {}, "audio", workers, executor)

    failed = {r.clip_id for r in results if not r.ok}
    reasons = {f["clip_id"]: f["reason"] for f in failures}
    assert {raising, written} <= failed
    assert "decoder exploded on" in reasons[raising]
    # An actor holds two clips at a time: when the killed clip shares its actor with `written`,
    # that clip is reported lost with the actor before its own error comes back.
    assert "lost after writing" in reasons[written] or (flaky.kills_worker and "worker died" in reasons[written])
    if flaky.kills_worker:
        assert killed in failed
        assert "worker died" in reasons[killed]
    # The index holds exactly the clips whose worker reported success; the entry written by
    # the failed worker is gone with it.
    assert set(store.clip_ids()) == {job.clip_id for job in jobs} - failed
    assert not store.path_of(written).exists()
    assert set(store.failures()["clip_id"]) == failed

    rerun, rerun_failures = fill_store(store, jobs, flaky, {}, "audio", workers, executor)
    assert sorted(r.clip_id for r in rerun) == sorted(failed)
    assert all(r.ok for r in rerun) and rerun_failures == []
    assert store.clip_ids() == sorted(job.clip_id for job in jobs)


def test_ray_stores_are_incremental_and_forget_removed_clips(ray_instance, demo_jobs, tmp_path):
    jobs = [job for job in demo_jobs if not job.clip_id.startswith("bad_")]
    store = FeatureStore(tmp_path / "audio")
    processor = AudioClipProcessor(str(store.root), {"sr": 16000}, 16000)
    first, _ = fill_store(store, jobs[:6], processor, {"sr": 16000}, "audio", 2, "ray")
    written_at = {clip: store.path_of(clip).stat().st_mtime_ns for clip in store.clip_ids()}
    added, _ = fill_store(store, jobs, processor, {"sr": 16000}, "audio", 2, "ray")
    assert len(first) == 6 and sorted(r.clip_id for r in added) == sorted(j.clip_id for j in jobs[6:])
    assert all(store.path_of(clip).stat().st_mtime_ns == stamp for clip, stamp in written_at.items())
    removed, _ = fill_store(store, jobs[2:], processor, {"sr": 16000}, "audio", 2, "ray")
    assert removed == [] and store.clip_ids() == sorted(j.clip_id for j in jobs[2:])
    assert not store.path_of(jobs[0].clip_id).exists()


def test_actors_ask_for_gpus_only_when_the_cluster_has_them(ray_instance):
    options = RayExecutor(workers=2, num_gpus=1).actor_options(ray_instance)
    assert options["num_gpus"] == 0 and options["num_cpus"] == 1  # this instance has no GPU

    class ClusterWithGpus:
        @staticmethod
        def cluster_resources():
            return {"CPU": 16.0, "GPU": 2.0}

    assert RayExecutor(workers=2, num_gpus=0.5).actor_options(ClusterWithGpus)["num_gpus"] == 0.5
    with pytest.raises(ValueError, match="unknown executor"):
        make_executor("spark", 2, 10)


def test_read_ahead_keeps_order_bounds_memory_and_reraises():
    produced = []

    def frames():
        for i in range(50):
            produced.append(i)
            yield i

    consumed = []
    for item in read_ahead(frames(), depth=4):
        consumed.append(item)
        # The producer runs ahead by at most the buffer plus the item it holds.
        assert len(produced) - len(consumed) <= 4 + 1
    assert consumed == list(range(50))

    def broken():
        yield 1
        raise OSError("truncated stream")

    with pytest.raises(OSError, match="truncated"):
        list(read_ahead(broken()))
    early = read_ahead(frames(), depth=2)
    assert next(early) == 0
    early.close()  # stopping early must not leave the producer blocked


def test_job_error_is_what_a_raising_processor_yields():
    def explode(job):
        raise ValueError(f"bad {job}")

    [(job, outcome)] = list(make_executor("local", 1, 1).map(explode, ["x"], desc="t"))
    assert job == "x" and outcome == JobError("ValueError: bad x")


def test_an_extractor_config_change_re_extracts_that_extractor_only(demo_jobs, tmp_path):
    # DVC re-runs an extract@<name> stage when its own params block changes, and only then.
    from dvc.repo import Repo

    from pipeline.config import load_params

    repo_root = Path(__file__).resolve().parents[2]
    stages = {stage.addressing: stage for stage in Repo(str(repo_root)).index.stages}
    for name in load_params(repo_root / "params.yaml", check_components=False).extractors:
        params = [dep.params for dep in stages[f"extract@{name}"].deps if type(dep).__name__ == "ParamsDependency"]
        assert params == [[f"extractors.{name}"]]

    # Inside the stage, entries made with another config are the ones redone.
    jobs = [job for job in demo_jobs if not job.clip_id.startswith("bad_")][:4]
    audio = FeatureStore(tmp_path / "audio")
    fill_store(audio, jobs, AudioClipProcessor(str(audio.root), {}, 16000), {}, "audio", 1)

    def extract(name: str, extractor_type: str, options: dict) -> list[str]:
        processor = ExtractorClipProcessor(str(audio.root), str(tmp_path / name), extractor_type, options, "cpu", 16)
        results, _ = fill_store(FeatureStore(tmp_path / name), jobs, processor, processor.extractor().identity(), name, 1)
        return sorted(r.clip_id for r in results)

    everything = sorted(job.clip_id for job in jobs)
    assert extract("logmel", "logmel", {"n_mels": 40}) == everything
    assert extract("spectrogram", "spectrogram", {}) == everything
    assert extract("logmel", "logmel", {"n_mels": 32}) == everything
    assert extract("spectrogram", "spectrogram", {}) == []
    assert FeatureStore(tmp_path / "logmel").read(jobs[0].clip_id).arrays["data"].shape[1] == 32
