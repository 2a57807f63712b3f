"""Finding and loading user-supplied PyTorch checkpoints (never downloading them).

Backbones whose weights no PyPI package ships (torchvision's ImageNet and Kinetics models,
VGGFace2 networks) are read either from a path given in params or from torch's hub cache
(``$TORCH_HOME/hub/checkpoints``, i.e. ``torch.hub.get_dir()/checkpoints``), where
``torchvision.models.*(weights=...)`` would have saved them on a machine with internet.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch
from torch import nn


def hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def locate_checkpoint(configured: str, standard_urls: Iterable[str], what: str) -> Path:
    """The checkpoint file to load: ``configured`` if set, else the first of the standard
    file names (the basenames of ``standard_urls``) present in torch's hub cache.

    A missing file is a FileNotFoundError that names every path looked at and where to put it.
    """
    if configured:
        path = Path(configured).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{what}: checkpoint {path} does not exist (options.checkpoint)")
        return path
    urls = list(standard_urls)
    candidates = [hub_checkpoint_dir() / url.rsplit("/", 1)[-1] for url in urls]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"{what}: no checkpoint found (looked at {looked}). This pipeline never downloads weights: "
        f"download {urls[0]} on a machine with internet and put it at {candidates[0]} "
        f"(TORCH_HOME moves that folder), or set options.checkpoint to a local .pth file."
    )


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state_dict from a checkpoint saved as a plain state_dict or wrapped in a dict under
    'state_dict' or 'model' (how VGGFace2 and training scripts often save them), with the
    'module.' prefix of DataParallel models removed."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
            break
    if not isinstance(checkpoint, dict) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise ValueError(f"{path}: not a state_dict (nor a dict holding one under 'state_dict' or 'model')")
    return {key.removeprefix("module."): value for key, value in checkpoint.items()}


def load_backbone_weights(model: nn.Module, path: Path, dropped_prefixes: tuple[str, ...]) -> None:
    """Load ``path`` into ``model``, ignoring the checkpoint's tensors under ``dropped_prefixes``
    (its classifier, whose size depends on the training classes); every other tensor of the
    model must be in the checkpoint with the same shape."""
    state = {k: v for k, v in read_state_dict(path).items() if not k.startswith(dropped_prefixes)}
    expected = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(model.state_dict()))
    mismatched = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or mismatched:
        raise ValueError(
            f"{path}: checkpoint does not fit the {type(model).__name__} backbone: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}, "
            f"wrong shape {mismatched[:5]}"
        )
    model.load_state_dict(state, strict=False)
