"""Named experiment setups: a paper's or a corpus's configuration as a patch of params.yaml.

    python -m pipeline.setups emodb [--root DIR] [-- dvc exp run arguments; default: evaluate]

A setup file ``setups/<name>.yaml`` is a JSON merge patch (RFC 7396) of params.yaml:
mappings merge key by key, any other value replaces, and ``null`` removes a key (so a
setup drops the demo's branches it does not use). One exception: a mapping with a ``type``
key (a head, an extractor) replaces the old one whole, options included. The patched params are validated, written
to params.yaml, and ``dvc exp run`` runs them as an experiment, reusing every cached stage
whose inputs did not change. ``--root`` points the setup at the corpus on this machine.
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


def patched_params(name: str, root: str | None = None) -> dict[str, Any]:
    path = SETUPS_DIR / f"{name}.yaml"
    if not path.exists():
        raise SystemExit(f"setup {name!r}: {path} not found; available: {available()}")
    patch = yaml.safe_load(path.read_text()) or {}
    if root is not None:
        patch = merge_patch(patch, {"data": {"root": root}})
    return merge_patch(yaml.safe_load(PARAMS.read_text()) or {}, patch)


def apply(name: str, root: str | None = None) -> dict[str, Any]:
    """Write the setup into params.yaml after validating the result (nothing is written if it
    does not validate)."""
    from pipeline.config import load_params

    params = patched_params(name, root)
    candidate = PARAMS.with_name(f".{PARAMS.name}.{name}.tmp")
    candidate.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        load_params(candidate)
    finally:
        candidate.unlink()
    PARAMS.write_text(f"# Setup {name!r} (setups/{name}.yaml) applied to the default params; see README.\n"
                      + yaml.safe_dump(params, sort_keys=False))
    return params


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help=f"one of {available()}")
    parser.add_argument("--root", help="the corpus folder on this machine (data.root)")
    parser.add_argument("--no-run", action="store_true", help="only write params.yaml")
    argv = sys.argv[1:] if argv is None else argv
    ours, dvc_args = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    args = parser.parse_args(ours)
    apply(args.name, args.root)
    print(f"params.yaml: setup {args.name!r} applied")
    if not args.no_run:
        # Targeting evaluate runs every stage it needs and no other: demo_data only runs when
        # the setup's data.root is the demo's.
        sys.exit(subprocess.call(["dvc", "exp", "run", *(dvc_args or ["evaluate"])]))


if __name__ == "__main__":
    main()
