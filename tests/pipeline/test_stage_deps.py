"""dvc.yaml's code deps cannot drift from the code: every mer_core module a stage's
command runs must be covered by that stage's deps.

What a command runs, read from the source: every module its function and cli.py's helpers
import, those modules' module-level imports transitively, and the imports made lazily
inside each library function or class the command calls (a lazy import is how a module
loads something only on the path that needs it, so only the callers of that path count).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

# The entry point holds no logic; config.py only types the params, whose values DVC
# tracks per stage through `params:`; the package's __init__ holds only the base error.
# Declaring them would re-run every stage whenever any command or section changes shape.
NOT_DEPS = {"mer_core/cli.py", "mer_core/config.py", "mer_core/__init__.py"}


def _module_file(module: str) -> Path | None:
    base = REPO / Path(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def _parse(module: str) -> ast.Module:
    return ast.parse(_module_file(module).read_text())


def _imported(nodes, package: str) -> dict[str, str]:
    """Local name → what it names (`mer_core.x` for a module, `mer_core.x:f` for an object)
    for the mer_core imports among `nodes`."""
    names = {}
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {(a.asname or a.name): a.name for a in node.names if a.name.startswith("mer_core")}
        elif isinstance(node, ast.ImportFrom) and node.module:
            parts = package.split(".")
            base = node.module if not node.level else ".".join(parts[: len(parts) - node.level + 1] + [node.module])
            if not base.startswith("mer_core"):
                continue
            for a in node.names:
                full = f"{base}.{a.name}"
                names[a.asname or a.name] = full if _module_file(full) else f"{base}:{a.name}"
    return names


def _module_of(target: str) -> str:
    return target.split(":")[0]


def module_closure(modules: set[str]) -> set[str]:
    """Modules reached from `modules` by module-level imports (parent packages included)."""
    seen, todo = set(), list(modules)
    while todo:
        module = todo.pop()
        if module in seen or _module_file(module) is None:
            continue
        seen.add(module)
        parts = module.split(".")
        todo += [".".join(parts[:k]) for k in range(1, len(parts))]  # importing a.b.c runs a and a.b
        package = module if _module_file(module).name == "__init__.py" else module.rpartition(".")[0]
        top = [n for n in _parse(module).body if isinstance(n, ast.Import | ast.ImportFrom)]
        todo += [_module_of(t) for t in _imported(top, package).values()]
    return seen


def _lazy_imports_of(module: str, name: str) -> set[str]:
    """Modules imported inside `module.name` (a function or class) and inside the functions
    and classes of the same module that it refers to."""
    tree = _parse(module)
    package = module if _module_file(module).name == "__init__.py" else module.rpartition(".")[0]
    defs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)}
    found, todo, done = set(), [name], set()
    while todo:
        current = todo.pop()
        if current in done or current not in defs:
            continue
        done.add(current)
        inner = [n for n in ast.walk(defs[current]) if isinstance(n, ast.Import | ast.ImportFrom)]
        found |= {_module_of(t) for t in _imported(inner, package).values()}
        todo += [n.id for n in ast.walk(defs[current]) if isinstance(n, ast.Name) and n.id in defs]
    return found


def command_modules(command: str) -> set[str]:
    """Every mer_core module `mer <command>` runs (see the module docstring)."""
    tree = _parse("mer_core.cli")
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    name = next(n for n, f in functions.items() for d in f.decorator_list
                if isinstance(d, ast.Call) and getattr(d.func, "attr", "") == "command"
                and ((d.args and d.args[0].value == command) or (not d.args and n == command)))
    module_level = _imported([n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)], "mer_core")
    targets, todo, done = dict(module_level), [name], set()
    used: set[tuple[str, str]] = set()  # (local name, attribute) the command's code refers to
    while todo:  # the command and the cli.py helpers it calls
        current = todo.pop()
        if current in done:
            continue
        done.add(current)
        body = functions[current]
        targets |= _imported([n for n in ast.walk(body) if isinstance(n, ast.Import | ast.ImportFrom)], "mer_core")
        used |= {(n.id, "") for n in ast.walk(body) if isinstance(n, ast.Name)}
        used |= {(n.value.id, n.attr) for n in ast.walk(body)
                 if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)}
        # cli.py helpers it calls (a local variable may share a command's name: `report`)
        todo += [n.func.id for n in ast.walk(body)
                 if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in functions]
    modules = {_module_of(t) for t in targets.values()}
    for local, attribute in used:
        target = targets.get(local)
        if target is None:
            continue
        if ":" in target:  # `from mer_core.x import f`, then f(...)
            modules |= _lazy_imports_of(*target.split(":"))
        elif attribute:  # `from mer_core.data import ingest as ingestion`, then ingestion.f(...)
            modules |= _lazy_imports_of(target, attribute)
    return module_closure(modules)


def stage_deps() -> dict[str, tuple[str, list[str]]]:
    """stage → (command, deps) from dvc.yaml, with `${paths.*}` filled in from params.yaml."""
    paths = yaml.safe_load((REPO / "params.yaml").read_text())["paths"]
    text = re.sub(r"\$\{paths\.(\w+)\}", lambda m: str(paths[m.group(1)]), (REPO / "dvc.yaml").read_text())
    stages = yaml.safe_load(text)["stages"]
    return {name: (stage["cmd"].split()[1], stage.get("deps", [])) for name, stage in stages.items()}


def _code_files(modules: set[str]) -> list[str]:
    files = (str(_module_file(m).relative_to(REPO)) for m in modules)
    return sorted(f for f in files if f not in NOT_DEPS and (REPO / f).stat().st_size > 0)


STAGES = stage_deps()


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_module_a_stage_runs_is_one_of_its_deps(stage):
    command, deps = STAGES[stage]
    uncovered = [f for f in _code_files(command_modules(command))
                 if not any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps)]
    assert not uncovered, f"stage {stage!r} (`mer {command}`) runs {uncovered}, which its deps in dvc.yaml miss"


def test_the_walk_follows_lazy_imports_of_what_a_command_calls():
    pretrain = set(_code_files(command_modules("pretrain")))
    # imported inside cli.pretrain; the store and the encoders through it at module level
    assert {"mer_core/training/pretrain.py", "mer_core/data/store.py", "mer_core/models/encoders.py"} <= pretrain
    # register_model loads the final model through inference lazily; log_pretraining does not
    assert "mer_core/inference.py" in _code_files(command_modules("register"))
    assert "mer_core/inference.py" not in pretrain
