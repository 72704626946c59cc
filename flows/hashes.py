"""Content hashes of deps and outs, and a stage's cache key built from them."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from flows.errors import PipelineError
from flows.settings import get_key
from flows.stages import Stage
from hicom.core.files import sha256_file


class ContentHashes:
    """sha256 of files and directory trees, remembered within one pipeline run until a stage rewrites them."""

    def __init__(self, root: Path):
        self.root = root
        self._known: dict[str, str] = {}

    def get(self, path: str) -> str | None:
        """None when the path does not exist."""
        if path not in self._known:
            target = self.root / path
            if target.is_file():
                self._known[path] = sha256_file(target)
            elif target.is_dir():
                tree = hashlib.sha256()
                for file in sorted(p for p in target.rglob("*") if p.is_file() and not is_bytecode(p)):
                    tree.update(f"{file.relative_to(target).as_posix()}\0{sha256_file(file)}\n".encode())
                self._known[path] = f"{tree.hexdigest()}.dir"
            else:
                return None
        return self._known[path]

    def forget(self, paths) -> None:
        for path in paths:
            for known in [k for k in self._known if k == path or k.startswith(path + "/") or path.startswith(k + "/")]:
                del self._known[known]


def is_bytecode(path: Path) -> bool:
    """Python's bytecode cache, written when code is imported: ignored here as in .dvcignore."""
    return path.suffix == ".pyc" or "__pycache__" in path.parts


def fingerprint(stage: Stage, params: dict, hashes: ContentHashes) -> str:
    """The stage's cache key: its command, its params slice, and the content of every dep (data and code).

    The same inputs DVC keys a stage on; the code version is the content of the code deps dvc.yaml lists,
    which flows/code_deps.py derives from what the stage's command imports (hashed, like DVC, without bytecode).
    """
    deps = {}
    for dep in stage.deps:
        digest = hashes.get(dep)
        if digest is None:
            raise PipelineError(f"stage {stage.name!r}: dependency {dep} does not exist (no earlier stage made it "
                                "and it is not in the project)")
        deps[dep] = digest
    material = {"module": stage.module, "argv": stage.argv, "nproc_per_node": stage.nproc_per_node,
                "params": {k: get_key(params, k, f"stage {stage.name!r} params") for k in stage.params},
                "deps": deps}
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()

