"""Start, find and stop our own background daemons, each in its own process group, recorded by PID.

A record holds the PID and the kernel's start time of that PID, so a stop never signals a process that merely
reused a recorded PID after ours died; the whole process group is stopped, so servers that fork (uvicorn,
MLflow's workers) leave nothing behind.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcessRecord:
    name: str
    pid: int
    start_ticks: int  # field 22 of /proc/PID/stat: distinguishes our process from a later one with its PID
    argv: list[str]
    log: str


def start_ticks(pid: int) -> int | None:
    """The kernel's start time of `pid` (clock ticks after boot), or None when no such process lives."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] == "Z":
        return None
    return int(fields[19])


def _stat_fields(pid: int | str) -> list[str] | None:
    """/proc/PID/stat from field 3 (state) on, or None when the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its closing parenthesis.
    return stat[stat.rindex(")") + 2:].split()


def group_members(pgid: int) -> list[int]:
    """PIDs of every live (not zombie) process in process group `pgid`."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(entry.name)
        if fields is not None and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Write via a temporary file and rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


class ProcessTable:
    """The records of the daemons one stack (or cluster) started, one JSON file per daemon under `run_dir`."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)

    def _path(self, name: str) -> Path:
        return self.run_dir / f"{name}.json"

    def get(self, name: str) -> ProcessRecord | None:
        """The record of `name` if its process is still the one we started; a stale record is removed."""
        path = self._path(name)
        try:
            record = ProcessRecord(**json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        if start_ticks(record.pid) != record.start_ticks:
            path.unlink(missing_ok=True)
            return None
        return record

    def start(self, name: str, argv: list[str], *, log: Path, env: dict[str, str], cwd: Path) -> ProcessRecord:
        """Start `argv` detached in a new session (its own process group), output appended to `log`."""
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            out.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} start {' '.join(argv)}\n".encode())
            out.flush()
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    env=env, cwd=cwd, start_new_session=True)
        ticks = start_ticks(proc.pid)
        if ticks is None:
            raise RuntimeError(f"{name} exited at once: see {log}")
        record = ProcessRecord(name, proc.pid, ticks, list(argv), str(log))
        write_atomic(self._path(name), json.dumps(asdict(record)))
        return record

    def stop(self, name: str, *, sig: int = signal.SIGTERM, grace_s: float = 30.0) -> bool:
        """Stop `name`'s whole process group: `sig`, then SIGKILL after `grace_s`. False if it was not running.

        Raises if a process of the group is still alive afterwards.
        """
        record = self.get(name)
        if record is None:
            return False
        pgid = record.pid  # started with start_new_session: the leader's PID is the group's id
        _signal_group(pgid, sig)
        if not _wait_gone(pgid, grace_s):
            _signal_group(pgid, signal.SIGKILL)
            if not _wait_gone(pgid, 10.0):
                raise RuntimeError(f"{name}: processes {group_members(pgid)} of group {pgid} survived SIGKILL")
        self._path(name).unlink(missing_ok=True)
        return True

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.run_dir.glob("*.json"))


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _wait_gone(pgid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while group_members(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def say(message: str) -> None:
    """Progress on stdout, flushed so it stays in order with errors on stderr."""
    print(message, flush=True)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on `port` now (SO_REUSEADDR, as servers bind: TIME_WAIT does not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def wait_until(check, *, timeout_s: float, what: str, log: Path | None = None, alive=None) -> None:
    """Poll `check()` until it returns True; fail with `what` (and the log's tail) on timeout or when `alive()`
    says the process died."""
    deadline = time.monotonic() + timeout_s
    while True:
        if check():
            return
        died = alive is not None and not alive()
        if died or time.monotonic() > deadline:
            reason = "exited" if died else f"did not answer within {timeout_s:.0f}s"
            tail = ""
            if log is not None and log.exists():
                tail = "\n  " + "\n  ".join(log.read_text(errors="replace").splitlines()[-15:])
            raise RuntimeError(f"{what} {reason}; log {log}:{tail}")
        time.sleep(0.25)
