"""FLOPs of the LLM prefill, counted by torch's FlopCounterMode (attention dense, as the GPU kernels run it)."""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from hicom.efficiency.inputs import Prompt
from hicom.efficiency.measure import prefill
from hicom.model.modeling_hicom import HIComForCausalLM

# CPU SDPA dispatches to an op FlopCounterMode has no formula for; count it like the GPU kernels (dense).
_CPU_SDPA = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def prefill_flops(model: HIComForCausalLM, prompt: Prompt, visual: torch.Tensor) -> tuple[int, int]:
    """(all, attention) FLOPs of the prefill: attention grows with the square of the length, the rest linearly."""
    with FlopCounterMode(display=False, custom_mapping={_CPU_SDPA: _cpu_sdpa_flops}) as counter:
        prefill(model, prompt, visual)
    attention = sum(n for op, n in counter.get_flop_counts()["Global"].items() if "scaled_dot_product" in str(op))
    return counter.get_total_flops(), attention
