"""dvc.yaml's ``deps`` of every stage cover every project module the stage can import, so a
code change re-runs each stage it can affect: the import closure of each stage module inside
pipeline/ is derived from the sources (every import statement, those inside functions too,
since lazy imports run as well).

One exception keeps the closure honest rather than everything: the registries that
``load_params`` imports to validate component options (``_validate_components``: heads,
fusions, extractors) are followed only when some module of the stage calls ``load_params``
with that validation on; stages that pass ``check_components=False`` never import them for it.
"""
from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "pipeline"


def module_file(module: str) -> Path | None:
    """The source file of a project module (a package's __init__.py), None if there is none."""
    base = REPO.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


# The functions of pipeline.config that import registries to validate component options:
# followed only for a stage that calls them (load_params with its validation on, or
# validate_extractors directly).
VALIDATION = ("pipeline.config", ("_validate_components", "_validate_capabilities", "validate_extractors", "_check_faces_keys",
                                   "_check_augmentations",
                                   "validate_task_choices", "_check_task_choices"))
# What each public validation function runs (load_params with its checks on runs them all).
RUNS = {"validate_extractors": {"validate_extractors", "_check_faces_keys", "_check_augmentations"},
        "validate_task_choices": {"validate_task_choices", "_check_task_choices"}}


@lru_cache(maxsize=None)
def parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def _nodes(tree: ast.AST, skipped_functions: tuple[str, ...]) -> list[ast.AST]:
    """Every node of ``tree`` except those inside the functions named ``skipped_functions``."""
    nodes, todo = [], [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in skipped_functions:
            continue
        nodes.append(node)
        todo.extend(ast.iter_child_nodes(node))
    return nodes


def validation_called(path: Path) -> frozenset[str]:
    """The validation functions of pipeline.config the file calls: load_params without
    check_components=False runs them all, validate_extractors and validate_task_choices
    only themselves."""
    called = set()
    for node in ast.walk(parsed(path)):
        name = getattr(node.func, "id", getattr(node.func, "attr", None)) if isinstance(node, ast.Call) else None
        if name in RUNS:
            called.update(RUNS[name])
        elif name == "load_params":
            off = any(k.arg == "check_components" and isinstance(k.value, ast.Constant) and k.value.value is False for k in node.keywords)
            if not off:
                called.update(VALIDATION[1])
    return frozenset(called)


@lru_cache(maxsize=None)
def imported_modules(path: Path, module: str, followed: frozenset[str] = frozenset(VALIDATION[1])) -> set[str]:
    """Project modules named by the import statements of one source file (in pipeline.config,
    only the validation functions in ``followed``)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    skipped = tuple(set(VALIDATION[1]) - followed) if module == VALIDATION[0] else ()
    found = set()
    for node in _nodes(parsed(path), skipped):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the file's package
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            found.add(source)
            # `from package import submodule` imports the submodule too.
            found.update(f"{source}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] == PACKAGE and module_file(name) is not None}


def _closure(module: str, followed: frozenset[str]) -> set[Path]:
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages run first
        path = module_file(name)
        if path is not None:
            todo.extend(imported_modules(path, name, followed) - seen)
    return {path for path in (module_file(name) for name in seen) if path is not None}


def import_closure(module: str) -> set[Path]:
    """Every project source file importing ``module`` can execute, parent packages included;
    empty files (package markers) are left out: they hold nothing a change could affect."""
    followed: frozenset[str] = frozenset()
    while True:  # a validation function reached may import modules that call another one
        files = _closure(module, followed)
        wanted = frozenset().union(*(validation_called(path) for path in files if path != module_file(VALIDATION[0])))
        if wanted <= followed:
            break
        followed |= wanted
    return {path.relative_to(REPO) for path in files if path.read_text().strip()}


def stage_definitions() -> dict[str, dict]:
    """dvc.yaml's stages, a foreach stage as its ``do`` block (its deps do not depend on the item
    for project code)."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {name: stage.get("do", stage) for name, stage in stages.items()}


def stage_module(command: str) -> str:
    words = command.split()
    assert words[:2] == ["python", "-m"], f"stage command {command!r} is not `python -m <module>`"
    return words[2]


def covered(path: Path, deps: list[str]) -> bool:
    return any(path == Path(dep) or Path(dep) in path.parents for dep in deps)


@pytest.mark.parametrize("name", sorted(stage_definitions()))
def test_stage_deps_cover_the_modules_it_imports(name):
    stage = stage_definitions()[name]
    deps = [str(dep) for dep in stage.get("deps", [])]
    missing = sorted(str(path) for path in import_closure(stage_module(stage["cmd"])) if not covered(path, deps))
    assert not missing, f"dvc.yaml stage {name!r} imports {missing} but does not list them (or a folder holding them) in deps"


def test_the_closure_follows_lazy_and_package_imports():
    closure = import_closure("pipeline.stages.extract")
    # Module-level and from-package imports, and imports made inside functions.
    assert Path("pipeline/config.py") in closure
    assert Path("pipeline/store/__init__.py") in closure and Path("pipeline/store/lineage.py") in closure
    assert Path("pipeline/extractors/face_cnn.py") in closure  # registered by the package's __init__
    assert Path("pipeline/extractors/mini_xception.py") in closure  # imported where the model is built
    assert Path("pipeline/stages/__init__.py") not in closure  # empty
    # The extract stage validates its own extractors only: the heads are not in its closure,
    # while the train stage's full validation imports every registry.
    assert Path("pipeline/heads/__init__.py") not in closure
    assert {Path("pipeline/extractors/face_cnn.py"), Path("pipeline/heads/__init__.py")} <= import_closure("pipeline.stages.train")
