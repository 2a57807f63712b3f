"""Stage predict_unlabeled: the final models' predictions of the manifest's unlabeled clips
(an official test split without labels, ABAW test videos, csv rows with an empty label),
from their features in features/; never trained or scored on. Writes
reports/predictions.csv and, for the continuous task, reports/predictions/<video>.txt (a
header, then one ``valence,arousal`` line per video frame: Aff-Wild2's layout)."""
import shutil
from pathlib import Path

from pipeline.config import load_params, validate_task_choices
from pipeline.datasets.manifest import read_manifest
from pipeline.store.files import atomic_write_text
from pipeline.tasks import task_from_params

REPORTS = Path("reports")
FEATURES = Path("features")


def main() -> None:
    params = load_params(check_components=False)
    validate_task_choices(params)
    task = task_from_params(params)
    manifest = read_manifest()
    unlabeled = manifest[task.unlabeled(manifest)]
    frames_dir = REPORTS / "predictions"
    shutil.rmtree(frames_dir, ignore_errors=True)
    frames_dir.mkdir(parents=True)
    (frames_dir / "README.txt").write_text("One <video>.txt per unlabeled video of a continuous experiment: a header, then a "
                                           "valence,arousal line per video frame.\n")
    if not len(unlabeled):
        # Nothing to predict: no model is loaded (and torch not imported).
        from pipeline.inference import empty_predictions

        atomic_write_text(REPORTS / "predictions.csv", empty_predictions(task).to_csv(index=False))
        print("predict_unlabeled: no unlabeled clip in the manifest")
        return
    from pipeline.inference import Predictor, manifest_inputs

    predictor = Predictor.from_experiment(".")
    clips, probed = manifest_inputs(unlabeled)
    result = predictor.score(clips, probed, [], FEATURES)
    atomic_write_text(REPORTS / "predictions.csv", result.rows.to_csv(index=False))
    if not task.class_scores:
        result.save_frame_files(frames_dir, task.dimensions)
    scored = (result.rows["reason"] == "").sum()
    print(f"predict_unlabeled: {scored} of {len(unlabeled)} unlabeled clips predicted -> {REPORTS / 'predictions.csv'}")
    for row in result.rows[result.rows["reason"] != ""].itertuples():
        print(f"  {row.clip}: {row.reason}")


if __name__ == "__main__":
    main()
