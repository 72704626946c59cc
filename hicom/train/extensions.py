"""DeepSpeed's CPU shared-memory collectives op, loaded so that a process killed while loading it cannot hang the
next ones.

`deepspeed.init_distributed` loads the op (`deepspeed.comm.torch.build_shm_op`) through torch's JIT extension loader,
which takes a lock *file* in the op's build folder (torch's `FileBaton`) around its build check on every load, even
when the op is built. A process killed inside that window (a lost node, a preemption, `kill -9`) leaves the file
behind, and every later load on the machine waits on it forever without a word. So the op is loaded here first,
under an `fcntl.flock` that the kernel releases when its holder dies: while it is held no live process of ours is
inside a load, so a lock file found then was left by a dead one and is removed, with a warning naming it. DeepSpeed's
own load later in the process returns the module this one cached, and takes no lock.

The op is built inside the virtual environment that loads it (`<venv>/torch_extensions`), not in torch's default
cache (`~/.cache/torch_extensions`), which every environment of the user shares: torch's build check covers the
environment's own paths, so two checkouts' venvs on one machine (a teammate's worktrees, `make test`'s clone beside
`make run`'s) rebuilt the op, some 20-40 s of a stage, each time the other had loaded it. TORCH_EXTENSIONS_DIR, where
set, wins.
"""
from __future__ import annotations

import fcntl
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger("hicom.train")


def shm_comm_builder():
    """DeepSpeed's builder of the op, or None where this accelerator has none or it cannot build here (DeepSpeed's
    own test in build_shm_op; the collectives then run on gloo alone)."""
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator

    builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
    if builder is None or not deepspeed.ops.__compatible_ops__.get(builder.NAME, False):
        return None
    return builder


def use_environment_extensions() -> None:
    """Point torch's JIT loader at this virtual environment's own extensions folder, unless TORCH_EXTENSIONS_DIR is set
    or this is no virtual environment we may write to (a system Python, a read-only image): then torch's default."""
    if "TORCH_EXTENSIONS_DIR" in os.environ or sys.prefix == sys.base_prefix or not os.access(sys.prefix, os.W_OK):
        return
    os.environ["TORCH_EXTENSIONS_DIR"] = str(Path(sys.prefix) / "torch_extensions")


def build_folder(name: str) -> Path:
    """The folder torch's JIT loader builds extension `name` in (use_environment_extensions, then torch's own rule)."""
    from torch.utils.cpp_extension import _get_build_directory  # the loader's own rule; it also creates the folder

    use_environment_extensions()
    return Path(_get_build_directory(name, verbose=False))


def load_shm_comm_op() -> bool:
    """Build (the first time) and load the op; True when it loaded, False where it does not apply."""
    builder = shm_comm_builder()
    if builder is None:
        return False
    folder = build_folder(builder.name)
    with open(folder.parent / f"{folder.name}.load.flock", "a") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        try:
            stale = folder / "lock"  # torch's FileBaton
            if stale.exists():
                log.warning("removing %s: the lock file of DeepSpeed's shared-memory op, left by a process that died "
                            "while loading it (every later load would wait on it forever)", stale)
                os.remove(stale)
            builder.load(verbose=False)
        finally:
            fcntl.flock(guard, fcntl.LOCK_UN)
    return True
