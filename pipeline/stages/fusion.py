"""Stage fusion: train the cross-modal model named by the top-level param ``fusion``."""
from dataclasses import asdict

import pandas as pd

from pipeline.config import load_params
from pipeline.datasets.manifest import read_manifest
from pipeline.fusion.cross_modal import FUSIONS
from pipeline.evaluation import summary
from pipeline.models import ModelSpec, branch_spec
from pipeline.results import FUSION_DIR, save_cross_validation
from pipeline.store import FAILURE_COLUMNS, FeatureStore
from pipeline.training import annotated_clips, cross_validate_task, empty_result, feature_dim, load_branch, output_size


def main() -> None:
    params = load_params()
    classes = params.data.labels
    manifest, _ = annotated_clips(read_manifest(), params)
    names = params.cross_modal.branches
    fusion_config = FUSIONS.config(params.fusion, params.cross_modal.options.get(params.fusion, {}), f"cross_modal.options.{params.fusion}")
    sequences, specs = {}, []
    for name in names:
        branch = params.branches[name]
        branch_sequences = load_branch(FeatureStore(f"features/{branch.features}"), manifest["clip_id"].tolist(), params)
        if not branch_sequences:
            print(f"fusion: branch {name!r} has no features in this dataset and is left out")
            continue
        sequences[name] = branch_sequences
        specs.append(branch_spec(name, branch.head.type, branch.head.options, feature_dim(branch_sequences)))
    covered = set().union(*(set(s) for s in sequences.values()))
    clips = manifest[manifest["clip_id"].isin(covered)]
    partial = {name: sorted(covered - set(s)) for name, s in sequences.items()}
    # With one modality left there is nothing to fuse: its head alone is the model.
    fusion = params.fusion if len(specs) > 1 else None
    if not specs:
        result = empty_result(classes)
    else:
        result = cross_validate_task(ModelSpec(specs, output_size(params), fusion, fusion_config), sequences, clips, params)
    missing = pd.DataFrame(
        [{"clip_id": c, "stage": "fusion", "reason": "no features in any fused branch"} for c in manifest["clip_id"] if c not in covered],
        columns=FAILURE_COLUMNS,
    )
    meta = {"fusion": fusion, "fusion_config": asdict(fusion_config), "branches": list(sequences), "classes": classes,
            "clips_missing_a_modality": {name: len(ids) for name, ids in partial.items()},
            "heads": {s.name: {"type": s.head, "config": asdict(s.head_config), "input_dim": s.input_dim} for s in specs}}
    save_cross_validation(FUSION_DIR, result, meta, missing)
    print(f"fusion ({params.fusion}): {len(clips)} clips ({meta['clips_missing_a_modality']} missing a modality), out-of-fold {summary(result.scores, params)}")


if __name__ == "__main__":
    main()
