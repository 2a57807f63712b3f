from pipeline.store import failure_kind, summarise_failures


def test_failures_are_summarised_one_line_per_cause_most_frequent_first():
    rows = [{"clip_id": f"c{i}", "stage": "faces", "reason": f"data/c{i}.wav: no video stream"} for i in range(5)]
    rows += [{"clip_id": "d1", "stage": "faces", "reason": "data/d1.mp4: decoded 1.2 s of 3.0 s declared"},
             {"clip_id": "d2", "stage": "faces", "reason": "data/d2.mp4: decoded 0.4 s of 2.5 s declared"},
             {"clip_id": "e", "stage": "faces", "reason": "no face detected"}]
    assert summarise_failures(rows, examples=2) == [
        "  5 clips: no video stream (e.g. c0, c1 and 3 more)",
        "  2 clips: decoded 1.2 s of 3.0 s declared (e.g. d1, d2)",
        "  1 clip: no face detected (e.g. e)",
    ]
    assert failure_kind("x/a.mp4: decoded 1.2 s of 3 s") == "decoded N s of N s"
    tagged = summarise_failures(rows[:2], tag=lambda row: "kept" if row["clip_id"] == "c0" else "left out")
    assert sorted(tagged) == ["  kept 1 clip: no video stream (e.g. c0)", "  left out 1 clip: no video stream (e.g. c1)"]
