"""Stage demo_data: generate the built-in demo dataset (videos, labels, valence/arousal).

It generates only when the experiment reads it (``data.root`` is data/demo): a corpus
experiment (``dvc exp run -S data.root=/data/RAVDESS ...``) would otherwise spend its first
minutes on clips it never uses. Then the output is a folder holding only a note."""
import time
from pathlib import Path

from pipeline.config import load_params

OUTPUT = Path("data/demo")
NOTE = "NOT_GENERATED.txt"


def main() -> None:
    params = load_params(check_components=False)
    if Path(params.data.root).resolve() != OUTPUT.resolve():
        OUTPUT.mkdir(parents=True, exist_ok=True)
        (OUTPUT / NOTE).write_text(f"The demo data is generated only when data.root is {OUTPUT}; it is {params.data.root}.\n")
        print(f"demo_data: not generated (data.root is {params.data.root}, not {OUTPUT})")
        return
    from pipeline.datasets.demo.generator import generate

    start = time.perf_counter()
    labels = generate(OUTPUT, params.demo)
    print(f"demo_data: {len(labels)} clips in {OUTPUT} ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
