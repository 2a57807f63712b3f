"""Stage fusion: train the cross-modal model named by the top-level param ``fusion``."""
from pipeline.config import load_params
from pipeline.members import train_fusion
from pipeline.results import FUSION_DIR


def main() -> None:
    run = train_fusion(load_params())
    run.save(FUSION_DIR)
    print(run.message)


if __name__ == "__main__":
    main()
