"""EmoDB speech benchmark (issues 4, 17, 19): the speech recipe (`emodb` setup) on a fresh copy of
the project, leave one speaker out (10 folds), every choice made inside the training folds,
under each speaker standardisation protocol.

    python bench/emodb.py [--root ../shared/data/emodb] [--keep DIR] [--setup emodb|speech_augmented|...]
                          [--protocols train-speakers,transductive] [--seeds 3] [--first-seed 0] [--members all|svm-only|light]
                          [--ensemble N]

For each protocol (train-speakers: the training speakers' statistics only, non-transductive;
transductive: each speaker's own, test speakers included, the GeMAPS paper's protocol) and each
seed (train.seed), `dvc repro evaluate` runs the recipe; the features are extracted once. Prints
the extraction time of the 535 files on this machine's cores, each run's training time, and per
protocol the unweighted average recall, accuracy and macro-F1 of every member and the late
fusion: mean and standard deviation over the seeds (the linear-SVM members are deterministic;
the neural ones move with the seed). ``--members light`` adds egemaps_mlp and logmel_tcn to the SVMs
(no VGG, no cross-modal fusion: ~15 min a run). ``--members svm-only`` runs the ComParE, eGeMAPS and emobase
linear-SVM branches and their late fusion only (minutes instead of over an hour on 2 cores).
``--ensemble N`` makes every neural branch and the cross-modal fusion a seed ensemble
(``seeds: N``: each fold the mean of N models; about N times their training time); the spread
over train.seed then measures how much the ensembles still move.
``--setup NAME`` benches another speech setup on EmoDB's data (e.g. ``speech_augmented``: the
recipe with speed and noise copies of the training clips and SpecAugment); extraction then
includes the augmented copies.
Targets (issue 19): late fusion UAR >= 0.88 non-transductive, >= 0.92 transductive.
Reference (Eyben et al. 2016, linear SVM, C picked on the test folds, transductive):
eGeMAPS 0.811, ComParE 0.860.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.devtools import copy_project, run_timed  # noqa: E402

EXTRACTION_STAGES = ("audio", "extract@")
TRAINING_STAGES = ("train@", "fusion", "late_fusion")
SVM_MEMBERS = ["compare_svm", "egemaps_svm", "emobase_svm"]
# The neural members that train in minutes rather than an hour (no VGG, no cross-modal fusion).
LIGHT_MEMBERS = [*SVM_MEMBERS, "egemaps_mlp", "logmel_tcn"]
MEMBER_SETS = {"svm-only": SVM_MEMBERS, "light": LIGHT_MEMBERS}
TARGETS = {"train-speakers": 0.88, "transductive": 0.92}


def only_members(params: dict, members: list[str]) -> dict:
    """The recipe cut to these branches and their late fusion: no cross-modal fusion, and only
    the extractors they read (svm-only: no log-Mel extraction)."""
    params["branches"] = {name: params["branches"][name] for name in members}
    used = {branch["features"] for branch in params["branches"].values()}
    params["extractors"] = {name: spec for name, spec in params["extractors"].items() if name in used}
    params["cross_modal"]["branches"] = []
    params["late_fusion"]["members"] = list(members)
    return params


def seed_ensembles(params: dict, seeds: int) -> dict:
    """``seeds: N`` on every neural branch and on the cross-modal fusion (a linear SVM fits the
    same model whatever the seed)."""
    from pipeline.heads import capabilities

    for branch in params["branches"].values():
        if capabilities(branch["head"]["type"]).neural:
            branch["seeds"] = seeds
    params["cross_modal"]["seeds"] = seeds
    return params


def member_scores(root: Path, members: list[str]) -> dict[str, dict[str, float]]:
    """Out-of-fold accuracy, UAR and macro-F1 of every member and the late fusion, from their
    score files (independent of the report's layout)."""
    import pandas as pd

    from pipeline.metrics import classification_report, probability_columns

    classes = yaml.safe_load((root / "params.yaml").read_text())["data"]["labels"]
    columns = probability_columns(classes)
    paths = {m: root / "models" / ("fusion" if m == "fusion" else f"branches/{m}") / "scores.parquet" for m in members}
    paths["late_fusion"] = root / "models" / "late_fusion" / "scores.parquet"
    figures = {}
    for name, path in paths.items():
        scores = pd.read_parquet(path)
        scores = scores[scores["fold"] >= 0]
        if not len(scores):
            continue
        truth = scores["label"].map(classes.index).to_numpy()
        report = classification_report(truth, scores[columns].to_numpy().argmax(1), classes)
        figures[name] = {k: report[k] for k in ("clips", "uar", "accuracy", "macro_f1")}
    return figures


def spread(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    shared = os.environ.get("AVER_SHARED_DATA", str(REPO.parent / "shared" / "data"))
    parser.add_argument("--root", type=Path, default=Path(shared) / "emodb", help="the EmoDB folder (wav/*.wav)")
    parser.add_argument("--keep", type=Path, help="run in this (new) folder and keep it")
    parser.add_argument("--protocols", default="train-speakers,transductive",
                        help="comma-separated train.speaker_standardization protocols (none, train-speakers, transductive)")
    parser.add_argument("--seeds", type=int, help="train.seed 0..N-1 per protocol (default 3; 1 with --members svm-only)")
    parser.add_argument("--first-seed", type=int, default=0, metavar="K",
                        help="start at train.seed K (K..K+N-1): the rest of a bench whose first runs are done")
    parser.add_argument("--members", choices=["all", *MEMBER_SETS], default="all",
                        help="svm-only: the three linear SVMs; light: those plus egemaps_mlp and logmel_tcn")
    parser.add_argument("--ensemble", type=int, default=1, metavar="N",
                        help="seeds: N (a seed ensemble) on every neural branch and the cross-modal fusion (default 1)")
    parser.add_argument("--setup", default="emodb", help="the setup (setups/NAME.yaml) run on EmoDB's data (default: emodb, the speech recipe)")
    args = parser.parse_args()
    if args.ensemble < 1:
        parser.error(f"--ensemble {args.ensemble}: at least one model per fold")
    if not args.root.exists():
        raise SystemExit(f"{args.root}: EmoDB not found (pass --root or set AVER_SHARED_DATA)")
    protocols = [p for p in args.protocols.split(",") if p]
    seeds = args.seeds or (1 if args.members == "svm-only" else 3)
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="aver-emodb-"))
    workdir.mkdir(parents=True, exist_ok=True)
    root = copy_project(REPO, workdir)
    print(f"project copy: {root}  (cores: {os.cpu_count()}); setup {args.setup}, protocols {protocols}, seeds {seeds}, "
          f"members {args.members}, ensemble {args.ensemble}", flush=True)
    run_timed([sys.executable, "-m", "pipeline.setups", args.setup, "--dataset", "emodb", "--root", str(args.root.resolve()), "--no-run"], root)
    base = yaml.safe_load((root / "params.yaml").read_text())
    if args.members in MEMBER_SETS:
        base = only_members(base, MEMBER_SETS[args.members])
    if args.ensemble > 1:
        base = seed_ensembles(base, args.ensemble)
    members = list(base["late_fusion"]["members"])

    results: dict[str, list[dict]] = {p: [] for p in protocols}
    extraction, clips = None, 0
    for protocol in protocols:
        for seed in range(args.first_seed, args.first_seed + seeds):
            params = json.loads(json.dumps(base))
            params["train"].update(speaker_standardization=protocol, seed=seed)
            (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
            start = time.perf_counter()
            _, stage_times = run_timed(["dvc", "repro", "evaluate"], root)
            total = time.perf_counter() - start
            if extraction is None:
                extraction = sum(s for stage, s in stage_times.items() if stage.startswith(EXTRACTION_STAGES))
                print(f"\n{'stage':<26}{'seconds':>9}")
                for stage, seconds in stage_times.items():
                    print(f"{stage:<26}{seconds:>9.1f}")
            training = sum(s for stage, s in stage_times.items() if stage.startswith(TRAINING_STAGES))
            figures = member_scores(root, members)
            clips = max(clips, *(f["clips"] for f in figures.values()))
            results[protocol].append(figures)
            print(f"{protocol} seed {seed}: dvc repro evaluate {total:.1f} s (training {training:.1f} s); "
                  f"late fusion UAR {figures['late_fusion']['uar']:.3f}", flush=True)
            weights = json.loads((root / "models" / "late_fusion" / "weights.json").read_text())
            print(f"  late fusion ({weights['method']}) weights on all folds: {weights['weights']}")
            # Each run's figures as it ends: a bench stopped part way still leaves them.
            print("  UAR " + ", ".join(f"{name} {f['uar']:.3f}" for name, f in figures.items()), flush=True)

    print(f"\nextraction of {clips} files (audio + every audio extractor, augmented copies included): {extraction:.1f} s "
          f"on {os.cpu_count()} cores")
    for protocol, runs in results.items():
        print(f"\nprotocol {protocol}: {len(runs)} seed(s), mean ± std over seeds")
        print(f"{'model':<24}{'UAR':>16}{'accuracy':>16}{'macro-F1':>16}")
        for name in runs[0]:
            row = [spread([r[name][k] for r in runs if name in r]) for k in ("uar", "accuracy", "macro_f1")]
            print(f"{name:<24}{row[0]:>16}{row[1]:>16}{row[2]:>16}")
        final = float(np.mean([r["late_fusion"]["uar"] for r in runs]))
        target = TARGETS.get(protocol)
        if target is not None:
            print(f"late fusion UAR {final:.3f}  (issue 19 target >= {target:.2f}: {'met' if final >= target else 'NOT met'})")


if __name__ == "__main__":
    main()
