"""The bad-media corpus, through the real stages: every file a user might drop into a corpus
(truncated, garbage, empty, one stream missing or broken, odd frame rates, sizes, lengths,
sample rates and channel layouts, a non-ASCII name, a symlink, two files with one stem) ends
either as a usable clip (in the manifest, its features in the stores, scored by the models)
or as a failures row naming the file and the reason, never lost.

The corpus is generated here: eight demo clips (four speakers, two classes) give training
something to learn and the broken variants their faces and voices."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.datasets.demo.generator import generate
from pipeline.datasets.demo.spec import DemoSpec
from pipeline.devtools import copy_project, run, tiny_experiment_params
from pipeline.store import FeatureStore

REPO = Path(__file__).resolve().parents[2]
FPS = 25
RATE = 16000


def read_clip(path: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """RGB frames and mono float32 audio of a demo clip."""
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    with av.open(str(path)) as container:
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
    return frames, audio.astype(np.float32)


def encode(
    path: Path,
    frames: list[np.ndarray] | None,
    audio: np.ndarray | None,
    *,
    fps: int = FPS,
    sample_rate: int = RATE,
    layout: str = "mono",
    pts_ms: list[int] | None = None,
    options: dict[str, str] | None = None,
    format: str | None = None,
    codecs: tuple[str, str] = ("libx264", "aac"),
) -> Path:
    """Write frames (libx264) and/or audio (AAC; PCM for .wav) to ``path``. ``audio`` is
    [samples] or [channels, samples]; ``pts_ms`` gives each frame's time in ms (variable
    frame rate)."""
    with av.open(str(path), "w", format=format, options=options or {}) as container:
        if frames is not None:
            video = container.add_stream(codecs[0], rate=fps, options={"preset": "ultrafast", "threads": "1"})
            video.height, video.width = frames[0].shape[:2]
            video.pix_fmt = "yuv420p"
            if pts_ms is not None:
                video.time_base = Fraction(1, 1000)
        if audio is not None:
            sound = container.add_stream("pcm_s16le" if path.suffix == ".wav" else codecs[1], rate=sample_rate, layout=layout)
        if frames is not None:
            for index, image in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                if pts_ms is not None:
                    frame.pts, frame.time_base = pts_ms[index], Fraction(1, 1000)
                container.mux(video.encode(frame))
            container.mux(video.encode(None))
        if audio is not None:
            channels = audio.reshape(-1, audio.shape[-1]).astype(np.float32)
            for start in range(0, channels.shape[1], 1024):
                piece = channels[:, start : start + 1024]
                if path.suffix == ".wav":
                    data = (np.clip(piece, -1, 1).T.reshape(1, -1) * 32767).astype(np.int16)
                    frame = av.AudioFrame.from_ndarray(data, format="s16", layout=layout)
                else:
                    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(piece), format="fltp", layout=layout)
                frame.sample_rate, frame.pts, frame.time_base = sample_rate, start, Fraction(1, sample_rate)
                container.mux(sound.encode(frame))
            container.mux(sound.encode(None))
    return path


def with_garbage_audio_track(path: Path, frames: list[np.ndarray], seconds: float) -> Path:
    """A good video stream next to an AAC stream whose packets are random bytes."""
    rng = np.random.default_rng(1)
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=FPS, options={"preset": "ultrafast", "threads": "1"})
        video.height, video.width = frames[0].shape[:2]
        video.pix_fmt = "yuv420p"
        sound = container.add_stream("aac", rate=RATE, layout="mono")
        for image in frames:
            container.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(video.encode(None))
        silence = av.AudioFrame.from_ndarray(np.zeros((1, int(seconds * RATE)), np.float32), format="flt", layout="mono")
        silence.sample_rate, silence.pts = RATE, 0
        for packet in list(sound.encode(silence)) + list(sound.encode(None)):
            junk = av.Packet(rng.integers(0, 256, max(packet.size, 32), dtype=np.uint8).tobytes())
            junk.stream, junk.pts, junk.dts, junk.time_base = sound, packet.pts, packet.dts, packet.time_base
            container.mux(junk)
    return path


def surround(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """5.1 at ``sample_rate``: the voice at full scale on every channel but the LFE, the
    worst case for a downmix (every coefficient adds up)."""
    voice = np.interp(np.arange(int(len(audio) * sample_rate / RATE)) * RATE / sample_rate, np.arange(len(audio)), audio)
    voice = 0.99 * voice / np.abs(voice).max()
    return np.stack([voice, voice, voice, 0.1 * voice, voice, voice]).astype(np.float32)


def make_corpus(root: Path, outside: Path) -> pd.DataFrame:
    """The corpus under ``root`` and its labels.csv rows (clip_id, path, audio_path, label,
    speaker); ``outside`` holds the symlink's target."""
    generate(root / "demo", DemoSpec(identities=4, emotions=["happy", "sad"], takes=1, min_duration_s=1.2,
                                     max_duration_s=1.6, size=128, bad_clips=False))
    demo = pd.read_csv(root / "demo/labels.csv")
    rows = [{"path": f"demo/{r.file}", "label": r.label, "speaker": r.speaker} for r in demo.itertuples()]
    frames, audio = read_clip(root / "demo" / demo.loc[0, "file"])  # spk00, happy
    other_frames, other_audio = read_clip(root / "demo" / demo.loc[3, "file"])  # spk01, sad
    three_s = (frames * 3)[: 3 * FPS]
    three_s_audio = np.tile(audio, 3)[: 3 * RATE]
    bad = root / "bad"
    bad.mkdir()

    def add(name: str, label: str, speaker: str, audio_path: str = "", clip_id: str = "") -> None:
        rows.append({"clip_id": clip_id, "path": f"bad/{name}", "audio_path": audio_path, "label": label, "speaker": speaker})

    # Cut at 30 % with the index (moov) first: the header promises 3 s, ~1 s decodes.
    whole = encode(bad / "whole_faststart.mp4", three_s, three_s_audio, options={"movflags": "+faststart"}).read_bytes()
    (bad / "whole_faststart.mp4").unlink()
    (bad / "truncated_index_first.mp4").write_bytes(whole[: int(0.3 * len(whole))])
    add("truncated_index_first.mp4", "happy", "spk00")
    # Cut at 70 % with the index last: the index is gone.
    whole = encode(bad / "whole.mp4", three_s, three_s_audio).read_bytes()
    (bad / "whole.mp4").unlink()
    (bad / "truncated_index_last.mp4").write_bytes(whole[: int(0.7 * len(whole))])
    add("truncated_index_last.mp4", "happy", "spk01")
    (bad / "random_bytes.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 40_000, dtype=np.uint8).tobytes())
    add("random_bytes.mp4", "sad", "spk02")
    (bad / "zero_bytes.mp4").write_bytes(b"")
    add("zero_bytes.mp4", "sad", "spk03")
    encode(bad / "audio_only.m4a", None, audio)
    add("audio_only.m4a", "happy", "spk00")
    encode(bad / "video_only.mp4", frames, None)
    add("video_only.mp4", "happy", "spk00")
    # A good video whose separate audio file (as CREMA-D ships them) is garbage.
    encode(bad / "good_video_bad_wav.mp4", other_frames, None)
    (bad / "bad_audio.wav").write_bytes(b"RIFF" + np.random.default_rng(2).integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    add("good_video_bad_wav.mp4", "sad", "spk01", audio_path="bad/bad_audio.wav")
    with_garbage_audio_track(bad / "garbage_audio_track.mkv", other_frames, len(other_audio) / RATE)
    add("garbage_audio_track.mkv", "sad", "spk01")
    # Variable frame rate: 20-80 ms between frames.
    gaps = np.random.default_rng(3).integers(20, 81, len(frames))
    encode(bad / "variable_frame_rate.mkv", frames, audio, pts_ms=[0] + list(np.cumsum(gaps[:-1]).astype(int)))
    add("variable_frame_rate.mkv", "happy", "spk00")
    encode(bad / "one_frame.mp4", frames[:1], audio[: RATE // FPS])
    add("one_frame.mp4", "happy", "spk00")
    encode(bad / "short_0.2s.mp4", other_frames[:5], other_audio[: RATE // 5])
    add("short_0.2s.mp4", "sad", "spk01")
    encode(bad / "uhd_4k.mp4", [cv2.resize(f, (3840, 2160)) for f in other_frames[:FPS]], other_audio[:RATE], fps=FPS)
    add("uhd_4k.mp4", "sad", "spk01")
    # Three minutes, at 64 px and 10 frames per second to stay cheap.
    small = [cv2.resize(f, (64, 64)) for f in frames]
    encode(bad / "three_minutes.mp4", (small * 200)[: 180 * 10], np.tile(audio, 130)[: 180 * RATE], fps=10)
    add("three_minutes.mp4", "happy", "spk00")
    low = np.interp(np.arange(len(other_audio) // 2) * 2.0, np.arange(len(other_audio)), other_audio)
    encode(bad / "mono_8khz.mp4", other_frames, low, sample_rate=8000)
    add("mono_8khz.mp4", "sad", "spk01")
    encode(bad / "surround_48khz.mp4", frames, surround(audio, 48000), sample_rate=48000, layout="5.1")
    add("surround_48khz.mp4", "happy", "spk00")
    encode(bad / "émotion_日本語.mp4", other_frames, other_audio)
    add("émotion_日本語.mp4", "sad", "spk01")
    outside.mkdir(parents=True, exist_ok=True)
    encode(outside / "linked_target.mp4", frames, audio)
    (bad / "symlink.mp4").symlink_to(outside / "linked_target.mp4")
    add("symlink.mp4", "happy", "spk00")
    # Two files with one stem: given clip ids here (without them the manifest stops, below).
    encode(bad / "same_stem.mkv", frames, audio, format="matroska")
    add("same_stem.mkv", "happy", "spk00", clip_id="same_stem_mkv")
    encode(bad / "same_stem.webm", other_frames, other_audio, codecs=("libvpx", "libopus"))
    add("same_stem.webm", "sad", "spk01", clip_id="same_stem_webm")
    table = pd.DataFrame(rows).fillna("")
    table["clip_id"] = [c or Path(p).stem for c, p in zip(table["clip_id"], table["path"])]
    table[["clip_id", "path", "audio_path", "label", "speaker"]].to_csv(root / "labels.csv", index=False)
    return table


def tiny_params(corpus: Path) -> dict:
    """The repository's params with a cheap experiment on the corpus: face geometry and a
    coarse log-Mel, stats heads, two epochs, two speaker folds."""
    return tiny_experiment_params(REPO, corpus, dataset="csv", folds=2)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    base = tmp_path_factory.mktemp("bad_media")
    return base / "corpus", make_corpus(base / "corpus", base / "elsewhere")


@pytest.fixture(scope="module")
def project(tmp_path_factory, corpus) -> Path:
    root = copy_project(REPO, tmp_path_factory.mktemp("bad_media_project"))
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params(corpus[0]), sort_keys=False, allow_unicode=True))
    (root / "repro.log").write_text(run(["dvc", "repro", "evaluate"], root))
    return root


LEFT_OUT = {  # nothing in them decodes: a manifest failures row each, with the reason
    "truncated_index_last": "cannot open container",
    "random_bytes": "cannot open container",
    "zero_bytes": "file is empty (0 bytes)",
}


def failures_of(project: Path) -> pd.DataFrame:
    return pd.read_csv(project / "reports/failures.csv", dtype=str, keep_default_na=False)


def scored(project: Path, member: str) -> set[str]:
    return set(pd.read_parquet(project / member / "scores.parquet")["clip_id"])


def test_every_file_ends_scored_or_as_a_failure_with_its_reason(corpus, project):
    root, table = corpus
    final = scored(project, "models/late_fusion")
    failures = failures_of(project)
    assert (failures["reason"] != "").all() and (failures["stage"] != "").all()
    reported = set(failures["clip_id"])
    lost = set(table["clip_id"]) - final - reported
    assert not lost, f"clips neither scored nor reported: {sorted(lost)}"
    assert set(table["clip_id"]) - final == set(LEFT_OUT)
    for clip_id, problem in LEFT_OUT.items():
        [row] = failures[failures["clip_id"] == clip_id].to_dict("records")
        assert row["stage"] == "manifest" and problem in row["reason"]
        assert row["reason"].startswith(str(root / "bad" / f"{clip_id}.mp4"))
    metrics = json.loads((project / "reports/metrics.json").read_text())["models"]
    assert metrics["late_fusion"]["clips"] == len(table) - len(LEFT_OUT)


def test_a_broken_or_missing_stream_keeps_the_other(corpus, project):
    root, _ = corpus
    manifest = pd.read_parquet(project / "data/manifest.parquet").set_index("clip_id")
    failures = failures_of(project)
    face, voice = scored(project, "models/branches/face"), scored(project, "models/branches/voice")

    def reasons(clip_id: str, stage: str) -> list[str]:
        return failures.query("clip_id == @clip_id and stage == @stage")["reason"].tolist()

    for clip_id, broken in [("good_video_bad_wav", root / "bad/bad_audio.wav"), ("garbage_audio_track", root / "bad/garbage_audio_track.mkv")]:
        assert manifest.loc[clip_id, ["has_video", "has_audio"]].tolist() == [True, False]
        [reason] = reasons(clip_id, "manifest")
        assert reason.startswith(str(broken)) and reason.endswith("(the clip is used with its video only)")
        assert clip_id in face and clip_id not in voice
    assert "audio stream does not decode" in reasons("garbage_audio_track", "manifest")[0]
    assert manifest.loc["audio_only", ["has_video", "has_audio"]].tolist() == [False, True]
    assert reasons("audio_only", "faces") == [f"{root / 'bad/audio_only.m4a'}: no video stream"]
    assert "audio_only" in voice and "audio_only" not in face
    assert manifest.loc["video_only", ["has_video", "has_audio"]].tolist() == [True, False]
    assert reasons("video_only", "audio") == [f"{root / 'bad/video_only.mp4'}: no audio stream"]
    assert "video_only" in face and "video_only" not in voice


def test_odd_but_valid_files_are_extracted_whole(corpus, project):
    manifest = pd.read_parquet(project / "data/manifest.parquet").set_index("clip_id")
    faces, audio, geometry, logmel = (FeatureStore(project / "features" / name) for name in ("faces", "audio", "geometry", "logmel"))
    ordinary = ["variable_frame_rate", "one_frame", "short_0.2s", "uhd_4k", "three_minutes", "mono_8khz",
                "surround_48khz", "émotion_日本語", "symlink", "same_stem_mkv", "same_stem_webm"]
    for clip_id in ordinary:
        assert manifest.loc[clip_id, ["has_video", "has_audio"]].tolist() == [True, True], clip_id
        for store in (faces, audio, geometry, logmel):
            assert clip_id in store.clip_ids(), (clip_id, store.root)
    assert manifest.loc["three_minutes", "duration_s"] == pytest.approx(180.0, abs=0.1)
    assert manifest.loc["one_frame", "duration_s"] == pytest.approx(1 / FPS, abs=0.01)
    assert manifest.loc["short_0.2s", "duration_s"] == pytest.approx(0.2, abs=0.03)
    # Every sampled frame at 2 fps: the long clip whole, the 4K frames aligned like any other.
    long_faces = faces.read("three_minutes", ["timestamps", "mask"])
    assert len(long_faces.timestamps) == 360 and long_faces.timestamps[-1] == pytest.approx(179.5, abs=0.1)
    # (params.yaml stores the gray crop only since faces.crop_rgb; the 4K frame is aligned like any other)
    uhd = faces.read("uhd_4k", ["crop_gray", "mask"])
    assert uhd.arrays["crop_gray"].shape[1:] == (64, 64) and uhd.mask.sum() > 0
    assert faces.read("one_frame", ["mask"]).mask.tolist() == [1]
    # Variable frame rate: sampling follows the true presentation times.
    vfr = faces.read("variable_frame_rate", ["timestamps"]).timestamps
    assert np.all(np.diff(vfr) >= 0.5 - 0.08) and vfr[-1] <= 1.96
    samples = {c: audio.read(c, ["samples"]).arrays["samples"] for c in ("three_minutes", "mono_8khz", "surround_48khz")}
    assert len(samples["three_minutes"]) == pytest.approx(180 * RATE, abs=RATE // 10)
    assert len(samples["mono_8khz"]) == pytest.approx(manifest.loc["mono_8khz", "duration_s"] * RATE, abs=RATE // 10)
    # 5.1 at full scale on every main channel: the downmix stays within [-1, 1].
    assert np.abs(samples["surround_48khz"]).max() <= 1.0
    assert np.abs(samples["surround_48khz"]).max() > 0.9
    final = scored(project, "models/late_fusion")
    assert set(ordinary) <= final


def test_a_file_truncated_after_its_index_is_kept_with_what_decodes(corpus, project):
    manifest = pd.read_parquet(project / "data/manifest.parquet").set_index("clip_id")
    assert manifest.loc["truncated_index_first", "duration_s"] == pytest.approx(3.0, abs=0.05)  # the header's claim
    frames = FeatureStore(project / "features/faces").read("truncated_index_first", ["timestamps"]).timestamps
    assert 0 < frames[-1] < 1.5  # ~30 % of 3 s decodes
    assert "truncated_index_first" in scored(project, "models/branches/face")
    # Kept with what decodes, and said so: each stream's row gives the declared and the decoded duration.
    rows = failures_of(project).query("clip_id == 'truncated_index_first'")
    for stage in ("faces", "audio"):
        [reason] = rows[rows["stage"] == stage]["reason"].tolist()
        assert "partial decode" in reason and "of the 3.00 s the file declares" in reason, reason
        decoded = float(reason.split("partial decode: ")[1].split(" s decoded")[0])
        assert 0 < decoded < 1.5


def test_two_files_with_one_stem_stop_the_manifest_naming_both(corpus, tmp_path):
    """Without clip ids, ``same_stem.mkv`` and ``same_stem.webm`` are one id: the real
    manifest stage stops and names both files."""
    root, table = corpus
    same = table[table["clip_id"].str.startswith("same_stem")].assign(clip_id="")
    same = pd.concat([same, table[table["clip_id"] == "spk02_sad_t0"]])
    same.to_csv(root / "same_stems.csv", index=False)
    params = tiny_params(root)
    params["data"]["options"] = {"table": "same_stems.csv"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
    result = subprocess.run([sys.executable, "-m", "pipeline.stages.manifest"], cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode != 0
    assert f"duplicate clip ids: same_stem ({root / 'bad/same_stem.mkv'} and {root / 'bad/same_stem.webm'})" in result.stderr
    assert not (tmp_path / "data/manifest.parquet").exists()
