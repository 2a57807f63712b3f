"""Stage late_fusion: weighted combination of the members' out-of-fold score matrices."""
import json

from pipeline.config import load_params
from pipeline.fusion.late import late_fusion, late_fusion_continuous
from pipeline.results import LATE_FUSION_DIR, read_scores


def main() -> None:
    params = load_params(check_components=False)
    config = params.late_fusion
    members = {name: read_scores(name) for name in config.members}
    if params.task == "continuous":
        scores, weights, per_fold = late_fusion_continuous(members, params.continuous.dimensions, config.method, config.grid_step)
    else:
        scores, weights, per_fold = late_fusion(members, params.data.labels, config.method, config.grid_step)
    LATE_FUSION_DIR.mkdir(parents=True, exist_ok=True)
    scores.to_parquet(LATE_FUSION_DIR / "scores.parquet", index=False)
    (LATE_FUSION_DIR / "weights.json").write_text(json.dumps({"method": config.method, "weights": weights, "per_fold": per_fold}, indent=2))
    print(f"late_fusion ({config.method}): weights {weights}")


if __name__ == "__main__":
    main()
