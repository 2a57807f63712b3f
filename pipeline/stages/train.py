"""Stage train@<branch>: cross-validate the branch's temporal head on its cached features."""
import sys
from dataclasses import asdict

import pandas as pd

from pipeline.config import load_params
from pipeline.datasets.manifest import read_manifest
from pipeline.evaluation import summary
from pipeline.models import ModelSpec, branch_spec
from pipeline.results import BRANCHES_DIR, missing_clips, save_cross_validation
from pipeline.store import FAILURE_COLUMNS, FeatureStore
from pipeline.training import annotated_clips, cross_validate_task, empty_result, feature_dim, load_branch, output_size


def main(name: str) -> None:
    params = load_params()
    if name not in params.branches:
        raise SystemExit(f"train: no branch {name!r} in params.yaml; defined: {sorted(params.branches)}")
    branch = params.branches[name]
    classes = params.data.labels
    manifest, unannotated = annotated_clips(read_manifest(), params)
    store = FeatureStore(f"features/{branch.features}")
    sequences = load_branch(store, manifest["clip_id"].tolist(), params)
    clips = manifest[manifest["clip_id"].isin(sequences)]
    spec = branch_spec(name, branch.head.type, branch.head.options, feature_dim(sequences))
    if sequences:
        result = cross_validate_task(ModelSpec([spec], output_size(params)), {name: sequences}, clips, params)
    else:
        # e.g. a face branch on an audio-only corpus: recorded, not fatal.
        print(f"train@{name}: no clip has {branch.features} features; the branch scores nothing")
        result = empty_result(classes)
    input_store = FeatureStore(f"features/{params.extractors[branch.features].input}")
    missing = pd.concat([missing_clips(manifest, set(sequences), [input_store, store], f"train@{name}"),
                         pd.DataFrame(unannotated, columns=FAILURE_COLUMNS)], ignore_index=True)
    meta = {"branch": name, "features": branch.features, "classes": classes, "head": branch.head.type,
            "head_config": asdict(spec.head_config), "input_dim": spec.input_dim}
    save_cross_validation(BRANCHES_DIR / name, result, meta, missing)
    print(f"train@{name}: {len(clips)} clips, {len(missing)} missing, out-of-fold {summary(result.scores, params)}")


if __name__ == "__main__":
    main(sys.argv[1])
