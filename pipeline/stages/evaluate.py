"""Stage evaluate: metrics of every branch, the fusion and late fusion; confusion plot; report."""
from pathlib import Path

from pipeline.config import load_params
from pipeline.evaluation import evaluate_experiment

REPORTS = Path("reports")


def main() -> None:
    report = evaluate_experiment(load_params(check_components=False))
    report.save(REPORTS)
    print("\n".join(report.lines()))


if __name__ == "__main__":
    main()
