"""Comparing two output directories byte for byte, as the flow's cache keys (flows/hashes.py) and dvc.lock see them."""
from pathlib import Path


def files_that_differ(a: Path, b: Path) -> list[str]:
    """Relative paths of the files that are in only one of the two trees or whose bytes differ; [] when alike."""
    def files(root: Path) -> dict[str, bytes]:
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}

    first, second = files(a), files(b)
    return sorted(name for name in first.keys() | second.keys() if first.get(name) != second.get(name))
