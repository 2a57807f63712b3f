"""Stage fusion: train the cross-modal model named by the top-level param ``fusion``."""
from dataclasses import asdict

import pandas as pd

from pipeline.config import load_params
from pipeline.datasets.manifest import read_manifest
from pipeline.fusion import FUSIONS
from pipeline.heads import HEADS
from pipeline.metrics import classification_report
from pipeline.models import BranchSpec, MultiBranchClassifier
from pipeline.results import FUSION_DIR, save_cross_validation
from pipeline.store import FAILURE_COLUMNS, FeatureStore
from pipeline.training import cross_validate, load_sequences, probability_columns


def main() -> None:
    params = load_params()
    classes = params.data.labels
    manifest = read_manifest()
    names = params.cross_modal.branches
    fusion_config = FUSIONS.config(params.fusion, params.cross_modal.options.get(params.fusion, {}), f"cross_modal.options.{params.fusion}")
    sequences, specs = {}, []
    for name in names:
        branch = params.branches[name]
        sequences[name] = load_sequences(FeatureStore(f"features/{branch.features}"), manifest["clip_id"].tolist())
        if not sequences[name]:
            raise SystemExit(f"fusion: branch {name!r} has no features at all")
        input_dim = next(iter(sequences[name].values()))[0].shape[1]
        head_config = HEADS.config(branch.head.type, branch.head.options, f"branches.{name}.head.options")
        specs.append(BranchSpec(name, input_dim, branch.head.type, head_config))
    covered = set().union(*(set(s) for s in sequences.values()))
    clips = manifest[manifest["clip_id"].isin(covered)]
    partial = {name: sorted(covered - set(s)) for name, s in sequences.items()}
    result = cross_validate(
        lambda: MultiBranchClassifier(specs, len(classes), params.fusion, fusion_config), sequences, clips, classes, params.train
    )
    missing = pd.DataFrame(
        [{"clip_id": c, "stage": "fusion", "reason": "no features in any fused branch"} for c in manifest["clip_id"] if c not in covered],
        columns=FAILURE_COLUMNS,
    )
    meta = {"fusion": params.fusion, "fusion_config": asdict(fusion_config), "branches": names, "classes": classes,
            "clips_missing_a_modality": {name: len(ids) for name, ids in partial.items()},
            "heads": {s.name: {"type": s.head, "config": asdict(s.head_config), "input_dim": s.input_dim} for s in specs}}
    save_cross_validation(FUSION_DIR, result, meta, missing)
    report = classification_report(
        result.scores["label"].map(classes.index).to_numpy(), result.scores[probability_columns(classes)].to_numpy().argmax(1), classes
    )
    print(f"fusion ({params.fusion}): {len(clips)} clips ({meta['clips_missing_a_modality']} missing a modality), out-of-fold UAR {report['uar']:.3f}")


if __name__ == "__main__":
    main()
