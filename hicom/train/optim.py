"""Which parameters a stage trains, and their optimizer groups and learning rates (Table A1)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from hicom.core.errors import ConfigError
from hicom.train.config import StageSpec, TrainConfig, trains_llm

INJECTION_KEY = "guide_injector"


@dataclass
class ParamGroup:
    name: str
    lr: float
    params: list[tuple[str, torch.nn.Parameter]]


def configure_trainable(model, stage: StageSpec, cfg: TrainConfig) -> list[ParamGroup]:
    """Freeze/unfreeze per stage and return the non-empty groups; an empty requested group is an error.

    Groups: `injection` (every parameter under a guide_injector), `compressor` (the rest of the
    projector), `llm` (instruction tuning, and an earlier stage given an lr_llm: config.trains_llm). The towers
    are always frozen (the paper).
    """
    llm = trains_llm(stage, cfg)
    model.set_trainable(projector=True, language_model=llm, towers=False)
    injection = [(n, p) for n, p in model.projector.named_parameters() if INJECTION_KEY in n]
    rest = [(n, p) for n, p in model.projector.named_parameters() if INJECTION_KEY not in n]
    train_injection = stage.guided and cfg.lr_injection is not None
    for _, p in injection:
        p.requires_grad_(train_injection)
    groups = [ParamGroup("compressor", cfg.lr_compressor, rest)]
    if train_injection:
        groups.append(ParamGroup("injection", cfg.lr_injection, injection))
    if llm:
        if cfg.lr_llm is None:
            raise ConfigError(f"train.{stage.name}.lr_llm: the LLM trains in this stage and needs a learning rate")
        groups.append(ParamGroup("llm", cfg.lr_llm, [("language_model." + n, p)
                                                    for n, p in model.language_model.named_parameters()]))
    for group in groups:
        if not group.params:
            hint = (" (this compressor has no injection parameters, e.g. direct injection with equal widths; "
                    "set lr_injection: null)") if group.name == "injection" else ""
            raise ConfigError(f"train.{stage.name}: parameter group {group.name!r} (lr {group.lr}) is empty{hint}")
    return groups


def build_optimizer(groups: list[ParamGroup], weight_decay: float) -> torch.optim.AdamW:
    """AdamW over the trained groups. foreach: one call per operation for all of a group's tensors, with the same
    bits as the per-tensor loop that is the default on the CPU (docs/timings.md); the default on GPUs."""
    return torch.optim.AdamW([{"params": [p for _, p in g.params], "lr": g.lr, "name": g.name,
                               "weight_decay": weight_decay} for g in groups], betas=(0.9, 0.999), eps=1e-8,
                             foreach=True)
