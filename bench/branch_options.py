"""One branch of a kept EmoDB bench project under one protocol, trained with train.seed
0..N-1, with and without a training option: a seed ensemble, augmented copies, SpecAugment.

    python bench/emodb.py --members light --keep DIR          # once: extracts the features
    python bench/branch_options.py DIR --branch egemaps_mlp --protocol train-speakers --option ensemble
    python bench/branch_options.py DIR --branch egemaps_mlp --option augment       # speed 0.9/1.1, 20 dB noise
    python bench/branch_options.py DIR --branch logmel_tcn --option spec_augment   # 2 time + 2 frequency masks
    python bench/branch_options.py DIR --branch compare_svm --option select --seeds 1  # ANOVA-F feature selection

Each run is `pipeline.members.train_branch` on the project's features (no DVC; leave one
speaker out, every choice inside the training folds); it prints the out-of-fold UAR of each
seed and their mean ± standard deviation, for the branch as the project has it and with the
option. ``select`` gives a linear head ``select_k``: keep 1/16, 1/8, 1/4 or 1/2 of the
features or all of them, chosen with C by the inner cross-validation (``--select-k`` for other
counts). ``augment`` extracts the copies first (cached in the project's store, as
`extract@<features>` would). These are test-fold figures: they say which option helps, not
which to choose for a recipe (that would tune on the test folds).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

COPIES = [{"name": "speed0.9", "type": "speed", "factor": 0.9}, {"name": "speed1.1", "type": "speed", "factor": 1.1},
          {"name": "noise20", "type": "noise", "snr_db": 20}]
MASKS = {"time_masks": 2, "time_width": 20, "freq_masks": 2, "freq_width": 8}


SELECT_FRACTIONS = (1 / 16, 1 / 8, 1 / 4, 1 / 2)


def feature_dim(params, branch: str) -> int:
    """Width of the branch's pooled features: its store's width (functionals), times the
    pooled statistics when clips have several frames (the first entry decides)."""
    from pipeline.store import FeatureStore

    store = FeatureStore(Path("features") / params.branches[branch].features)
    data = store.read(store.clip_ids()[0], ["data"]).arrays["data"]
    statistics = params.branches[branch].head.options.get("statistics", ["mean", "std"])
    return int(data.shape[1] * (1 if len(data) <= 1 else len(statistics)))


def with_option(params, branch: str, option: str, ensemble: int, select_k: list[int] | None = None):
    from pipeline.config import SpecAugmentParams

    spec = params.branches[branch]
    if option == "ensemble":
        spec = dataclasses.replace(spec, seeds=ensemble)
    elif option == "spec_augment":
        spec = dataclasses.replace(spec, spec_augment=SpecAugmentParams(**MASKS))
    elif option == "augment":
        extractor = params.extractors[spec.features]
        params = dataclasses.replace(params, extractors={**params.extractors, spec.features: dataclasses.replace(extractor, augmentations=list(COPIES))})
        spec = dataclasses.replace(spec, augment=[c["name"] for c in COPIES])
    elif option == "select":
        if select_k is None:
            dim = feature_dim(params, branch)
            select_k = [max(1, round(dim * fraction)) for fraction in SELECT_FRACTIONS] + [0]
        spec = dataclasses.replace(spec, head=dataclasses.replace(spec.head, options={**spec.head.options, "select_k": select_k}))
    return dataclasses.replace(params, branches={**params.branches, branch: spec})


def uar_of(run, classes: list[str]) -> float:
    from pipeline.metrics import classification_report, probability_columns

    scores = run.result.scores[run.result.scores["fold"] >= 0]
    truth = scores["label"].map(classes.index).to_numpy()
    return classification_report(truth, scores[probability_columns(classes)].to_numpy().argmax(1), classes)["uar"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("project", type=Path, help="a project kept by bench/emodb.py --keep")
    parser.add_argument("--branch", required=True)
    parser.add_argument("--protocol", default="train-speakers", help="train.speaker_standardization")
    parser.add_argument("--option", choices=["ensemble", "augment", "spec_augment", "select"], required=True)
    parser.add_argument("--select-k", help="feature counts for --option select, comma-separated (0: all)")
    parser.add_argument("--ensemble", type=int, default=3, help="seeds per fold for --option ensemble")
    parser.add_argument("--seeds", type=int, default=3, help="train.seed 0..N-1")
    args = parser.parse_args()
    os.chdir(args.project)
    from pipeline.config import load_params
    from pipeline.extraction import extract_features, read_clips
    from pipeline.members import train_branch

    base = load_params("params.yaml")
    base = dataclasses.replace(base, train=dataclasses.replace(base.train, speaker_standardization=args.protocol))
    select_k = [int(k) for k in args.select_k.split(",")] if args.select_k else None
    optioned = with_option(base, args.branch, args.option, args.ensemble, select_k)
    if args.option == "select":
        print(f"select_k {optioned.branches[args.branch].head.options['select_k']}")
    if args.option == "augment":
        name = optioned.branches[args.branch].features
        start = time.perf_counter()
        extract_features(name, optioned.extractors[name], read_clips(), "features")
        print(f"copies of {name}: {time.perf_counter() - start:.0f} s", flush=True)
    classes = base.data.labels
    print(f"{args.branch}, {args.protocol}, train.seed 0..{args.seeds - 1}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    for label, params in (("as the project has it", base), (f"with {args.option}", optioned)):
        uars = []
        for seed in range(args.seeds):
            seeded = dataclasses.replace(params, train=dataclasses.replace(params.train, seed=seed))
            start = time.perf_counter()
            uars.append(uar_of(train_branch(seeded, args.branch), classes))
            print(f"  {label}: train.seed {seed} UAR {uars[-1]:.3f} ({time.perf_counter() - start:.0f} s)", flush=True)
        spread = f" ± {np.std(uars, ddof=1):.3f}" if len(uars) > 1 else ""
        print(f"{args.branch} {label}: UAR {np.mean(uars):.3f}{spread}", flush=True)


if __name__ == "__main__":
    main()
