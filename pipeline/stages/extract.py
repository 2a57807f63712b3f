"""Stage extract@<name>: run the extractor ``extractors.<name>`` over its input store."""
import sys

from pipeline.config import load_params, validate_extractors
from pipeline.extraction import StageFailed, extract_features, read_clips

FEATURES = "features"


def main(name: str) -> None:
    # Only the extractors are validated here: heads and fusions would import torch, which a
    # run with nothing to extract never needs (the manifest and train stages check them).
    params = load_params(check_components=False)
    validate_extractors(params)
    if name not in params.extractors:
        raise SystemExit(f"extract: no extractor {name!r} in params.yaml; defined: {sorted(params.extractors)}")
    try:
        extract_features(name, params.extractors[name], read_clips(), FEATURES)
    except StageFailed as error:
        raise SystemExit(str(error)) from None


if __name__ == "__main__":
    main(sys.argv[1])
