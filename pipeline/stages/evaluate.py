"""Stage evaluate: metrics of every branch, the fusion and late fusion; confusion plot; report."""
import json
from pathlib import Path

import pandas as pd

from pipeline.config import load_params
from pipeline.evaluation import confusion_table, experiment_metrics, markdown_report, write_curves, write_json
from pipeline.results import BRANCHES_DIR, FUSION_DIR, LATE_FUSION_DIR, read_missing, read_scores

REPORTS = Path("reports")
MANIFEST_FAILURES = Path("data/manifest_failures.csv")


def main() -> None:
    params = load_params(check_components=False)
    classes = params.data.labels
    models = {name: read_scores(name) for name in params.branches}
    models[f"fusion_{params.fusion}"] = read_scores("fusion")
    final = pd.read_parquet(LATE_FUSION_DIR / "scores.parquet")
    models["late_fusion"] = final
    metrics = experiment_metrics(models, params)
    write_json(REPORTS / "metrics.json", metrics)
    labelled = final[final["fold"] >= 0] if len(final) else final
    if params.task == "classification":
        confusion_table(labelled, classes).to_csv(REPORTS / "confusion.csv", index=False)
    else:  # keeps the declared plot present; a confusion matrix has no meaning here
        pd.DataFrame(columns=["actual", "predicted"]).to_csv(REPORTS / "confusion.csv", index=False)
    failures = pd.concat(
        [pd.read_csv(MANIFEST_FAILURES, dtype=str, keep_default_na=False)]
        + [read_missing(BRANCHES_DIR / name) for name in params.branches]
        + [read_missing(FUSION_DIR)],
        ignore_index=True,
    ).drop_duplicates()  # a clip without audio is missing from every audio branch alike
    failures.to_csv(REPORTS / "failures.csv", index=False)
    write_curves(REPORTS / "curves", {name: BRANCHES_DIR / name for name in params.branches} | {"fusion": FUSION_DIR})
    weights = json.loads((LATE_FUSION_DIR / "weights.json").read_text())
    (REPORTS / "report.md").write_text(markdown_report(metrics, weights, failures, labelled, params))
    for name, report in metrics["models"].items():
        figures = "  ".join(f"{key} {value:.3f}" for key, value in report.items() if isinstance(value, float))
        print(f"evaluate: {name:>20}  {figures}")


if __name__ == "__main__":
    main()
