"""Stage faces: detect, landmark and align faces on sampled frames of every video, link them
into tracks, and write the per-clip detection report (features/faces/report.csv)."""
from pipeline.config import load_params
from pipeline.extraction import StageFailed, extract_faces, read_clips
from pipeline.extraction import write_faces_report as write_report  # noqa: F401  (the report, for callers of this module)

STORE = "features/faces"


def main() -> None:
    # The faces stage builds no registry component; skipping their validation (done by the
    # manifest stage before it, and by each extract/train stage) spares it importing torch.
    params = load_params(check_components=False)
    try:
        extract_faces(params.faces, read_clips(), STORE)
    except StageFailed as error:
        raise SystemExit(str(error)) from None


if __name__ == "__main__":
    main()
