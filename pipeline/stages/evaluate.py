"""Stage evaluate: metrics of every branch, the fusion and late fusion; confusion plot; report."""
import json
from pathlib import Path

import pandas as pd

from pipeline.config import load_params
from pipeline.evaluation import confusion_table, markdown_report, score_report, write_json
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
    metrics = {"final": "late_fusion", "models": {name: score_report(scores, classes) for name, scores in models.items()}}
    write_json(REPORTS / "metrics.json", metrics)
    confusion_table(final, classes).to_csv(REPORTS / "confusion.csv", index=False)
    failures = pd.concat(
        [pd.read_csv(MANIFEST_FAILURES, dtype=str, keep_default_na=False)]
        + [read_missing(BRANCHES_DIR / name) for name in params.branches]
        + [read_missing(FUSION_DIR)],
        ignore_index=True,
    ).drop_duplicates()  # a clip without audio is missing from every audio branch alike
    failures.to_csv(REPORTS / "failures.csv", index=False)
    weights = json.loads((LATE_FUSION_DIR / "weights.json").read_text())
    (REPORTS / "report.md").write_text(markdown_report(metrics, weights, failures, final, classes))
    for name, report in metrics["models"].items():
        print(f"evaluate: {name:>20}  UAR {report['uar']:.3f}  accuracy {report['accuracy']:.3f}  macro-F1 {report['macro_f1']:.3f}")


if __name__ == "__main__":
    main()
