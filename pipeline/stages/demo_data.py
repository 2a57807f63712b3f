"""Stage demo_data: generate the built-in demo dataset (videos, labels, valence/arousal)."""
import time
from pathlib import Path

from pipeline.config import load_params
from pipeline.datasets.demo.generator import generate

OUTPUT = Path("data/demo")


def main() -> None:
    params = load_params(check_components=False)
    start = time.perf_counter()
    labels = generate(OUTPUT, params.demo)
    print(f"demo_data: {len(labels)} clips in {OUTPUT} ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
