"""Stage extract@<name>: run the extractor ``extractors.<name>`` over its input store."""
import sys

from pipeline.config import load_params
from pipeline.datasets.manifest import CLIPS, read_manifest
from pipeline.extraction import ExtractorClipProcessor, fill_store, jobs_from_manifest
from pipeline.store import FeatureStore


def main(name: str) -> None:
    params = load_params()
    if name not in params.extractors:
        raise SystemExit(f"extract: no extractor {name!r} in params.yaml; defined: {sorted(params.extractors)}")
    spec = params.extractors[name]
    input_store = FeatureStore(f"features/{spec.input}")
    available = set(input_store.clip_ids())
    jobs = [job for job in jobs_from_manifest(read_manifest(CLIPS)) if job.clip_id in available]
    processor = ExtractorClipProcessor(str(input_store.root), f"features/{name}", spec.type, spec.options, spec.device, spec.batch_size)
    extractor = processor.extractor()
    print(f"extract@{name}: {spec.type} on {extractor.device}; weights {extractor.weights_origin or 'none'}")
    results, failures = fill_store(
        FeatureStore(f"features/{name}"), jobs, processor, extractor.identity(), f"extract@{name}", spec.workers,
        executor=spec.executor, num_gpus=spec.num_gpus,
    )
    print(f"extract@{name}: {len(results)} clips extracted, {len(jobs) - len(results)} up to date, {len(failures)} skipped")
    for failure in failures:
        print(f"  {failure['clip_id']}: {failure['reason']}")


if __name__ == "__main__":
    main(sys.argv[1])
