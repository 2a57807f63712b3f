"""Stage manifest: list the dataset's clips, probe their media, assign speaker folds."""
import json
from pathlib import Path

import pandas as pd

from pipeline.config import load_params
from pipeline.datasets.manifest import CLIPS, build_manifest
from pipeline.store import FAILURE_COLUMNS, summarise_failures
from pipeline.store.files import write_parquet

MANIFEST = Path("data/manifest.parquet")
FAILURES = Path("data/manifest_failures.csv")


def main() -> None:
    params = load_params(check_components=False)
    manifest, failures, counts = build_manifest(params.data)
    MANIFEST.parent.mkdir(parents=True, exist_ok=True)
    write_parquet(manifest, MANIFEST)
    # Extraction reads the clips without folds or labels, so that a new fold assignment, test
    # split or label map re-runs training but never extraction.
    write_parquet(manifest.drop(columns=["fold", "split", "label", "targets"]), CLIPS)
    pd.DataFrame(failures, columns=FAILURE_COLUMNS).to_csv(FAILURES, index=False)
    print(f"manifest: {json.dumps(counts)}; speakers={manifest['speaker'].nunique()} folds={manifest['fold'].nunique()}")
    kept = set(manifest["clip_id"])
    for line in summarise_failures(failures, tag=lambda row: "kept" if row["clip_id"] in kept else "left out"):
        print(line)


if __name__ == "__main__":
    main()
