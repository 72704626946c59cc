"""FLOPs counted by torch's FlopCounterMode (attention dense, as the GPU kernels run it): the LLM prefill of a measured
question, and every part of a question up to its first token on the meta device (question_flops)."""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from hicom.efficiency.inputs import Prompt
from hicom.efficiency.measure import compress, prefill
from hicom.model.modeling_hicom import HIComForCausalLM

# CPU SDPA dispatches to an op FlopCounterMode has no formula for; count it like the GPU kernels (dense).
_CPU_SDPA = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _counter() -> FlopCounterMode:
    return FlopCounterMode(display=False, custom_mapping={_CPU_SDPA: _cpu_sdpa_flops})


def prefill_flops(model: HIComForCausalLM, prompt: Prompt, visual: torch.Tensor) -> tuple[int, int]:
    """(all, attention) FLOPs of the prefill: attention grows with the square of the length, the rest linearly."""
    with _counter() as counter:
        prefill(model, prompt, visual)
    attention = sum(n for op, n in counter.get_flop_counts()["Global"].items() if "scaled_dot_product" in str(op))
    return counter.get_total_flops(), attention


def question_flops(model: HIComForCausalLM, frames: int, text_tokens: int) -> dict[str, int]:
    """FLOPs of one question up to its first answer token, per part, counted as prefill_flops counts:
    vision (the tower on `frames` frames at its input size), compressor (incl. the text tower on a guide of
    guide_max_length ids), llm_prefill (text_tokens + the compressor's visual tokens) and total.

    Runs on empty tensors on the model's own device: a model built on `meta` (build_model(profile, device="meta"),
    as the report builds them) allocates nothing, so the paper-7b profile is counted in seconds. The prefill
    skips the splice (it reads the ids, which meta tensors do not hold): the LLM gets a (1, length) embedding of
    the spliced length directly and no attention mask, which for one unpadded sequence is what the all-ones mask
    of `prefill` comes to (the causal mask alone).
    """
    reference = next(model.parameters())
    device, dtype = reference.device, reference.dtype
    size = model.config.vision_config.image_size
    pixels = torch.empty(frames, 3, size, size, device=device, dtype=dtype)
    guide = torch.zeros(model.config.guide_max_length, dtype=torch.long, device=device)
    prompt = Prompt(torch.zeros(1, text_tokens + 1, dtype=torch.long, device=device), guide, "empty")
    counts = {}
    with torch.no_grad():
        with _counter() as counter:
            features, embeds = model.encode_frames(pixels, model.projector.needs_embeds)
        counts["vision"] = counter.get_total_flops()
        with _counter() as counter:
            visual = compress(model, features, embeds, prompt)
        counts["compressor"] = counter.get_total_flops()
        length = text_tokens + visual.shape[0]
        inputs = torch.empty(1, length, model.config.llm_config.hidden_size, device=device, dtype=dtype)
        with _counter() as counter:
            model.language_model(inputs_embeds=inputs, position_ids=torch.arange(length, device=device)[None],
                                 use_cache=True, logits_to_keep=1)
        counts["llm_prefill"] = counter.get_total_flops()
    counts["total"] = sum(counts.values())
    return counts
