"""Stage train@<branch>: cross-validate the branch's head on its cached features."""
import sys

from pipeline.config import load_params
from pipeline.members import train_branch
from pipeline.results import BRANCHES_DIR


def main(name: str) -> None:
    run = train_branch(load_params(), name)
    run.save(BRANCHES_DIR / name)
    print(run.message)


if __name__ == "__main__":
    main(sys.argv[1])
