"""What a rerun does with a stage's outputs, and one writer at a time.

- A stage interrupted under the flow resumes under the flow: when the last run of the same command (same
  cache key: command, params slice, code and data hashes) did not finish and its outputs hold a complete
  training checkpoint, they are kept and the command resumes from it. So are outputs that hold a completed
  training stage's final state (it deletes its checkpoints then): the flow was stopped after the stage
  completed and before it saw it end, and the command finds the stage done.
- A changed command starts clean, but outputs holding either are moved aside (outputs/.flow/aside/)
  rather than deleted, until the new run completes; going back to the command set aside restores them.
- A stage's outputs have one writer: a lock file (outputs/.flow/locks/) held with flock by the flow and
  inherited by the stage's processes, recording owner PID, host and the command's cache key. While any
  process of an earlier run still holds it, the stage refuses to start, naming that process.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from flows.errors import PipelineError
from flows.stages import Stage
from hicom.train.checkpoints import has_training_state

STATE_DIR = "outputs/.flow"


def _slug(stage: Stage) -> str:
    """One name per set of outputs (a variant's stage writes elsewhere, so it gets its own)."""
    digest = hashlib.sha256("\0".join(stage.outs).encode()).hexdigest()[:10]
    return f"{stage.name.replace('@', '_')}-{digest}"


@dataclass
class Claim:
    """A held stage lock: `fd` goes to the stage's processes; `previous` is what the last owner recorded."""

    fd: int
    path: Path
    record: dict
    previous: dict = field(default_factory=dict)

    def finished(self) -> None:
        self.record["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        _write(self.fd, self.record)


def _write(fd: int, record: dict) -> None:
    data = json.dumps(record, indent=1).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.fsync(fd)


def _read(path: Path) -> dict:
    try:
        record = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


@contextlib.contextmanager
def claim(root: Path, stage: Stage, key: str | None) -> Iterator[Claim]:
    """Hold `stage`'s lock for the block; a PipelineError naming the owner while another process holds it."""
    path = root / STATE_DIR / "locks" / f"{_slug(stage)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read(path)
            raise PipelineError(
                f"stage {stage.name!r}: a process of an earlier run still writes its outputs (owner pid "
                f"{owner.get('pid', '?')} on host {owner.get('host', '?')}, started {owner.get('started', '?')}; "
                f"lock {path}); stop that run, or wait for it to end, then rerun") from None
        previous = _read(path)
        record = {"stage": stage.name, "outs": list(stage.outs), "key": key, "pid": os.getpid(),
                  "host": socket.gethostname(), "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "finished": None}
        _write(fd, record)
        yield Claim(fd, path, record, previous)
    finally:
        os.close(fd)


def prepare_outs(root: Path, stage: Stage, held: Claim, log) -> None:
    """Before a first attempt: keep, restore, set aside or clear the stage's outputs (see the module doc)."""
    key = held.record["key"]
    outs = [out for out in stage.outs if out not in stage.persist]
    previous = held.previous
    if previous.get("key") == key and not previous.get("finished") and \
            any(has_training_state(root / out) for out in outs):
        log.info(f"{stage.name}: the last run of this command was interrupted; its outputs and checkpoints (or final "
                 f"state) are kept and it resumes from them")
        return
    aside = root / STATE_DIR / "aside" / _slug(stage)
    aside_key = _read(aside / "aside.json").get("key")
    if aside.is_dir() and aside_key == key:
        for out in outs:
            _remove(root / out)
            if (aside / out).exists():
                (root / out).parent.mkdir(parents=True, exist_ok=True)
                os.replace(aside / out, root / out)
        shutil.rmtree(aside)
        log.info(f"{stage.name}: back to the command whose outputs were set aside: restored, it resumes from them")
        return
    kept = [out for out in outs if has_training_state(root / out)]
    if kept:
        _remove(aside)
        for out in kept:
            (aside / out).parent.mkdir(parents=True, exist_ok=True)
            os.replace(root / out, aside / out)
        (aside / "aside.json").write_text(json.dumps({"key": previous.get("key"), "outs": kept}))
        log.info(f"{stage.name}: the command changed; the earlier outputs with checkpoints ({', '.join(kept)}) are "
                 f"kept in {aside} until this run completes")
    for out in outs:  # as `dvc repro` does: never resume over outputs of other inputs
        _remove(root / out)


def drop_aside(root: Path, stage: Stage) -> None:
    """The new run completed: the outputs set aside for it are no longer needed."""
    _remove(root / STATE_DIR / "aside" / _slug(stage))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
