"""Typed, validated view of params.yaml.

Every stage calls :func:`load_params` first, so a typo or a wrong type in params.yaml is
reported (with its dotted key) before any decoding or training starts.
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from pipeline.datasets.demo.spec import DemoSpec


class ParamsError(ValueError):
    """params.yaml does not match the schema; the message names the dotted key."""


def from_dict(cls: type, data: Any, where: str) -> Any:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and wrong types."""
    at = f"{where}: " if where else ""  # the top level: the file name comes in front
    if not isinstance(data, dict):
        raise ParamsError(f"{at}expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ParamsError(f"{at}unknown key(s) {unknown}; allowed: {sorted(known)}")
    values = {}
    for name, f in known.items():
        key = f"{where}.{name}" if where else name
        if name in data:
            values[name] = _coerce(hints[name], data[name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ParamsError(f"{key}: missing required key")
    try:
        return cls(**values)
    except ParamsError as error:  # from the class's own checks (__post_init__): put its key in front
        message = str(error)
        raise ParamsError(message if not where or message.startswith(where) else f"{where}.{message}") from None


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(option, value, where)
            except ParamsError as error:
                errors.append(str(error))
        raise ParamsError("; ".join(errors))
    if origin is Literal:
        if value not in args:
            raise ParamsError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ParamsError(f"{where}: expected a list, got {type(value).__name__}")
        return [_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ParamsError(f"{where}: expected a mapping, got {type(value).__name__}")
        return {k: _coerce(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool):
        if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
            raise ParamsError(f"{where}: expected {hint.__name__}, got {value!r}")
        return value
    raise ParamsError(f"{where}: unsupported schema type {hint!r}")


# Where a stage's per-clip work runs: a name of the executors registry (pipeline/executors.py;
# local: worker processes on this machine, ray: Ray actors on the cluster RAY_ADDRESS names),
# checked in Params. Not part of any store's config hash: switching it re-extracts nothing.
Executor = str
# How entries are stored (not what they hold) is not part of the hash either.
EXECUTION_KEYS = ("workers", "executor", "num_gpus", "image_compression")


@dataclass(frozen=True)
class DataParams:
    dataset: str = "demo"
    root: str = "data/demo"
    options: dict[str, Any] = field(default_factory=dict)  # the adapter's Config
    labels: list[str] = field(default_factory=list)
    # Maps corpus labels onto the experiment's label set; a label mapped to "" is dropped.
    label_map: dict[str, str] = field(default_factory=dict)
    folds: int = 0  # 0: one fold per group (leave-one-speaker-out)
    # What must not straddle folds: the speaker (speaker-independent CV) or, for corpora
    # with a single speaker, the clip itself.
    group_by: Literal["speaker", "clip"] = "speaker"
    # A held-out test set (fold -1), predicted by every fold model: the corpus's official
    # split of that name (e.g. "val" for AFEW/VGAF, whose test labels are not public), and/or
    # the listed speakers (groups). Empty: out-of-fold evaluation only.
    test_split: str = ""
    test_groups: list[str] = field(default_factory=list)
    seed: int = 0
    # Clips listed (by a csv adapter's table) outside data.root, e.g. '../other/a.mp4' or an
    # absolute path. DVC tracks only data.root, so a change to such a file re-runs nothing and
    # the manifest, features and models silently describe the old file; off, they are an error.
    allow_outside_root: bool = False


@dataclass(frozen=True)
class FacesParams:
    fps: float = 5.0
    min_detection_confidence: float = 0.5
    crop_size: int = 112
    gray_size: int = 64
    detector: Literal["auto", "short", "full"] = "auto"
    # What aligns the crops: the 478-point face mesh (stored as `landmarks`, which face_geometry
    # reads), or the short-range detector's own keypoints (no mesh runs: ~2x the faces stage's
    # throughput; no `landmarks` in the store). See bench/visual_throughput.py for both.
    landmarks: Literal["mesh", "keypoints"] = "mesh"
    # The 112x112 RGB crop (key crop_rgb, ArcFace alignment) for RGB backbones
    # (torchvision_backbone, video3d). Without it the store is ~10x smaller.
    crop_rgb: bool = True
    # Also store a 224x224 RGB crop (key crop_rgb_224, ArcFace alignment) for ImageNet backbones
    # (torchvision_backbone crop: crop_rgb_224). Off by default: it takes 2.7x the space of all
    # other faces-store arrays together.
    crop_rgb_224: bool = False
    # HDF5 compression of the crop stacks. Face crops are noisy natural images: lzf made the
    # faces store only 3 % (demo) to 12 % (MEAD: 42 vs 47 MB) smaller, for ~0.7 ms per sampled
    # frame to write and ~0.3 ms to read (5-10 % of the faces stage, ~25 % of a FER
    # extraction); gzip compresses somewhat more at ~3x lzf's cost.
    image_compression: Literal["none", "lzf", "gzip"] = "none"
    # Faces kept per frame; > 1 also stores every track (tracks_* arrays) for group emotion.
    max_faces: int = 1
    # Which track is the clip's subject (the main keys): longest_largest = seen in the most
    # sampled frames, ties broken by the larger mean box.
    subject: Literal["longest_largest"] = "longest_largest"
    # Linking detections of consecutive sampled frames into tracks (pipeline/faces/track.py).
    track_min_iou: float = 0.3
    track_max_landmark_distance: float = 0.5
    track_max_gap: int = 2
    workers: int = 2
    executor: Executor = "local"
    num_gpus: float = 0.0  # per Ray actor, when the cluster has GPUs (mediapipe itself runs on CPU)
    # A video that decodes to less than this share of the duration its file declares (a
    # truncated file) gets a failures row naming both; its frames are still used.
    min_decoded_fraction: float = 0.9


@dataclass(frozen=True)
class AudioParams:
    sample_rate: int = 16000
    workers: int = 2
    executor: Executor = "local"
    min_decoded_fraction: float = 0.9  # as faces.min_decoded_fraction, for the audio track


# An augmentation's name names its copies' store (features/<extractor>/augmented/<name>).
AUGMENTATION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+_-]*")


@dataclass(frozen=True)
class AugmentationParams:
    """One entry of ``extractors.<name>.augmentations``, written compactly as
    ``{name: speed0.9, type: speed, factor: 0.9}``: ``type`` picks the class of
    pipeline/extractors/augment.py, the other keys are its options (checked against it by
    :func:`validate_extractors`)."""

    name: str
    type: str
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, value: Any, where: str) -> "AugmentationParams":
        if isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            raise ParamsError(f"{where}: expected a mapping like {{name: speed0.9, type: speed, factor: 0.9}}, got {value!r}")
        options = dict(value)
        for key in ("name", "type"):
            if not isinstance(options.get(key), str) or not options[key]:
                raise ParamsError(f"{where}.{key}: missing (or not a string); e.g. {{name: speed0.9, type: speed, factor: 0.9}}")
        name, kind = options.pop("name"), options.pop("type")
        if not AUGMENTATION_NAME.fullmatch(name):
            raise ParamsError(f"{where}.name: {name!r} may hold only letters, digits and . + _ - (it names a store folder)")
        return cls(name, kind, options)


@dataclass(frozen=True)
class ExtractorParams:
    """One entry of ``extractors``: ``type`` picks the registry class, the rest is its config."""

    type: str
    input: Literal["faces", "audio"]
    options: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 64
    device: str = "auto"
    workers: int = 1
    executor: Executor = "local"
    num_gpus: float = 0.0  # per Ray actor, when the cluster has GPUs; 0 keeps the model on CPU
    # Waveform augmentations of an audio extractor's input: each makes one copy of every clip,
    # extracted into features/<name>/augmented/<augmentation name>; only branches that list it
    # in ``augment`` train on the copies. Validated into AugmentationParams.
    augmentations: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        parsed = [AugmentationParams.parse(a, f"augmentations[{i}]") for i, a in enumerate(self.augmentations)]
        names = [a.name for a in parsed]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ParamsError(f"augmentations: name(s) {repeated} given twice")
        if parsed and self.input != "audio":
            raise ParamsError(f"augmentations: waveform augmentations need an extractor of the audio store, not input {self.input!r}")
        object.__setattr__(self, "augmentations", parsed)

    def augmentation(self, name: str) -> AugmentationParams:
        return next(a for a in self.augmentations if a.name == name)


@dataclass(frozen=True)
class HeadParams:
    type: str = "attention"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SpecAugmentParams:
    """SpecAugment-style masks (Park et al. 2019) on a neural branch's training batches: per
    clip, ``time_masks`` runs of up to ``time_width`` frames and ``freq_masks`` runs of up to
    ``freq_width`` feature dimensions set to the fold's mean frame. 0 masks: off."""

    time_masks: int = 0
    time_width: int = 20
    freq_masks: int = 0
    freq_width: int = 8

    def __post_init__(self) -> None:
        for key, value in asdict(self).items():
            if value < 0:
                raise ParamsError(f"{key}: {value} is negative")

    @property
    def active(self) -> bool:
        return (self.time_masks > 0 and self.time_width > 0) or (self.freq_masks > 0 and self.freq_width > 0)


@dataclass(frozen=True)
class BranchParams:
    features: str
    head: HeadParams = field(default_factory=HeadParams)
    # A seed ensemble: each fold trains this many models (seeds derived from train.seed, see
    # pipeline/training.py fold_seed) and its scores are their mean; 1 is a single model.
    seeds: int = 1
    # Augmented copies of the training clips this branch also trains on: names of its features
    # extractor's ``augmentations``. Never scored; the held-out fold and test split get none.
    augment: list[str] = field(default_factory=list)
    spec_augment: SpecAugmentParams = field(default_factory=SpecAugmentParams)


# Whose statistics standardise the features (pipeline/normalization.py applies them).
SPEAKER_STANDARDIZATIONS = ("none", "train-speakers", "transductive")
FEATURE_NORMALIZATIONS = ("none", "utterance")
# params.yaml before the protocols had names: a boolean switch for the transductive one.
LEGACY_SPEAKER_STANDARDIZATION = {True: "transductive", False: "none"}


def speaker_standardization_name(value: object, where: str = "train.speaker_standardization") -> str:
    """The protocol ``value`` names (true/false as written before the protocols had names)."""
    if isinstance(value, bool):
        return LEGACY_SPEAKER_STANDARDIZATION[value]
    if value not in SPEAKER_STANDARDIZATIONS:
        raise ValueError(f"{where}: {value!r} is not one of {list(SPEAKER_STANDARDIZATIONS)} "
                         "(true means transductive, false none)")
    return str(value)


@dataclass(frozen=True)
class TrainParams:
    epochs: int = 60
    patience: int = 12
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-3
    validation_fraction: float = 0.2
    class_weights: bool = True
    # Whose statistics standardise the frame features (pipeline/normalization.py): none |
    # train-speakers (per fold, the training speakers' pooled statistics, applied to every clip:
    # non-transductive) | transductive (each speaker's own, test speakers included, as in the
    # GeMAPS paper). true / false (before the protocols had names) read as transductive / none.
    speaker_standardization: str | bool = "none"
    # none | utterance: each clip's frames minus the clip's own mean, over its own std (before
    # the speaker standardisation); single-frame features (functionals) are left as they are.
    feature_normalization: Literal["none", "utterance"] = "none"
    # A training clip longer than this is cut to a random window of this many seconds each time
    # it is drawn (a validation clip to its central window), so the memory of a step follows
    # the batch, not the longest clip of the corpus; predictions read whole clips. 0: never cut.
    max_clip_s: float = 30.0
    seed: int = 0
    threads: int = 1   # torch threads per fold
    workers: int = 2   # folds trained at once

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "speaker_standardization", speaker_standardization_name(self.speaker_standardization))
        except ValueError as error:
            raise ParamsError(str(error)) from None


@dataclass(frozen=True)
class ContinuousParams:
    """``task: continuous``: per-step regression of the annotated dimensions."""

    dimensions: list[str] = field(default_factory=lambda: ["valence", "arousal"])
    rate: float = 5.0   # grid steps per second shared by every branch and the targets
    window: int = 40    # training window, in steps (the leader-follower paper used 300 frames)
    hop: int = 20


@dataclass(frozen=True)
class CrossModalParams:
    branches: list[str] = field(default_factory=list)
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    seeds: int = 1  # as branches.<name>.seeds, for the cross-modal fusion member


@dataclass(frozen=True)
class LateFusionParams:
    members: list[str] = field(default_factory=list)
    method: str = "weighted"  # a late-fusion method: weighted | stacking | mean (pipeline/fusion/late.py)
    grid_step: float = 0.1


@dataclass(frozen=True)
class Params:
    demo: DemoSpec = field(default_factory=DemoSpec)
    data: DataParams = field(default_factory=DataParams)
    faces: FacesParams = field(default_factory=FacesParams)
    audio: AudioParams = field(default_factory=AudioParams)
    extractors: dict[str, ExtractorParams] = field(default_factory=dict)
    branches: dict[str, BranchParams] = field(default_factory=dict)
    train: TrainParams = field(default_factory=TrainParams)
    task: str = "classification"  # a task: classification | continuous (pipeline/tasks)
    continuous: ContinuousParams = field(default_factory=ContinuousParams)
    fusion: str = "concat"
    cross_modal: CrossModalParams = field(default_factory=CrossModalParams)
    late_fusion: LateFusionParams = field(default_factory=LateFusionParams)

    def __post_init__(self) -> None:
        if self.task == "classification" and len(self.data.labels) < 2:
            raise ParamsError(
                f"data.labels: a classification experiment needs at least two classes, got {self.data.labels} "
                "(list the classes of the labelled clips: clips with an empty label are kept unlabeled and only "
                "predicted; for per-frame targets set task: continuous)"
            )
        _check_executors(self)
        _check_seeds(self)
        for name, branch in self.branches.items():
            if branch.features not in self.extractors:
                raise ParamsError(
                    f"branches.{name}.features: {branch.features!r} is not an extractor; "
                    f"defined extractors: {sorted(self.extractors)}"
                )
            declared = [a.name for a in self.extractors[branch.features].augmentations]
            for augmentation in branch.augment:
                if augmentation not in declared:
                    raise ParamsError(f"branches.{name}.augment: {augmentation!r} is not an augmentation of extractor "
                                      f"{branch.features!r}; declared in extractors.{branch.features}.augmentations: {declared}")
        for name in self.cross_modal.branches:
            if name not in self.branches:
                raise ParamsError(f"cross_modal.branches: {name!r} is not a branch; branches: {sorted(self.branches)}")
        for name in self.late_fusion.members:
            if name not in self.branches and name != "fusion":
                raise ParamsError(
                    f"late_fusion.members: {name!r} is neither a branch {sorted(self.branches)} nor 'fusion'"
                )


def _check_seeds(params: Params) -> None:
    counts = {f"branches.{name}.seeds": branch.seeds for name, branch in params.branches.items()}
    counts["cross_modal.seeds"] = params.cross_modal.seeds
    for key, seeds in counts.items():
        if seeds < 1:
            raise ParamsError(f"{key}: {seeds} models per fold; a member trains at least one (1: a single model, N > 1: "
                              "the mean of N models trained with different seeds)")


def _check_executors(params: Params) -> None:
    from pipeline.executors import EXECUTORS

    chosen = {"faces.executor": params.faces.executor, "audio.executor": params.audio.executor}
    chosen.update({f"extractors.{name}.executor": spec.executor for name, spec in params.extractors.items()})
    for key, name in chosen.items():
        if name not in EXECUTORS.names():
            raise ParamsError(f"{key}: unknown executor {name!r}; available: {EXECUTORS.names()}")


def load_params(path: str | Path = "params.yaml", check_components: bool = True) -> Params:
    """Read and validate params.yaml. ``check_components`` also validates every extractor,
    head and fusion option block against its registered class (which imports torch); stages
    that build no component (late fusion, evaluation) skip it, since every stage before them
    has already done it."""
    path = Path(path)
    try:
        # libyaml's loader where available: the pure-Python one takes a tenth of a second here.
        raw = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found (run from the project root)") from None
    except yaml.YAMLError as error:
        raise ParamsError(f"{path}: not valid YAML: {error}") from None
    try:
        params = from_dict(Params, raw, "")
    except ParamsError as error:
        raise ParamsError(f"{path}: {error}") from None
    from pipeline.datasets import DATASETS

    try:
        DATASETS.config(params.data.dataset, params.data.options, "data.options", "data.dataset")
    except ParamsError as error:
        raise ParamsError(f"{path}: {error}") from None
    if check_components:
        validate_task_choices(params, path)
        _validate_components(params, path)
    return params


def _check_faces_keys(name: str, spec: ExtractorParams, faces: FacesParams) -> None:
    """The extractor reads only keys the faces stage writes with these settings (e.g. the mesh,
    which ``faces.landmarks: keypoints`` does not compute)."""
    from pipeline.extractors import EXTRACTORS
    from pipeline.faces.clip import unavailable_keys

    cls = EXTRACTORS.get(spec.type)
    keys = cls.input_keys_for(spec.options) if hasattr(cls, "input_keys_for") else cls.input_keys
    missing = unavailable_keys(keys, faces.landmarks, faces.crop_rgb, faces.crop_rgb_224, faces.max_faces)
    if missing:
        key, fix = next(iter(missing.items()))
        raise ParamsError(
            f"extractors.{name}: {spec.type} reads {key!r} from the faces store, which these faces settings "
            f"do not store; needs {fix}"
        )


def validate_task_choices(params: Params, path: str | Path = "params.yaml") -> None:
    """The task and the late-fusion method name registered classes that fit together
    (torch-free: late_fusion and evaluate, which skip the component checks, call it; the
    extraction stages do not, so that no head or task code is among their deps)."""
    try:
        _check_task_choices(params)
    except ParamsError as error:
        raise ParamsError(f"{path}: {error}") from None


def _check_task_choices(params: Params) -> None:
    from pipeline.fusion.late import LATE_FUSIONS
    from pipeline.tasks import TASKS

    for where, registry, name in (("task", TASKS, params.task), ("late_fusion.method", LATE_FUSIONS, params.late_fusion.method)):
        try:
            registry.get(name)
        except KeyError as error:
            raise ParamsError(f"{where}: {error.args[0]}") from None
    if LATE_FUSIONS.get(params.late_fusion.method).class_scores and not TASKS.get(params.task).class_scores:
        raise ParamsError(f"late_fusion.method: {params.late_fusion.method!r} stacks class probabilities, which task "
                          f"{params.task!r} does not produce; use one of "
                          f"{[m for m in LATE_FUSIONS.names() if not LATE_FUSIONS.get(m).class_scores]}")


def _validate_capabilities(params: Params) -> None:
    """What each head can do (pipeline/heads: neural, per_step, raw_input) against what the
    task, the speaker standardisation and the cross-modal fusion ask of it."""
    from pipeline.fusion.cross_modal import FUSIONS
    from pipeline.heads import capabilities, heads_with
    from pipeline.tasks import TASKS

    task = TASKS.get(params.task)
    for name, branch in params.branches.items():
        head, where = capabilities(branch.head.type), f"branches.{name}.head.type"
        if branch.seeds > 1 and not head.seeded:
            raise ParamsError(f"branches.{name}.seeds: {branch.head.type!r} fits the same model whatever the seed, so "
                              f"{branch.seeds} seeds would train one model {branch.seeds} times; use seeds: 1 (heads a "
                              f"seed changes: {heads_with(seeded=True)})")
        if not head.neural and not task.pooled_heads:
            raise ParamsError(f"{where}: {branch.head.type!r} is a classical head on pooled clip statistics, which cannot learn "
                              f"task {params.task!r} (task); use a neural head: {heads_with(neural=True, per_step=True)}")
        if task.per_step and not head.per_step:
            raise ParamsError(f"{where}: {branch.head.type!r} has no per-step output, which task {params.task!r} (task) needs; "
                              f"heads with one: {heads_with(per_step=True)}")
        if head.raw_input:
            for key, value in (("speaker_standardization", params.train.speaker_standardization),
                               ("feature_normalization", params.train.feature_normalization)):
                if value != "none":
                    raise ParamsError(f"{where}: {branch.head.type!r} reads its features unnormalised (raw input), so "
                                      f"train.{key} must be none, not {value!r}")
        if branch.spec_augment.active and not head.neural:
            raise ParamsError(f"branches.{name}.spec_augment: masks apply to a neural head's training batches; {branch.head.type!r} "
                              "is fit on pooled clip statistics (use augment for it)")
        if branch.augment and not task.augmented_copies:
            raise ParamsError(f"branches.{name}.augment: task {params.task!r} (task) cannot train on augmented copies "
                              "(a speed change would move its per-step targets)")
    sequential = params.fusion in FUSIONS.names() and FUSIONS.get(params.fusion).sequential  # an unknown name is reported next
    for name in params.cross_modal.branches:
        head_type = params.branches[name].head.type
        head = capabilities(head_type)
        if not head.neural:
            raise ParamsError(
                f"cross_modal.branches: branch {name!r} uses the {head_type!r} head, which is not a "
                "neural network and cannot be trained inside a fusion; fuse its scores in late_fusion instead"
            )
        if sequential and not head.per_step:
            raise ParamsError(f"fusion: {params.fusion!r} fuses per-step sequences, but branches.{name}.head.type {head_type!r} "
                              f"(in cross_modal.branches) has no per-step output; heads with one: {heads_with(per_step=True)}")


def validate_extractors(params: Params, path: str | Path = "params.yaml") -> None:
    """Check the extractor blocks against the extractor registry (which imports no torch: the
    extract stages validate their own component this way)."""
    from pipeline.extractors import EXTRACTORS

    try:
        for name, spec in params.extractors.items():
            EXTRACTORS.config(spec.type, spec.options, f"extractors.{name}.options", f"extractors.{name}.type")
            extractor_input = EXTRACTORS.get(spec.type).input
            if extractor_input != spec.input:
                raise ParamsError(f"extractors.{name}.input: {spec.type} reads {extractor_input!r}, not {spec.input!r}")
            if spec.input == "faces":
                _check_faces_keys(name, spec, params.faces)
            _check_augmentations(name, spec)
    except ParamsError as error:
        raise ParamsError(f"{path}: {error}") from None


def _check_augmentations(name: str, spec: ExtractorParams) -> None:
    """Each waveform augmentation's type and options against pipeline/extractors/augment.py."""
    from pipeline.extractors.augment import build

    for i, augmentation in enumerate(spec.augmentations):
        build(augmentation.type, augmentation.options, f"extractors.{name}.augmentations[{i}]")


def _validate_components(params: Params, path: Path) -> None:
    """Check names against the registries and each option block against its class's config."""
    from pipeline.fusion.cross_modal import FUSIONS
    from pipeline.heads import HEADS

    validate_extractors(params, path)
    try:
        for name, branch in params.branches.items():
            HEADS.config(branch.head.type, branch.head.options, f"branches.{name}.head.options", f"branches.{name}.head.type")
        _validate_capabilities(params)
        FUSIONS.config(params.fusion, params.cross_modal.options.get(params.fusion, {}), f"cross_modal.options.{params.fusion}", "fusion")
        # The blocks of the fusions not in use too: switching `fusion` must not meet a typo.
        for fusion, options in params.cross_modal.options.items():
            FUSIONS.config(fusion, options, f"cross_modal.options.{fusion}")
    except ParamsError as error:
        raise ParamsError(f"{path}: {error}") from None
