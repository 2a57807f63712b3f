"""Stage audio: decode every clip's audio track to mono at the configured sample rate."""
from pipeline.config import load_params
from pipeline.extraction import StageFailed, extract_audio, read_clips

STORE = "features/audio"


def main() -> None:
    # Like the faces stage, it builds no registry component, so it does not import torch.
    params = load_params(check_components=False)
    try:
        extract_audio(params.audio, read_clips(), STORE)
    except StageFailed as error:
        raise SystemExit(str(error)) from None


if __name__ == "__main__":
    main()
