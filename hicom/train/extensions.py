"""DeepSpeed's CPU shared-memory collectives op, loaded so that a process killed while loading it cannot hang the
next ones.

`deepspeed.init_distributed` loads the op (`deepspeed.comm.torch.build_shm_op`) through torch's JIT extension loader,
which takes a lock *file* in the op's build folder (torch's `FileBaton`) around its build check on every load, even
when the op is built. A process killed inside that window (a lost node, a preemption, `kill -9`) leaves the file
behind, and every later load on the machine waits on it forever without a word. So the op is loaded here first,
under an `fcntl.flock` that the kernel releases when its holder dies: while it is held no live process of ours is
inside a load, so a lock file found then was left by a dead one and is removed, with a warning naming it. DeepSpeed's
own load later in the process returns the module this one cached, and takes no lock.
"""
from __future__ import annotations

import fcntl
import logging
import os
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


def build_folder(name: str) -> Path:
    """The folder torch's JIT loader builds extension `name` in (TORCH_EXTENSIONS_DIR, or its default cache)."""
    from torch.utils.cpp_extension import _get_build_directory  # the loader's own rule; it also creates the folder

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
