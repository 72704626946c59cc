"""File I/O shared by every layer: one atomic write, content digests, JSON/JSONL readers.

Every write goes to a temporary sibling first and is renamed into place, so a crash never leaves a
half-written file under the final name. Readers name the file (and line) of whatever is wrong.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from hicom.core.errors import ConfigError


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], mode: int = 0o644) -> Path:
    """Call write(tmp) on a fresh temporary sibling of path (same suffix), then rename it onto path.

    The file gets `mode` (mkstemp's 0o600 would leak into every output otherwise).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes, mode: int = 0o644) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data), mode)


def atomic_write_text(path: str | os.PathLike, text: str, mode: int = 0o644) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), mode)


def atomic_write_json(path: str | os.PathLike, data: Any, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=indent) + "\n")


def atomic_write_dir(out_dir: str | os.PathLike, fill: Callable[[Path], None], mode: int = 0o755) -> Path:
    """fill(tmp_dir) builds a directory beside out_dir, which then replaces out_dir whole.

    An existing out_dir is removed only once the new one is in place under its name. The folder gets `mode`
    (mkdtemp's 0o700 would keep a teammate's web server or reader out of every artifact folder).
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        os.chmod(tmp, mode)
        fill(tmp)
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def portable_path(path: str | os.PathLike) -> str:
    """path relative to the working directory when it lies under it (a DVC stage runs at the checkout's root),
    else absolute: an output that records where its inputs were then holds no checkout's location, so two clones
    that compute the same thing write the same bytes (dvc.lock, and every stage after it, stays the same)."""
    resolved = Path(path).resolve()
    try:
        return resolved.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(resolved)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


# (resolved path, stat signature) -> sha256 hex; per process, so forked loader workers inherit it.
_digests: dict[tuple, str] = {}
_digests_lock = threading.Lock()


def file_digest(path: str | os.PathLike) -> str:
    """sha256 hex of a video file's bytes, or of a frame directory's sorted file names and bytes.

    A directory covers its top-level regular files (what read_video can read) and ignores
    subdirectories. The result is memoised on the resolved path and the stat (device, inode,
    size, mtime_ns, ctime_ns) of the file or of every file in the directory, so a large video is
    hashed once per process rather than once per epoch, and any rewrite or replacement re-hashes.
    """
    path = Path(path)
    try:
        resolved = path.resolve(strict=True)
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, "no such video file or frame directory", str(path)) from None
    if resolved.is_dir():
        files = sorted((entry.name, entry.stat()) for entry in os.scandir(resolved) if entry.is_file())
        signature = tuple((name, _stat_signature(st)) for name, st in files)
    else:
        signature = _stat_signature(resolved.stat())
    memo_key = (str(resolved), signature)
    with _digests_lock:
        digest = _digests.get(memo_key)
    if digest is None:
        digest = _hash_path(resolved)
        with _digests_lock:
            _digests[memo_key] = digest
    return digest


def _stat_signature(st: os.stat_result) -> tuple[int, ...]:
    # The inode catches a file replaced by rename; ctime cannot be set back by the user like mtime.
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _hash_path(path: Path) -> str:
    """The uncached hash behind file_digest; names are length-prefixed so no two directory layouts collide."""
    if not path.is_dir():
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    hasher = hashlib.sha256(b"frame-directory\0")
    for name in sorted(entry.name for entry in os.scandir(path) if entry.is_file()):
        encoded = os.fsencode(name)
        hasher.update(len(encoded).to_bytes(8, "little") + encoded)
        with open(path / name, "rb") as fh:
            hasher.update(hashlib.file_digest(fh, "sha256").digest())
    return hasher.hexdigest()


def read_json_object(path: str | os.PathLike, error: type[Exception] = ConfigError, label: str = "") -> dict:
    """A JSON object from a file; a missing file, bad JSON or another JSON type is an error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{label}{path}: no such file")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{label}{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise error(f"{label}{path}: expected a JSON object, got {type(data).__name__}")
    return data


def read_yaml(path: str | os.PathLike, error: type[Exception] = ConfigError, what: str = "file") -> Any:
    """Parsed YAML from a file; a missing file or bad YAML is an error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: {what} not found")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML: {exc}") from None


def iter_jsonl(path: str | os.PathLike, error: type[Exception] = ConfigError) -> Iterator[tuple[int, Any]]:
    """(line number, value) for each non-blank line; a malformed line is an error naming file:line."""
    path = Path(path)
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                raise error(f"{path}:{lineno}: malformed JSON line: {exc.msg}") from None
