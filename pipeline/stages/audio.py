"""Stage audio: decode every clip's audio track to mono at the configured sample rate."""
from pipeline.config import load_params
from pipeline.datasets.manifest import CLIPS, read_manifest
from pipeline.extraction import AudioClipProcessor, fill_store, jobs_from_manifest
from pipeline.store import FeatureStore

STORE = "features/audio"


def main() -> None:
    params = load_params()
    manifest = read_manifest(CLIPS)
    identity = {"stage": "audio", "sample_rate": params.audio.sample_rate}
    processor = AudioClipProcessor(STORE, identity, params.audio.sample_rate)
    no_audio = [
        {"clip_id": r.clip_id, "stage": "audio", "reason": f"{r.path}: no audio stream"}
        for r in manifest[~manifest["has_audio"]].itertuples()
    ]
    results, failures = fill_store(
        FeatureStore(STORE), jobs_from_manifest(manifest, "has_audio"), processor, identity, "audio", params.audio.workers,
        executor=params.audio.executor, known_failures=no_audio,
    )
    print(f"audio: {len(results)} clips decoded, {len(failures)} without usable audio")
    for failure in failures:
        print(f"  {failure['clip_id']}: {failure['reason']}")


if __name__ == "__main__":
    main()
