"""The compact experiments table (pipeline/experiments.py) over `dvc exp show --json` output."""
import json

from pipeline.experiments import render, rows


def _commit(rev, params, metrics, name=None, experiments=None):
    return {"rev": rev, "name": name, "data": {"params": {"params.yaml": {"data": params}},
                                               "metrics": {f"reports/metrics/{m}.json": {"data": f} for m, f in metrics.items()}},
            "experiments": experiments}


BASE = {"fusion": "concat", "train": {"epochs": 60, "seed": 0}, "data": {"labels": ["a", "b"]}}


def _show():
    fbp = {**BASE, "fusion": "fbp"}
    seed = {**BASE, "train": {"epochs": 60, "seed": 1}}
    experiments = [{"name": "young-knap", "revs": [_commit("b001", fbp, {"late_fusion": {"uar": 0.89}, "fusion_fbp": {"uar": 0.883}})]},
                   {"name": "other-exp", "revs": [_commit("c002", seed, {"late_fusion": {"uar": 0.85, "accuracy": 0.86}})]}]
    return [_commit("workspace", fbp, {"late_fusion": {"uar": 0.89}, "fusion_fbp": {"uar": 0.883}}),
            _commit("efb59ecb95", BASE, {}, name="main", experiments=experiments)]


def test_rows_name_only_the_params_each_experiment_changed():
    table = rows(json.loads(json.dumps(_show())))
    assert [r["name"] for r in table] == ["workspace", "main", "young-knap", "other-exp"]
    assert table[0]["changed"] == {"fusion": "fbp"}
    assert table[1]["changed"] == {}
    assert table[2]["changed"] == {"fusion": "fbp"}
    assert table[3]["changed"] == {"train.seed": 1}
    assert table[3]["metrics"]["late_fusion"] == {"uar": 0.85, "accuracy": 0.86}


def test_render_fits_a_terminal_and_puts_late_fusion_first():
    text = render(rows(_show()))
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 120
    header = lines[1].split()
    assert header[:4] == ["experiment", "params", "changed", "late_fusion"]
    other = next(line for line in lines if line.startswith("other-exp"))
    assert "train.seed=1" in other and "0.850" in other and other.rstrip().endswith("-")  # no fusion_fbp figure
    accuracy = render(rows(_show()), "accuracy")
    assert "0.860" in next(line for line in accuracy.splitlines() if line.startswith("other-exp"))
