"""Stage validate_params: check the whole params.yaml whenever any of it changes.

Every stage validates params.yaml when it runs, but DVC runs a stage only when something
it depends on changes, so a key that no stage depends on (``dvc exp run -S +foo=1``) would
pass unnoticed. This stage depends on every key and runs first. Its output never changes
while the params are valid, so the stages that depend on it (manifest, demo_data, and
through them every other) still re-run only for their own keys.

It checks the schema (every key, type and value, and the dataset adapter's options).
Registry names and option blocks of extractors, heads and fusions are checked by each stage
that builds them, before its work, since their registries import torch.
"""
from pathlib import Path

from pipeline.config import ParamsError, load_params

CHECKED = Path("data/params_checked.txt")
CONTENT = "params.yaml passed validation (pipeline/config.py)\n"  # the same on every valid run


def main() -> None:
    try:
        load_params(check_components=False)
    except ParamsError as error:
        raise SystemExit(f"validate_params: {error}") from None
    CHECKED.parent.mkdir(parents=True, exist_ok=True)
    CHECKED.write_text(CONTENT)
    print("validate_params: params.yaml is valid")


if __name__ == "__main__":
    main()
