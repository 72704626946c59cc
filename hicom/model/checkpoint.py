"""Saving and loading: the whole model (transformers format) and compressor-only checkpoints.

Only the compressor travels between training stages, so its checkpoint is small and is loaded
strictly: a missing, unexpected or mis-shaped key is an error that names it. Every write goes to a
temporary sibling first and is renamed into place, so a crash never leaves a half-written file
under the final name.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from hicom.core.errors import InputError
from hicom.core.files import atomic_write, atomic_write_bytes, atomic_write_dir

COMPRESSOR_WEIGHTS = "compressor.safetensors"
COMPRESSOR_CONFIG = "compressor.json"
# Prefixes under which the public release stores projector weights (mm_projector.bin).
RELEASE_PREFIXES = ("model.mm_projector.", "mm_projector.")


class CheckpointError(RuntimeError, InputError):
    """A checkpoint does not match the model it is loaded into; the message names the keys."""


def save_model(model, out_dir: str | Path, tokenizer=None) -> Path:
    """save_pretrained (safetensors) into a temporary directory, then rename it into place."""
    def fill(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)

    return atomic_write_dir(out_dir, fill)


def save_compressor(projector: nn.Module, out_dir: str | Path, extra: dict | None = None) -> Path:
    """Write compressor.safetensors + compressor.json (its config) into out_dir, atomically."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in projector.state_dict().items()}
    atomic_write(out_dir / COMPRESSOR_WEIGHTS, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
    meta = {"compressor": projector.cfg.to_dict(), **(extra or {})}
    atomic_write_bytes(out_dir / COMPRESSOR_CONFIG, json.dumps(meta, indent=2).encode())
    return out_dir


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    if path.is_dir():
        for name in (COMPRESSOR_WEIGHTS, "mm_projector.bin"):
            if (path / name).is_file():
                return _read_state(path / name)
        raise CheckpointError(f"{path}: no {COMPRESSOR_WEIGHTS} or mm_projector.bin in this directory")
    if not path.is_file():
        raise CheckpointError(f"{path}: compressor checkpoint not found")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or truncated file
        raise CheckpointError(f"{path}: cannot read compressor checkpoint: {exc}") from exc


def _strip_release_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        for prefix in RELEASE_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
                break
        out[key] = value
    return out


def load_compressor(projector: nn.Module, path: str | Path) -> nn.Module:
    """Load a compressor checkpoint strictly into `projector` (ours or the release's mm_projector.bin)."""
    path = Path(path)
    state = _strip_release_prefix(_read_state(path))
    expected = projector.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{path}: compressor checkpoint does not match the model: "
                              f"missing keys {missing}, unexpected keys {unexpected}")
    wrong = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
             for k, v in expected.items() if state[k].shape != v.shape]
    if wrong:
        raise CheckpointError(f"{path}: compressor checkpoint has mis-shaped tensors: {wrong}")
    config_file = (path if path.is_dir() else path.parent) / COMPRESSOR_CONFIG
    if config_file.is_file():
        saved = json.loads(config_file.read_text()).get("compressor")
        if saved is not None and saved != projector.cfg.to_dict():
            diff = {k: (saved.get(k), v) for k, v in projector.cfg.to_dict().items() if saved.get(k) != v}
            raise CheckpointError(f"{config_file}: saved compressor config differs from the model's "
                                  f"(field: (checkpoint, model)): {diff}")
    projector.load_state_dict(state, strict=True)
    return projector
