"""Named experiment setups: a method (a recipe) or a paper's configuration as a patch of
params.yaml, applied to any corpus.

    python -m pipeline.setups speech --dataset ravdess --root DIR    # the speech recipe on RAVDESS
    python -m pipeline.setups emodb [--root DIR]                      # the speech recipe + EmoDB's data
    python -m pipeline.setups --dataset crema_d --root DIR            # only the data block
    [-- dvc exp run arguments; default: evaluate]

A setup file ``setups/<name>.yaml`` is a JSON merge patch (RFC 7396) of params.yaml:
mappings merge key by key, any other value replaces, and ``null`` removes a key (so a
setup drops the demo's branches it does not use). One exception: a mapping with a ``type``
key (a head, an extractor) replaces the old one whole, options included. A setup may start
from another one (``recipe: speech``), patching it further.

The data block: when the setup names a dataset (``data.dataset``) or ``--dataset`` does, the
adapter's own defaults (its labels in their conventional order, every option at its default,
folds, grouping, test split; :func:`pipeline.datasets.dataset_defaults`) replace the data
block, and the setup's own data keys, ``--root`` and ``--labels`` go over them. Every option
key is then in params.yaml, so ``dvc exp run -S 'data.options.modalities=[03]'`` needs no
``+``. The patched params are validated, written to params.yaml, and ``dvc exp run`` runs
them as an experiment, reusing every cached stage whose inputs did not change.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

SETUPS_DIR = Path("setups")
PARAMS = Path("params.yaml")


def merge_patch(target: Any, patch: Any) -> Any:
    # A mapping that names a ``type`` (a head, an extractor) is a new component: its options
    # replace the old component's instead of mixing with them.
    if not isinstance(patch, dict) or "type" in patch:
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def available() -> list[str]:
    return sorted(p.stem for p in SETUPS_DIR.glob("*.yaml"))


def setup_patch(name: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The patch of setup ``name``, the recipe it starts from (``recipe: <name>``) merged in."""
    path = SETUPS_DIR / f"{name}.yaml"
    if not path.exists():
        raise SystemExit(f"setup {name!r}: {path} not found; available: {available()}")
    if name in seen:
        raise SystemExit(f"setup {name!r}: recipes form a cycle: {' -> '.join((*seen, name))}")
    patch = yaml.safe_load(path.read_text()) or {}
    recipe = patch.pop("recipe", None)
    return merge_patch(setup_patch(recipe, (*seen, name)), patch) if recipe else patch


def data_block(current: dict[str, Any], patch: dict[str, Any], dataset: str | None) -> dict[str, Any]:
    """The data block: the adapter's defaults under the setup's data keys when a dataset is
    named, else the setup's data keys over the current block."""
    from pipeline.datasets import dataset_defaults

    dataset = dataset or patch.get("dataset")
    if not dataset:
        return merge_patch(current, patch)
    try:
        defaults = dataset_defaults(dataset)
    except KeyError as error:
        raise SystemExit(f"--dataset: {error.args[0]}") from None
    block = {**current, **defaults}
    block = merge_patch(block, {k: v for k, v in patch.items() if k not in ("dataset", "options")})
    # Options of another adapter (from an earlier setup) would not validate: only this one's.
    block["options"] = merge_patch(defaults["options"], patch.get("options") or {})
    block["dataset"] = dataset
    return block


def patched_params(name: str | None, root: str | None = None, dataset: str | None = None,
                   labels: list[str] | None = None) -> dict[str, Any]:
    """params.yaml with setup ``name`` (None: none, only the data block) applied, on the
    dataset it names or ``dataset``."""
    patch = setup_patch(name) if name else {}
    data = patch.pop("data", None) or {}
    params = merge_patch(yaml.safe_load(PARAMS.read_text()) or {}, patch)
    block = data_block(params.get("data") or {}, data, dataset)
    if root is not None:
        block["root"] = root
    elif dataset and "root" not in data:
        raise SystemExit(f"--dataset {dataset}: pass --root, the corpus folder on this machine")
    if labels:
        block["labels"] = list(labels)
    if params.get("task", "classification") == "classification" and not block.get("labels"):
        raise SystemExit(f"dataset {block.get('dataset')!r} declares no labels: pass --labels a,b,c")
    params["data"] = block
    return params


def describe(name: str | None, dataset: str | None) -> str:
    parts = [f"setup {name!r} (setups/{name}.yaml)" if name else "", f"dataset {dataset!r}" if dataset else ""]
    return " on ".join(p for p in parts if p) or "no setup"


def apply(name: str | None, root: str | None = None, dataset: str | None = None, labels: list[str] | None = None) -> dict[str, Any]:
    """Write the setup into params.yaml after validating the result (nothing is written if it
    does not validate)."""
    from pipeline.config import load_params

    params = patched_params(name, root, dataset, labels)
    candidate = PARAMS.with_name(f".{PARAMS.name}.{name or dataset}.tmp")
    candidate.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        load_params(candidate)
    finally:
        candidate.unlink()
    PARAMS.write_text(f"# {describe(name, dataset)} applied to the default params; see README.\n"
                      + yaml.safe_dump(params, sort_keys=False))
    return params


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", help=f"one of {available()} (none: only --dataset's data block)")
    parser.add_argument("--dataset", help="the dataset adapter (data.dataset) whose defaults fill the data block")
    parser.add_argument("--root", help="the corpus folder on this machine (data.root)")
    parser.add_argument("--labels", type=lambda text: [t for t in text.split(",") if t],
                        help="comma-separated classes (default: the adapter's own)")
    parser.add_argument("--no-run", action="store_true", help="only write params.yaml")
    argv = sys.argv[1:] if argv is None else argv
    ours, dvc_args = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    args = parser.parse_args(ours)
    if not args.name and not args.dataset:
        parser.error("name a setup, --dataset, or both")
    apply(args.name, args.root, args.dataset, args.labels)
    print(f"params.yaml: {describe(args.name, args.dataset)} applied")
    if not args.no_run:
        # Targeting evaluate runs every stage it needs and no other: demo_data only runs when
        # the setup's data.root is the demo's.
        sys.exit(subprocess.call(["dvc", "exp", "run", *(dvc_args or ["evaluate"])]))


if __name__ == "__main__":
    main()
