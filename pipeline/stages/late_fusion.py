"""Stage late_fusion: combine the members' out-of-fold score matrices."""
from pipeline.config import load_params, validate_task_choices
from pipeline.fusion.late import fuse_members
from pipeline.results import LATE_FUSION_DIR


def main() -> None:
    params = load_params(check_components=False)
    validate_task_choices(params)
    result = fuse_members(params)
    result.save(LATE_FUSION_DIR)
    print(f"late_fusion ({params.late_fusion.method}): weights {result.weights}")


if __name__ == "__main__":
    main()
