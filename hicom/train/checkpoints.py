"""Training checkpoints that are verified before use and never run code when loaded.

A checkpoint folder (checkpoints/step-NNNNNNN) is complete once its marker, complete.json, is written
last: it lists every file of the folder with its size and sha256. Resume takes the newest checkpoint
whose files match their marker and logs why it skipped the newer ones; nothing is deleted here.

Loading never unpickles arbitrary objects: the per-rank RNG state is a safetensors file, and DeepSpeed's
own files (model and optimizer states, client state) go through `safe_torch_load`, `torch.load` with
`weights_only=True` and the few plain types DeepSpeed stores registered as safe. A file planted in a
folder fails its hash; one planted together with a forged marker is refused by the loader.
"""
from __future__ import annotations

import json
import logging
import pickle
import random
from pathlib import Path

from hicom.core.errors import InputError
from hicom.core.files import atomic_write, atomic_write_bytes, sha256_file

# torch, numpy and safetensors are imported where used: the flow asks has_training_state without them.
log = logging.getLogger("hicom.train")
CHECKPOINTS = "checkpoints"  # under a training stage's output folder
COMPLETE = "complete.json"
MARKER_VERSION = 2  # 1: the step only (no file list); such checkpoints cannot be verified and are skipped


class CheckpointRefused(RuntimeError, InputError):
    """A checkpoint file holds something other than tensors and plain data; the message names the file."""


FINAL_STATE = "trainer_state.json"  # written when a stage completes; its checkpoints are deleted after it


def has_training_state(out_dir: Path) -> bool:
    """Whether a training stage's output folder holds what the same command resumes from or finds done: a
    checkpoint with a marker, or a completed stage's final state (it keeps no checkpoints unless told to)."""
    return (out_dir / FINAL_STATE).is_file() or any((out_dir / CHECKPOINTS).glob(f"step-*/{COMPLETE}"))


def checkpoint_files(folder: Path) -> list[Path]:
    """Every file of a checkpoint folder but its marker, in a stable order."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != COMPLETE)


def write_marker(folder: Path, global_step: int) -> None:
    """complete.json listing each file's size and sha256; written last, atomically."""
    files = {p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": sha256_file(p)}
             for p in checkpoint_files(folder)}
    marker = {"version": MARKER_VERSION, "global_step": global_step, "files": files}
    atomic_write_bytes(folder / COMPLETE, json.dumps(marker, indent=1).encode())


def verify(folder: Path) -> str | None:
    """Why `folder` cannot be resumed from (None: every file is there with its recorded size and hash)."""
    marker_file = folder / COMPLETE
    if not marker_file.is_file():
        return f"no {COMPLETE} (the save was interrupted)"
    try:
        marker = json.loads(marker_file.read_text())
        files = marker["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"{COMPLETE} is unreadable or lists no files ({type(exc).__name__}: {exc}); written by an older " \
               f"version or damaged"
    if not isinstance(files, dict) or not files:
        return f"{COMPLETE} lists no files"
    present = {p.relative_to(folder).as_posix() for p in checkpoint_files(folder)}
    unlisted = sorted(present - set(files))
    if unlisted:
        return f"holds files its {COMPLETE} does not list: {', '.join(unlisted)}"
    for name, expected in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != expected.get("size"):
            return f"{name} has {size} bytes, {COMPLETE} says {expected.get('size')} (truncated or rewritten)"
        if sha256_file(path) != expected.get("sha256"):
            return f"{name} does not match its sha256 in {COMPLETE}"
    return None


def step_folders(ckpt_dir: Path) -> list[Path]:
    """checkpoints/step-* folders, oldest first."""
    if not ckpt_dir.is_dir():
        return []
    return sorted(p for p in ckpt_dir.iterdir() if p.is_dir() and p.name.startswith("step-"))


def complete_checkpoints(ckpt_dir: Path) -> list[Path]:
    """Checkpoints with a marker, oldest first (unverified: for pruning); others are reported and kept."""
    done = []
    for path in step_folders(ckpt_dir):
        if (path / COMPLETE).is_file():
            done.append(path)
        else:
            log.warning("skipping incomplete checkpoint %s (no %s); it is left in place", path, COMPLETE)
    return done


def newest_verified(ckpt_dir: Path) -> Path | None:
    """The newest checkpoint whose files match its marker; each newer one skipped is logged with why."""
    for path in reversed(step_folders(ckpt_dir)):
        reason = verify(path)
        if reason is None:
            return path
        log.warning("not resuming from checkpoint %s: %s; it is left in place", path, reason)
    return None


# -- loading without running code ----------------------------------------------------------------
def _safe_types() -> list:
    """The non-tensor types DeepSpeed writes into its checkpoint files: plain-data classes, no code."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


def safe_torch_load(path, map_location=None):
    """torch.load that unpickles tensors and plain data only (DeepSpeed's checkpoint engine calls this)."""
    import torch

    try:
        with torch.serialization.safe_globals(_safe_types()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:  # what the weights-only unpickler raises for anything else
        raise CheckpointRefused(f"{path}: refused to load: it holds objects other than tensors and plain data "
                                f"({str(exc).splitlines()[0]})") from None


def make_loads_safe(engine) -> None:
    """Route the DeepSpeed engine's checkpoint reads through safe_torch_load."""
    engine.checkpoint_engine.load = safe_torch_load


def rng_file(folder: Path, rank: int) -> Path:
    return folder / f"rng_rank{rank}.safetensors"


def save_rng(path: Path) -> None:
    """Python, NumPy and torch RNG states as tensors (safetensors: loading it cannot run code)."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors = {"python": torch.tensor(mt, dtype=torch.int64), "numpy": torch.from_numpy(keys.astype(np.int64)),
               "torch": torch.get_rng_state()}
    meta = {"python": json.dumps([version, gauss]), "numpy": json.dumps([kind, int(pos), int(has_gauss),
                                                                           float(cached)])}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def load_rng(path: Path) -> None:
    """Restore what save_rng wrote."""
    import numpy as np
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    version, gauss = json.loads(meta["python"])
    random.setstate((version, tuple(int(v) for v in tensors["python"].tolist()), gauss))
    kind, pos, has_gauss, cached = json.loads(meta["numpy"])
    np.random.set_state((kind, tensors["numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["torch"])
