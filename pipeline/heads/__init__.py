"""Heads: what a branch trains on one feature store.

Two kinds, kept apart. Neural heads (:mod:`pipeline.heads.neural`, subclasses of
``TemporalHead``) are torch modules trained by the fold loop inside the model, so a
cross-modal fusion can combine them. Pooled heads (:mod:`pipeline.heads.pooled`, subclasses of
``PooledHead``) are classical estimators fit on each clip's pooled statistics. Every head
class declares what it can do, and params validation checks the combinations
(:func:`capabilities`):

- ``neural``: trained inside the model (a cross-modal fusion can hold it);
- ``per_step``: has a per-step output (``encode``), which sequence fusions and the continuous
  task need;
- ``raw_input``: reads its features as stored (pixels for a fine-tuned CNN), so neither the
  per-fold nor the per-speaker standardisation may touch them;
- ``seeded``: what it learns depends on the training seed, so a seed ensemble
  (``branches.<name>.seeds``) averages different models (a linear SVM does not).

Adding one: a subclass of either base with a ``Config`` dataclass, decorated with
``@HEADS.register("name")``, in a module imported below.
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.registry import Registry

HEADS: Registry[type] = Registry("head")


@dataclass(frozen=True)
class Capabilities:
    neural: bool
    per_step: bool
    raw_input: bool
    seeded: bool


def capabilities(name: str) -> Capabilities:
    cls = HEADS.get(name)
    return Capabilities(bool(cls.neural), bool(cls.per_step), bool(cls.raw_input), bool(cls.seeded))


def heads_with(**wanted: bool) -> list[str]:
    """Names of the heads whose capabilities match ``wanted`` (for error messages)."""
    return [n for n in HEADS.names() if all(getattr(capabilities(n), k) == v for k, v in wanted.items())]


# Importing the modules registers their heads.
from pipeline.heads import neural, pooled, spectrogram_cnn  # noqa: E402,F401
from pipeline.heads import finetune  # noqa: E402,F401
