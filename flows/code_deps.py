"""Stage code deps derived from imports, so a change to any file a stage's command can import reruns it.

A stage's code is every file of its package the command can import: what `python -m PACKAGE` executes on
start-up (PACKAGE/__main__.py and PACKAGE/cli.py with what they import, the modules they reach counted with
what runs when they are imported), and everything the command's own module imports, at module or function
level, followed through the package.
Importing `a.b.c` runs a/__init__.py and a/b/__init__.py too, so they count. The static reading cannot see
`importlib` calls on computed names; the package has none.

dvc.yaml keeps the result as each stage's code deps: the fewest folders and files that cover those files
without covering others (a folder when all its files are needed). `python -m flows deps --write` rewrites
them in place (other deps, comments and layout untouched); `--check` fails when they differ.
"""
from __future__ import annotations

import ast
import shlex
from dataclasses import dataclass
from pathlib import Path

import yaml

from flows.errors import PipelineError
from flows.hashes import is_bytecode
from hicom.core.files import atomic_write_text


def command_module(root: Path, package: str, command: str) -> Path:
    """The module that defines `command`: PACKAGE/commands/<command>.py where it has one, else PACKAGE/cli.py."""
    own = root / package / "commands" / f"{command.replace('-', '_')}.py"
    return own if own.is_file() else root / package / "cli.py"


def imported_files(starts: list[Path], root: Path, package: str, function_level: bool = True) -> set[Path]:
    """`starts` and every PACKAGE file they can import, transitively. The starts run, so the imports inside
    their functions count; so they do in each module a running module imports, unless function_level is
    False. A package that merely encloses a module, and what it imports, count with what runs on import."""
    run: set[Path] = set()
    imported: set[Path] = set()
    todo = [(start, True) for start in starts]
    todo += [(init, False) for start in starts for init in _module_files(_module_name(start, root), root)[:-1]]
    while todo:
        path, runs = todo.pop()
        if path in run or (not runs and path in imported):
            continue
        (run if runs else imported).add(path)
        tree = ast.parse(path.read_text(), filename=str(path))
        for name in _imported_names(tree, _module_name(path, root), path.name == "__init__.py", runs):
            if name == package or name.startswith(package + "."):
                *enclosing, target = _module_files(name, root) or [None]
                todo += [(init, False) for init in enclosing]
                if target is not None:
                    todo.append((target, function_level and runs))
    return run | imported


def stage_code_files(root: Path, package: str, command: str) -> set[Path]:
    """The PACKAGE files `python -m PACKAGE COMMAND ...` can import (see the module docstring)."""
    launcher = [p for p in (root / package / "__main__.py", root / package / "cli.py") if p.is_file()]
    startup = imported_files(launcher, root, package, function_level=False)
    return startup | imported_files([command_module(root, package, command)], root, package)


def covering_paths(files: set[Path], root: Path, package: str) -> list[str]:
    """The fewest project-relative folders and files that cover `files` and nothing else of the package."""
    def cover(directory: Path) -> list[Path]:
        if all(f in files for f in _source_files(directory)):
            return [directory]
        paths: list[Path] = []
        for child in sorted(directory.iterdir()):
            if child.is_dir() and _source_files(child):
                paths.extend(cover(child))
            elif child.is_file() and child in files:
                paths.append(child)
        return paths

    return [p.relative_to(root).as_posix() for p in cover(root / package)]


def _source_files(directory: Path) -> list[Path]:
    """The files DVC hashes for a folder dep (bytecode is in .dvcignore)."""
    return [p for p in directory.rglob("*") if p.is_file() and not is_bytecode(p)]


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_names(tree: ast.Module, module: str, is_package: bool, function_level: bool) -> list[str]:
    """Absolute names of the modules an import statement may load: for `from a import b`, `a` and `a.b`
    (b may be a submodule); relative imports resolved against `module`."""
    names: list[str] = []
    for node in _import_nodes(tree, function_level):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            anchor = module.split(".")
            anchor = anchor[:len(anchor) - node.level + (1 if is_package else 0)]
            base = ".".join(anchor + ([base] if base else []))
        names.append(base)
        names.extend(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return names


def _import_nodes(tree: ast.Module, function_level: bool):
    """Import statements, skipping `if TYPE_CHECKING:` blocks (never run) and, unless function_level,
    function bodies (they run only when called)."""
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)
        elif function_level or not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            todo.extend(ast.iter_child_nodes(node))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _module_files(name: str, root: Path) -> list[Path]:
    """The files importing `name` runs: each enclosing package's __init__.py, then the module itself;
    nothing when `name` is not a module (an attribute imported with `from`)."""
    parts = name.split(".")
    module = root.joinpath(*parts)
    target = module / "__init__.py" if (module / "__init__.py").is_file() else module.with_suffix(".py")
    if not target.is_file():
        return []
    packages = [root.joinpath(*parts[:i], "__init__.py") for i in range(1, len(parts))]
    return [p for p in packages if p.is_file()] + [target]


