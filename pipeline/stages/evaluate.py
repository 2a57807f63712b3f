"""Stage evaluate: metrics of every branch, the fusion and late fusion; their images; report."""
from pathlib import Path

from pipeline.config import load_params, validate_task_choices
from pipeline.evaluation import evaluate_experiment

REPORTS = Path("reports")


def main() -> None:
    params = load_params(check_components=False)
    validate_task_choices(params)
    report = evaluate_experiment(params)
    report.save(REPORTS)
    print("\n".join(report.lines()))


if __name__ == "__main__":
    main()
