"""Stage validate_params: check the whole params.yaml whenever any of it changes.

Every stage validates params.yaml when it runs, but DVC runs a stage only when something
it depends on changes, so a key that no stage depends on (``dvc exp run -S +foo=1``) would
pass unnoticed. This stage depends on every key and runs first. Its output never changes
while the params are valid, so the stages that depend on it (manifest, demo_data, and
through them every other) still re-run only for their own keys.

It checks everything load_params checks: the schema (every key, type and value), the
dataset adapter's options, and the registry names, option blocks and combinations of the
extractors, heads and fusions, so a typo in a head stops the run before any extraction.
That imports torch (a few seconds), paid once per params change: the stages before
training (demo_data, manifest, faces, audio, extract) check only what they use.
"""
from pathlib import Path

from pipeline.config import ParamsError, load_params

CHECKED = Path("data/params_checked.txt")
CONTENT = "params.yaml passed validation (pipeline/config.py)\n"  # the same on every valid run


def main() -> None:
    try:
        load_params()
    except ParamsError as error:
        raise SystemExit(f"validate_params: {error}") from None
    CHECKED.parent.mkdir(parents=True, exist_ok=True)
    CHECKED.write_text(CONTENT)
    print("validate_params: params.yaml is valid")


if __name__ == "__main__":
    main()