# -- dvc.yaml ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StageCode:
    """One dvc.yaml stage's code deps: as listed, as derived, and the files its command can import."""

    name: str
    package: str
    listed: tuple[str, ...]
    derived: tuple[str, ...]
    files: frozenset[str]

    @property
    def uncovered(self) -> list[str]:
        """Files the command can import that no listed dep covers (a change to them would not rerun it)."""
        return sorted(f for f in self.files if not any(f == d or f.startswith(d + "/") for d in self.listed))


def _is_code_dep(dep, package: str) -> bool:
    return isinstance(dep, str) and (dep == package or dep.startswith(package + "/"))


def _stage_definitions(dvc_yaml: Path) -> dict[str, dict]:
    """dvc.yaml's stages as written (a `foreach` stage's `do:` body stands for all its instances)."""
    stages = (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages") or {}
    return {name: spec.get("do", spec) for name, spec in stages.items()}


def _module_and_command(stage: str, cmd: str) -> tuple[str, str]:
    """`M` and `COMMAND` of `... -m M COMMAND ...`, read before DVC fills in ${...} (not needed here)."""
    tokens = shlex.split(cmd)
    if "-m" not in tokens or len(tokens) < tokens.index("-m") + 3:
        raise PipelineError(f"dvc.yaml stage {stage!r}: no `-m MODULE COMMAND` in its cmd: {cmd}")
    m = tokens.index("-m")
    return tokens[m + 1], tokens[m + 2]


def stage_code(root: Path) -> list[StageCode]:
    """Every dvc.yaml stage whose command runs a package of the project, with its code deps."""
    result = []
    for name, spec in _stage_definitions(root / "dvc.yaml").items():
        module, command = _module_and_command(name, spec["cmd"])
        package = module.split(".")[0]
        if not (root / package / "__main__.py").is_file():
            continue
        files = stage_code_files(root, package, command)
        listed = tuple(d for d in spec.get("deps") or () if _is_code_dep(d, package))
        result.append(StageCode(name=name, package=package, listed=listed,
                                derived=tuple(covering_paths(files, root, package)),
                                files=frozenset(f.relative_to(root).as_posix() for f in files)))
    return result


def write_code_deps(root: Path, stages: list[StageCode]) -> list[str]:
    """Replace each stage's listed code deps in dvc.yaml by the derived ones, editing only those lines
    (the derived list takes the place of the first listed code dep, or follows the other deps). Returns
    the names of the stages changed."""
    path = root / "dvc.yaml"
    lines = path.read_text().splitlines(keepends=True)
    deps_nodes = _deps_nodes(path)
    edits = []  # (first line, end line, replacement lines), applied bottom-up
    for stage in stages:
        if set(stage.listed) == set(stage.derived):
            continue
        node = deps_nodes.get(stage.name)
        if node is None or not node.value:
            raise PipelineError(f"dvc.yaml stage {stage.name!r}: no deps list to write its code deps into")
        first_item = lines[node.value[0].start_mark.line]
        indent = first_item[:len(first_item) - len(first_item.lstrip(" -"))]
        code_items = [item for item in node.value if _is_code_dep(getattr(item, "value", None), stage.package)]
        new_lines = [f"{indent}{dep}\n" for dep in stage.derived]
        at = code_items[0].start_mark.line if code_items else node.value[-1].end_mark.line + (
            0 if node.value[-1].end_mark.column == 0 else 1)
        for item in code_items:
            edits.append((item.start_mark.line, item.start_mark.line + 1, []))
        edits.append((at, at, new_lines))
    for start, end, new in sorted(edits, key=lambda e: (e[0], len(e[2]) == 0), reverse=True):
        lines[start:end] = new
    if edits:
        atomic_write_text(path, "".join(lines))
    return [s.name for s in stages if set(s.listed) != set(s.derived)]


def _deps_nodes(path: Path) -> dict[str, yaml.SequenceNode]:
    """Each stage's `deps:` sequence node (line positions of its items), from dvc.yaml as written."""
    def get(mapping, key):
        if isinstance(mapping, yaml.MappingNode):
            return next((v for k, v in mapping.value if k.value == key), None)
        return None

    stages = get(yaml.compose(path.read_text()), "stages")
    nodes = {}
    for key, spec in stages.value if stages is not None else ():
        body = get(spec, "do") or spec
        deps = get(body, "deps")
        if isinstance(deps, yaml.SequenceNode):
            nodes[key.value] = deps
    return nodes
