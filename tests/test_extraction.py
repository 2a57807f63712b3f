"""Filling stores clip by clip: failures recorded with reasons, incremental re-runs."""
import numpy as np
import skimage.data

from pipeline.extraction import AudioClipProcessor, ClipJob, ExtractorClipProcessor, FaceClipProcessor, fill_store
from pipeline.store import FeatureStore


def face_frame(i: int) -> np.ndarray:
    """The astronaut photograph, cropped around her face, drifting by a pixel per frame."""
    image = skimage.data.astronaut()
    return np.ascontiguousarray(image[20 + i % 5 : 276 + i % 5, 100:356])


def face_processor(root, identity):
    return FaceClipProcessor(str(root), identity, fps=5, min_detection_confidence=0.5, crop_size=112, gray_size=64, detector="auto")


def test_faces_store_keeps_faceless_frames_masked_and_reports_faceless_clips(tmp_path, clip_factory):
    face = clip_factory("face.mp4", seconds=1.0, size=256, frame=face_frame)
    blank = clip_factory("blank.mp4", seconds=1.0, size=256)
    half = clip_factory("half.mp4", seconds=1.0, size=256, frame=lambda i: face_frame(i) if i < 12 else np.zeros((256, 256, 3), np.uint8))
    store = FeatureStore(tmp_path / "faces")
    jobs = [ClipJob("face", str(face)), ClipJob("blank", str(blank)), ClipJob("half", str(half))]
    results, failures = fill_store(store, jobs, face_processor(store.root, {"v": 1}), {"v": 1}, "faces", workers=1)
    assert store.clip_ids() == ["blank", "face", "half"]
    entry = store.read("face")
    assert entry.arrays["crop_rgb"].shape == (5, 112, 112, 3)
    assert entry.arrays["crop_gray"].shape == (5, 64, 64)
    assert entry.arrays["landmarks"].shape == (5, 478, 3)
    np.testing.assert_allclose(entry.timestamps, [0, 0.2, 0.4, 0.6, 0.8], atol=1e-6)
    assert entry.mask.all() and (entry.arrays["score"] > 0.5).all()
    half_mask = store.read("half").mask
    assert len(half_mask) == 5 and half_mask[:2].all() and not half_mask[3:].any()  # kept, masked
    assert not store.read("blank").mask.any()
    assert [(f["clip_id"], "no face detected" in f["reason"]) for f in failures] == [("blank", True)]

    # A second run with the same config redoes nothing and keeps the failure note.
    again, failures_again = fill_store(store, jobs, face_processor(store.root, {"v": 1}), {"v": 1}, "faces", workers=1)
    assert again == [] and failures_again == failures
    # A changed config redoes every clip; a clip removed from the dataset leaves the store.
    redone, _ = fill_store(store, jobs[:2], face_processor(store.root, {"v": 2}), {"v": 2}, "faces", workers=1)
    assert sorted(r.clip_id for r in redone) == ["blank", "face"]
    assert store.clip_ids() == ["blank", "face"]


def test_audio_store_records_clips_it_cannot_decode(tmp_path, clip_factory):
    good = clip_factory("good.mp4", seconds=1.0)
    silent = clip_factory("silent.mp4", seconds=1.0, audio=False)
    store = FeatureStore(tmp_path / "audio")
    processor = AudioClipProcessor(str(store.root), {"sr": 16000}, 16000)
    jobs = [ClipJob("good", str(good)), ClipJob("silent", str(silent))]
    _, failures = fill_store(store, jobs, processor, {"sr": 16000}, "audio", workers=1)
    assert store.clip_ids() == ["good"]
    assert store.read("good").attrs["sample_rate"] == 16000
    assert failures[0]["clip_id"] == "silent" and "no audio stream" in failures[0]["reason"]


def test_extractor_entries_record_provenance_and_run_in_a_process_pool(tmp_path, clip_factory):
    audio = FeatureStore(tmp_path / "audio")
    jobs = [ClipJob(f"c{i}", str(clip_factory(f"c{i}.mp4", seconds=0.5))) for i in range(3)]
    fill_store(audio, jobs, AudioClipProcessor(str(audio.root), {}, 16000), {}, "audio", workers=1)
    out = FeatureStore(tmp_path / "logmel")
    processor = ExtractorClipProcessor(str(audio.root), str(out.root), "logmel", {"n_mels": 40}, "cpu", 8)
    identity = processor.extractor().identity()
    results, failures = fill_store(out, jobs, processor, identity, "extract@logmel", workers=2)
    assert sorted(r.clip_id for r in results) == ["c0", "c1", "c2"] and failures == []
    entry = out.read("c1")
    assert entry.arrays["data"].shape[1] == 40
    assert entry.attrs["extractor"] == "logmel"
    assert entry.attrs["config_hash"] == FeatureStore(out.root).attrs("c0")["config_hash"]


