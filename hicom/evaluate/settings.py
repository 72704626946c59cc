"""params.yaml `evaluate:`: generation and reading settings, and the Table A4 patterns of invalid instructions."""
from __future__ import annotations

from dataclasses import dataclass

from hicom.core.errors import ConfigError
from hicom.evaluate.scoring import InstructionFilter

DTYPE_NAMES = ("float32", "bfloat16", "float16")




@dataclass(frozen=True)
class EvalConfig:
    """params.yaml `evaluate:` (generation and reading settings, Table A4 patterns)."""

    max_new_tokens: int = 16
    questions_per_batch: int = 8  # questions about one video answered in one generate call
    seed: int = 0
    dtype: str = "auto"  # auto: bfloat16 on a GPU, float32 on the CPU
    read_timeout_s: float = 60.0
    barrier_timeout_s: float = 86400.0  # how long rank 0 waits for the slowest rank
    invalid_instructions: tuple[str, ...] = ()

    def __post_init__(self):
        if not (isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 1):
            raise ConfigError(f"evaluate.max_new_tokens: must be a positive integer, got {self.max_new_tokens!r}")
        if not (isinstance(self.questions_per_batch, int) and self.questions_per_batch >= 1):
            raise ConfigError(f"evaluate.questions_per_batch: must be a positive integer, "
                              f"got {self.questions_per_batch!r}")
        if self.dtype != "auto" and self.dtype not in DTYPE_NAMES:
            raise ConfigError(f"evaluate.dtype: {self.dtype!r} is not auto or one of {sorted(DTYPE_NAMES)}")
        for name in ("read_timeout_s", "barrier_timeout_s"):
            if not (isinstance(getattr(self, name), (int, float)) and getattr(self, name) > 0):
                raise ConfigError(f"evaluate.{name}: must be a positive number, got {getattr(self, name)!r}")
        InstructionFilter(self.invalid_instructions)  # a bad pattern fails here, naming it

    def torch_dtype(self, device):
        """The torch dtype to evaluate in on `device` (torch imported here: params checks stay light)."""
        import torch

        if self.dtype == "auto":
            return torch.bfloat16 if device.type == "cuda" else torch.float32
        return getattr(torch, self.dtype)
