"""The evaluation protocol of an experiment, stated: how the clips were split into folds, what
was held out, which normalisation each figure was made under, and what chance scores.

:func:`describe_protocol` is what reports and metrics name next to every figure (torch-free,
so the evaluate stage can call it)::

    describe_protocol(params, manifest)["summary"]
    # 'leave one speaker out (10 folds); speaker standardisation: transductive (each speaker's own
    #  statistics, test speakers included); chance UAR 0.143, accuracy 0.238'
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from pipeline.config import Params

STANDARDIZATION_DESCRIPTIONS = {
    "none": "none (each model standardises with its training folds)",
    "train-speakers": "train-speakers (per fold, the training speakers' statistics, applied to every clip: non-transductive)",
    "transductive": "transductive (each speaker's own statistics, test speakers included)",
}
NORMALIZATION_DESCRIPTIONS = {
    "none": "none",
    "utterance": "utterance (each clip's frames with the clip's own mean and std)",
}


def describe_protocol(params: Params, manifest: pd.DataFrame | None = None) -> dict[str, Any]:
    """The protocol as plain values (JSON-able): ``folds`` (scheme, count, group_by), ``test_set``,
    ``speaker_standardization`` and ``feature_normalization`` (names and descriptions),
    ``transductive``, ``chance`` (classification: UAR 1/classes, and the majority class's share
    of the clips as accuracy when ``manifest`` is given; continuous: CCC 0), and ``summary``,
    one line of text. ``manifest`` (clip_id, fold, speaker, label) gives the actual fold count."""
    data, train = params.data, params.train
    group = data.group_by
    if manifest is not None and "fold" in manifest:
        count = int(manifest.loc[manifest["fold"] >= 0, "fold"].nunique())
    else:
        count = data.folds or None  # leave-one-group-out: as many as groups, known from the manifest
    scheme = f"leave one {group} out" if data.folds == 0 else f"{data.folds} {group}-independent folds"
    folds = {"scheme": scheme, "count": count, "group_by": group}
    test_set = {"split": data.test_split, "groups": list(data.test_groups)}
    if manifest is not None and "fold" in manifest:
        test_set["clips"] = int((manifest["fold"] < 0).sum())

    if params.task == "classification":
        classes = list(data.labels)
        chance: dict[str, float] = {"uar": 1.0 / len(classes), "macro_f1": None}
        if manifest is not None and "label" in manifest and len(manifest):
            labels = manifest.loc[manifest["label"].isin(classes), "label"]
            chance["accuracy"] = float(labels.value_counts(normalize=True).max()) if len(labels) else None
        chance = {k: v for k, v in chance.items() if v is not None}
    else:
        chance = {"ccc": 0.0}

    standardization = train.speaker_standardization
    normalization = train.feature_normalization
    parts = [f"{scheme}" + (f" ({count} folds)" if count else "")]
    if data.test_split or data.test_groups:
        held = [f"split {data.test_split!r}"] if data.test_split else []
        held += [f"{group}s {', '.join(data.test_groups)}"] if data.test_groups else []
        parts.append("held-out test set: " + " and ".join(held))
    parts.append(f"speaker standardisation: {STANDARDIZATION_DESCRIPTIONS[standardization]}")
    if normalization != "none":
        parts.append(f"feature normalisation: {NORMALIZATION_DESCRIPTIONS[normalization]}")
    parts.append("chance " + ", ".join(f"{'UAR' if k == 'uar' else k.replace('_', '-')} {v:.3f}" for k, v in chance.items()))
    return {
        "task": params.task,
        "folds": folds,
        "test_set": test_set,
        "speaker_standardization": standardization,
        "speaker_standardization_description": STANDARDIZATION_DESCRIPTIONS[standardization],
        "feature_normalization": normalization,
        "feature_normalization_description": NORMALIZATION_DESCRIPTIONS[normalization],
        "transductive": standardization == "transductive",
        "chance": chance,
        "summary": "; ".join(parts),
    }
