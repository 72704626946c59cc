"""DVC calls of the flow: commit a run's stages (dvc.lock written once), push their outs, restore them, read
dvc.lock and `dvc status`.

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


class LockUpdates:
    """One run's DVC commits: what `dvc commit` does for each stage as it finishes (DVC's Stage.save and
    Stage.commit: its deps, params and outs hashed, the outs put in the DVC cache), but dvc.lock written once, by
    `write`, at the run's end or when it fails (DVC's own Lockfile.dump_stages, all stages in one rewrite).

    Why: DVC rewrites the ~70 KB dvc.lock through ruamel's round-trip parser and dumper on every commit, about
    0.45 of a stage's 0.6 s commit (12 stages: 6.9 s one commit at a time, 2.3 s here). Until `write`, dvc.lock
    holds the previous run's entries; a run killed before it leaves them, and the next run's cached stages write
    their entries again (the flow compares each cached result's entry with dvc.lock). One Repo serves the run, as
    in `dvc repro`, and dvc.yaml's stages are read once, at the first commit (DVC reads dvc.yaml and dvc.lock
    again for each stage it collects by name: 0.18 s a stage); every call takes DVC's repository lock.
    """

    def __init__(self, root: Path):
        self.root = root
        self._repo = None
        self._stages: dict[str, object] | None = None  # dvc.yaml's stages by name (DVC's), read at the first commit
        self._pending: dict[str, object] = {}  # stage name -> DVC's stage, saved and committed

    def __enter__(self) -> LockUpdates:
        return self

    def __exit__(self, *exc) -> None:
        if self._repo is not None:
            self._repo.close()
            self._repo = None

    @contextlib.contextmanager
    def _locked_repo(self):
        from dvc.repo import Repo, lock_repo

        with _quiet_dvc(), contextlib.chdir(self.root):
            if self._repo is None:
                self._repo = Repo(str(self.root))
            with lock_repo(self._repo):
                yield self._repo

    def commit(self, stage: Stage) -> dict:
        """Hash the stage's outs into the DVC cache; returns the entry `write` will put in dvc.lock, as
        `lock_entry` will read it back."""
        from dvc.dvcfile import PROJECT_FILE
        from dvc.exceptions import DvcException
        from dvc.stage.serialize import to_lockfile
        from dvc.utils.serialize import dumps_yaml

        try:
            with self._locked_repo() as repo:
                if self._stages is None:
                    self._stages = {s.name: s for s in repo.stage.load_all(PROJECT_FILE)}
                dvc_stage = self._stages.get(stage.name)
                if dvc_stage is None:
                    raise DvcError(f"stage {stage.name!r}: not in {self.root / PROJECT_FILE}")
                dvc_stage.save()
                dvc_stage.commit()
                entry = to_lockfile(dvc_stage)
        except DvcException as exc:
            raise DvcError(f"stage {stage.name!r}: dvc commit failed: {exc}") from exc
        self._pending[stage.name] = dvc_stage
        return yaml.load(dumps_yaml(entry), Loader=YAML_LOADER)[stage.name]

    def write(self) -> None:
        """Put the committed stages' entries in dvc.lock (one rewrite per dvc.yaml file)."""
        from dvc.exceptions import DvcException

        if not self._pending:
            return
        by_file: dict[str, list] = {}
        for dvc_stage in self._pending.values():
            by_file.setdefault(dvc_stage.dvcfile.path, []).append(dvc_stage)
        try:
            with self._locked_repo():
                for dvc_stages in by_file.values():
                    dvc_stages[0].dvcfile.dump_stages(dvc_stages, update_pipeline=False)
        except DvcException as exc:
            raise DvcError(f"writing {', '.join(self._pending)} to dvc.lock failed: {exc}") from exc
        self._pending.clear()


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
    still lands on this run's remote). DVC sends only what the remote lacks. A run of every stage pushes the
    project as `dvc push` does, in one collection of its stages (named targets are collected one by one, each
    reading dvc.yaml and dvc.lock twice: 4.6 s for 12 stages against 0.3 s)."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo, lock_repo

    if not stages:
        return
    remote = dvc_remote()
    names = [s.name for s in stages]
    try:
        with _quiet_dvc(), contextlib.chdir(root), Repo(str(root)) as repo, lock_repo(repo):
            every_stage = {s.addressing for s in repo.index.stages} <= set(names)
            repo.push(targets=None if every_stage else names, remote=remote)
    except DvcException as exc:
        raise DvcError(f"dvc push of {', '.join(names)} to {remote or 'the default remote'} failed: {exc}") from exc


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
