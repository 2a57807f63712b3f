"""Name -> class registries for extractors, heads and fusions.

A new component is one class with a nested ``Config`` dataclass plus one decorator line;
params.yaml then refers to it by name and its options are validated against ``Config``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T", bound=type)


@dataclass(frozen=True)
class NoOptions:
    """Config of a component without options."""


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._classes: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(cls: T) -> T:
            if name in self._classes:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            cls.registry_name = name
            if not hasattr(cls, "Config"):
                cls.Config = NoOptions
            self._classes[name] = cls
            return cls

        return add

    def get(self, name: str) -> T:
        try:
            return self._classes[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; available: {self.names()}") from None

    def names(self) -> list[str]:
        return sorted(self._classes)

    def config(self, name: str, options: dict[str, Any], where: str, name_key: str | None = None) -> Any:
        """Validate ``options`` against the class's ``Config`` (a ParamsError names ``where``);
        an unknown ``name`` is reported under ``name_key`` (the key that holds the name, e.g.
        ``extractors.fer.type``), or ``where`` when not given."""
        from pipeline.config import ParamsError, from_dict

        try:
            cls = self.get(name)
        except KeyError as error:
            raise ParamsError(f"{name_key or where}: {error.args[0]}") from None
        return from_dict(cls.Config, options, where)