def truncated_copy(source, target, fraction: float):
    """``source`` remuxed with its index at the start (faststart), cut to ``fraction`` of its bytes:
    the header still declares the whole duration, the payload holds only its start."""
    import av

    with av.open(str(source)) as src, av.open(str(target) + ".full.mp4", "w", options={"movflags": "faststart"}) as out:
        streams = {stream.index: out.add_stream_from_template(stream) for stream in src.streams}
        for packet in src.demux():
            if packet.dts is None:
                continue
            packet.stream = streams[packet.stream.index]
            out.mux(packet)
    data = open(str(target) + ".full.mp4", "rb").read()
    with open(target, "wb") as handle:
        handle.write(data[: int(len(data) * fraction)])
    return target


def test_a_partial_decode_gets_a_failures_row_with_both_durations_and_its_features_are_kept(tmp_path, clip_factory):
    full = clip_factory("full.mp4", seconds=3.0, size=256, frame=face_frame)
    cut = truncated_copy(full, tmp_path / "cut.mp4", 0.5)
    jobs = [ClipJob("full", str(full), 3.0), ClipJob("cut", str(cut), 3.0)]
    faces = FeatureStore(tmp_path / "faces")
    _, failures = fill_store(faces, jobs, face_processor(faces.root, {"v": 1}), {"v": 1}, "faces", min_decoded_fraction=0.9)
    assert faces.clip_ids() == ["cut", "full"]  # the cut clip's frames are kept
    assert 0 < len(faces.read("cut").timestamps) < len(faces.read("full").timestamps) == 15
    [row] = failures
    assert row["clip_id"] == "cut" and row["stage"] == "faces"
    decoded = float(faces.attrs("cut")["decoded_s"])
    assert decoded < 1.5 and f"partial decode: {decoded:.2f} s decoded of the 3.00 s the file declares" in row["reason"]
    assert abs(float(faces.attrs("full")["decoded_s"]) - 3.0) < 0.25

    audio = FeatureStore(tmp_path / "audio")
    _, failures = fill_store(audio, jobs, AudioClipProcessor(str(audio.root), {"sr": 16000}, 16000), {"sr": 16000}, "audio",
                             min_decoded_fraction=0.9)
    assert audio.clip_ids() == ["cut", "full"]
    assert [(f["clip_id"], "of the 3.00 s the file declares" in f["reason"]) for f in failures] == [("cut", True)]
    # The row comes from the entry, so a run that redoes nothing reports it again.
    again, failures_again = fill_store(audio, jobs, AudioClipProcessor(str(audio.root), {"sr": 16000}, 16000), {"sr": 16000},
                                       "audio", min_decoded_fraction=0.9)
    assert again == [] and failures_again == failures


def test_a_full_disk_stops_the_stage_with_what_to_do_and_keeps_what_was_written(tmp_path, clip_factory, monkeypatch):
    import errno

    import pytest

    from pipeline.extraction import StageFailed

    jobs = [ClipJob(f"c{i}", str(clip_factory(f"c{i}.mp4", seconds=0.5))) for i in range(4)]
    store = FeatureStore(tmp_path / "audio")
    real_write = FeatureStore.write
    written = []

    def fill_up(self, clip_id, *args, **kwargs):
        if len(written) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(clip_id)
        return real_write(self, clip_id, *args, **kwargs)

    monkeypatch.setattr(FeatureStore, "write", fill_up)
    with pytest.raises(StageFailed, match="audio: no space left on the device holding .*run the stage again"):
        fill_store(store, jobs, AudioClipProcessor(str(store.root), {}, 16000), {}, "audio")
    monkeypatch.undo()
    assert sorted(p.stem for p in store.entries_dir.glob("*.h5")) == written == ["c0", "c1"]
    redone, failures = fill_store(store, jobs, AudioClipProcessor(str(store.root), {}, 16000), {}, "audio")
    assert sorted(r.clip_id for r in redone) == ["c2", "c3"] and failures == []  # the first two were kept
    assert store.clip_ids() == ["c0", "c1", "c2", "c3"]
