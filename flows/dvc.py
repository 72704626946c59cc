"""DVC calls of the flow: commit and push a stage's outs, restore them, read dvc.lock and `dvc status`.

Through DVC's Repo API, the functions its `dvc commit/push/status` commands call (in-process: no
second of start-up per call). Like the commands, they resolve stages from the working directory, so
each call runs in the project (the flow runs its stages one at a time, in one thread).
"""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import yaml

from flows.stages import Stage

YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's: dvc.lock (~70 KB) in 0.03 s, not 0.17


class DvcError(RuntimeError):
    pass


def dvc_remote() -> str | None:
    """$HICOM_DVC_REMOTE names the remote to push to (e.g. the team stack's S3); None: the default remote."""
    return os.environ.get("HICOM_DVC_REMOTE") or None


def commit_outs(root: Path, stage: Stage) -> dict:
    """Record the stage's outs in dvc.lock and the DVC cache; returns the stage's dvc.lock entry. (The run pushes
    once, at its end: `push_stages`.)"""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with _quiet_dvc(), contextlib.chdir(root), Repo(str(root)) as repo:
            repo.commit(stage.name, force=True)
    except DvcException as exc:
        raise DvcError(f"stage {stage.name!r}: dvc commit failed: {exc}") from exc
    entry = lock_entry(root, stage.name)
    if entry is None:
        raise DvcError(f"stage {stage.name!r}: dvc commit left no entry in {root / 'dvc.lock'}")
    return entry


@contextlib.contextmanager
def _quiet_dvc():
    """DVC's progress lines ("Updating lock file") would repeat in the flow's log; keep its warnings."""
    dvc_logger = logging.getLogger("dvc")
    level = dvc_logger.level
    dvc_logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        dvc_logger.setLevel(level)


def push_stages(root: Path, stages: list[Stage]) -> None:
    """Push the outs dvc.lock records for `stages` to the active remote, in one call: those a run made and those it
    found cached (a stage cached from a run that pushed elsewhere, e.g. `make run` before the team stack existed,
    still lands on this run's remote). DVC sends only what the remote lacks."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    if not stages:
        return
    remote = dvc_remote()
    try:
        with _quiet_dvc(), contextlib.chdir(root), Repo(str(root)) as repo:
            repo.push(targets=[s.name for s in stages], remote=remote)
    except DvcException as exc:
        names = ", ".join(s.name for s in stages)
        raise DvcError(f"dvc push of {names} to {remote or 'the default remote'} failed: {exc}") from exc


def restore_outs(root: Path, stage: Stage) -> bool:
    """Put the outs dvc.lock records for `stage` back from the DVC cache or remote; False where DVC cannot."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with _quiet_dvc(), contextlib.chdir(root), Repo(str(root)) as repo:
            repo.pull(targets=[stage.name], remote=dvc_remote(), force=True)
    except DvcException:
        return False
    return True


def lock_entry(root: Path, stage: str) -> dict | None:
    lock = root / "dvc.lock"
    if not lock.is_file():
        return None
    return ((yaml.load(lock.read_text(), Loader=YAML_LOADER) or {}).get("stages") or {}).get(stage)


def dvc_status(root: Path) -> dict:
    """`dvc status` as data: {} when every stage's deps, params and outs match dvc.lock."""
    from dvc.repo import Repo

    with contextlib.chdir(root), Repo(str(root)) as repo:
        return repo.status()


def remote_status(root: Path) -> dict:
    """`dvc status -c` against the active remote as data: {path: "new" | "deleted" | "missing"}, {} when in sync."""
    from dvc.repo import Repo

    with _quiet_dvc(), contextlib.chdir(root), Repo(str(root)) as repo:
        return repo.status(cloud=True, remote=dvc_remote())


def remote_url(root: Path) -> str:
    """Where pushes go: 'name: url', or 'none'."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        name = dvc_remote() or repo.config["core"].get("remote")
        remote = repo.config["remote"].get(name) if name else None
        return f"{name}: {remote['url']}" if remote else "none"
