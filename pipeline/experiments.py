"""Experiments side by side at terminal width: one row per experiment, the params it changed
and one figure per model (``dvc exp show`` prints every param and every metric key, one
column each, which no terminal shows).

    python -m pipeline.experiments                  # UAR (continuous task: mean CCC) per model
    python -m pipeline.experiments --metric accuracy
    python -m pipeline.experiments --all            # experiments of every commit, not only HEAD's

It reads ``dvc exp show --json``; the params shown are those that differ from the commit the
experiment was run from (the workspace: from HEAD).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

METRICS_DIR = "reports/metrics/"
HEADLINE = ("uar", "ccc_mean")
MISSING = "-"


def flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Dotted keys and leaf values (lists stay leaves, as in `-S key=[a,b]`)."""
    if isinstance(value, dict) and value:
        for key, item in value.items():
            yield from flatten(item, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, value


def _params(data: dict) -> dict[str, Any]:
    return dict(flatten((data.get("params") or {}).get("params.yaml", {}).get("data", {})))


def _metrics(data: dict) -> dict[str, dict[str, Any]]:
    """model -> its figures, from reports/metrics/<model>.json."""
    models = {}
    for path, content in (data.get("metrics") or {}).items():
        if path.startswith(METRICS_DIR) and isinstance(content.get("data"), dict):
            models[Path(path).stem] = content["data"]
    return models


def rows(show: list[dict]) -> list[dict[str, Any]]:
    """One row per workspace, commit and experiment: name, changed params, figures per model."""
    table = []
    head_params: dict[str, Any] = {}
    for position, commit in enumerate(show):
        data = commit.get("data") or {}
        params = _params(data)
        if position == 1 or (position == 0 and len(show) == 1):
            head_params = params
        rev = str(commit.get("rev", ""))
        table.append({"name": commit.get("name") or (rev if rev == "workspace" else rev[:7]), "params": params, "metrics": _metrics(data)})
        for experiment in commit.get("experiments") or []:
            for rev in experiment.get("revs", [])[:1]:  # the experiment's newest run
                rev_data = rev.get("data") or {}
                table.append({"name": experiment.get("name") or rev.get("name") or str(rev.get("rev", ""))[:7],
                              "params": _params(rev_data), "metrics": _metrics(rev_data), "against": params})
    # The workspace (first row) is compared with HEAD, each commit with HEAD, each experiment with its commit.
    for row in table:
        against = row.pop("against", head_params)
        row["changed"] = {k: v for k, v in row.pop("params").items() if against.get(k, MISSING) != v}
    return table


def _short(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text if len(text) <= 28 else text[:25] + "..."


def _figure(figures: dict[str, Any], metric: str | None) -> str:
    keys = (metric,) if metric else HEADLINE
    for key in keys:
        if isinstance(figures.get(key), (int, float)):
            return f"{figures[key]:.3f}"
    return MISSING


def render(table: list[dict[str, Any]], metric: str | None = None) -> str:
    models = sorted({m for row in table for m in row["metrics"]}, key=lambda m: (m != "late_fusion", m))
    changes = ["  ".join(f"{k}={_short(v)}" for k, v in sorted(row["changed"].items())) or "(as committed)" for row in table]
    name_width = max([10, *(len(row["name"]) for row in table)])
    change_width = min(60, max([14, *(len(c) for c in changes)]))
    header = f"{'experiment':<{name_width}}  {'params changed':<{change_width}}" + "".join(f"  {m[:12]:>12}" for m in models)
    lines = [f"{metric or 'UAR (continuous: mean CCC)'} per model, out of fold", header, "-" * len(header)]
    for row, change in zip(table, changes):
        pieces = [change[i : i + change_width] for i in range(0, len(change), change_width)] or [""]
        figures = "".join(f"  {_figure(row['metrics'].get(m, {}), metric):>12}" for m in models)
        lines.append(f"{row['name']:<{name_width}}  {pieces[0]:<{change_width}}{figures}")
        lines.extend(f"{'':<{name_width}}  {piece}" for piece in pieces[1:])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--metric", help="a key of reports/metrics/<model>.json (default: uar, or ccc_mean)")
    parser.add_argument("--all", action="store_true", help="experiments of every commit (dvc exp show -A)")
    args = parser.parse_args(argv)
    # The dvc beside this interpreter: the environment's, even when it is not activated.
    beside = Path(sys.executable).parent / "dvc"
    command = [str(beside) if beside.exists() else "dvc", "exp", "show", "--json", *(["-A"] if args.all else [])]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed: {result.stderr.strip()}")
    print(render(rows(json.loads(result.stdout or "[]")), args.metric))


if __name__ == "__main__":
    main()
