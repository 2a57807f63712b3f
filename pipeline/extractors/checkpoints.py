"""Loading user-supplied PyTorch checkpoints (found by :mod:`pipeline.extractors.weights`,
never downloaded). Only tensors are loaded (``weights_only=True``): a file that holds
pickled code is refused."""
from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch
from torch import nn


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state_dict from a checkpoint saved as a plain state_dict or wrapped in a dict under
    'state_dict' or 'model' (how VGGFace2 and training scripts often save them), with the
    'module.' prefix of DataParallel models removed."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's message advises weights_only=False, which would run whatever code the file
        # holds; no option here does that.
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        what = f"it refers to {found.group(1)}" if found else "it is not a plain tensor file"
        raise ValueError(
            f"{path}: the checkpoint holds pickled Python objects (code), not only tensors ({what}), and will not be "
            f"loaded. Save the weights as a plain state_dict (torch.save(model.state_dict(), path)) and point the "
            f"option at that file."
        ) from None
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
