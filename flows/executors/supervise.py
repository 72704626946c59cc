"""`python supervise.py PARENT_PID [--keep-fd N ...] -- COMMAND...`: run COMMAND and own its whole process tree.

The local executor starts every stage through this small supervisor, in a session of its own. torchrun
starts each rank in a session of its own too, so signalling the stage's process group misses the
ranks; the supervisor instead is a child subreaper (orphaned descendants are re-parented to it, so it
sees them all) and:
- stops when the flow dies, however it dies: its parent-death signal is SIGTERM;
- on SIGTERM/SIGINT/SIGHUP sends SIGTERM to every descendant, SIGKILL after a grace period, then dies
  of the same signal (the executor reads a cancel from that);
- when COMMAND ends, stops whatever it left behind and exits as COMMAND did.
COMMAND itself gets SIGTERM as its parent-death signal, in case the supervisor is killed outright.

Standard library only, run by path: it must start in any project directory.
"""
from __future__ import annotations

import ctypes
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve()  # what the local executor and the temporary Prefect server run by path
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
GRACE_S = 5.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

_libc = ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, value: int) -> None:
    if _libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}, {value}) failed")


def descendants(root: int) -> list[int]:
    """Every live process below `root`, from /proc (parents before children)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, queue = [], [root]
    while queue:
        for child in children.get(queue.pop(0), []):
            found.append(child)
            queue.append(child)
    return found


def _reap() -> None:
    """Collect exited children (orphans re-parented here included) so they leave no zombies."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def stop_tree(grace_s: float = GRACE_S) -> None:
    """SIGTERM to every descendant; SIGKILL to those still there after grace_s."""
    me = os.getpid()
    for pid in descendants(me):
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while descendants(me) and time.monotonic() < deadline:
        _reap()
        time.sleep(0.05)
    for pid in descendants(me):
        _signal(pid, signal.SIGKILL)
    while descendants(me):
        _reap()
        time.sleep(0.02)
    _reap()


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _die_like(sig: int) -> None:
    """Exit by `sig`, so the executor sees -sig as if the command itself had been signalled."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if sig not in (signal.SIGKILL, signal.SIGSTOP):  # these two have no handler to reset
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
    os.kill(os.getpid(), sig)
    os._exit(128 + sig)


def main(argv: list[str]) -> int:
    split = argv.index("--")
    parent, options, command = int(argv[0]), argv[1:split], argv[split + 1:]
    keep_fds = tuple(int(options[i + 1]) for i, o in enumerate(options) if o == "--keep-fd")
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the flow died before the parent-death signal was armed
        return 128 + signal.SIGTERM
    received: list[int] = []
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda s, _frame: received.append(s))
    child = subprocess.Popen(command, pass_fds=keep_fds,
                             preexec_fn=lambda: _prctl(PR_SET_PDEATHSIG, signal.SIGTERM))
    while child.poll() is None and not received:
        time.sleep(0.1)
    if received:
        stop_tree()
        _die_like(received[0])
    stop_tree()  # whatever the command left running (ranks outliving their launcher)
    code = child.returncode
    if code < 0:
        _die_like(-code)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
