"""Executors are a registry like extractors and heads: params name one, an unknown name is a
params error naming the key, and a new executor is one class plus one decorator line."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.config import ParamsError, load_params
from pipeline.executors import EXECUTORS, InProcessExecutor, RayExecutor, SharedWorkExecutor, make_executor

REPO = Path(__file__).resolve().parents[2]


def test_the_registry_holds_the_executors_params_can_name():
    assert EXECUTORS.names() == ["local", "ray"]
    assert EXECUTORS.get("local") is SharedWorkExecutor and EXECUTORS.get("ray") is RayExecutor
    assert isinstance(make_executor("ray", 2, 10), RayExecutor)
    assert isinstance(make_executor("local", 1, 10), InProcessExecutor)


@pytest.mark.parametrize("key", ["faces", "audio", "extractors.fer"])
def test_an_unknown_executor_is_a_params_error_naming_the_key(tmp_path, key):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    node = params
    for part in key.split("."):
        node = node[part]
    node["executor"] = "spark"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ParamsError, match=rf"{key}\.executor: unknown executor 'spark'; available: \['local', 'ray'\]"):
        load_params(path, check_components=False)


def test_a_registered_executor_is_found_by_name(monkeypatch):
    class Serial:
        @classmethod
        def from_params(cls, workers, num_jobs, num_gpus=0.0):
            return cls()

        def map(self, processor, jobs, desc):
            for job in jobs:
                yield job, processor(job)

    monkeypatch.setattr(EXECUTORS, "_classes", dict(EXECUTORS._classes))
    EXECUTORS.register("serial")(Serial)
    assert dict(make_executor("serial", 4, 3).map(lambda job: job * 2, [1, 2, 3], desc="t")) == {1: 2, 2: 4, 3: 6}
