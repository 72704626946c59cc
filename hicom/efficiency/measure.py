"""How one thing is measured: synchronised timers, peak memory, the time of each part of a question."""
from __future__ import annotations

import contextlib
import os
import platform
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import torch

from hicom.core.types import VisualItem
from hicom.data.video import FramePreprocessor, decoder_info, read_video
from hicom.efficiency.inputs import Prompt
from hicom.model.modeling_hicom import HIComForCausalLM
from hicom.report import count


def sync_device(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable, device: torch.device):
    """(fn(), seconds), with the device synchronised on both sides so queued kernels are counted."""
    sync_device(device)
    start = time.perf_counter()
    out = fn()
    sync_device(device)
    return out, time.perf_counter() - start


class PeakMemory:
    """Peak memory of a block: the CUDA allocator's peak on a GPU; on the CPU the peak growth of the
    process RSS, sampled by a thread every `interval_s` (an estimate, labelled as one)."""

    def __init__(self, device: torch.device, interval_s: float = 0.002):
        self.device = device
        self.interval_s = interval_s
        self.kind = "cuda_max_memory_allocated" if device.type == "cuda" else "cpu_peak_rss_growth"
        self.bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        process = psutil.Process()
        self._base = self._peak = process.memory_info().rss

        def sample() -> None:
            while not self._stop.wait(self.interval_s):
                self._peak = max(self._peak, process.memory_info().rss)

        self._thread = threading.Thread(target=sample, name="peak-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.bytes = torch.cuda.max_memory_allocated(self.device)
            return
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, psutil.Process().memory_info().rss)
        self.bytes = self._peak - self._base


@contextlib.contextmanager
def room_for(model: HIComForCausalLM, length: int):
    """Let `generate` splice a sequence of `length` tokens: config.max_length is the training cut-off, and
    the baseline's thousands of visual tokens (6272 at 32 frames) exceed it by design."""
    before = model.config.max_length
    model.config.max_length = max(before, length)
    try:
        yield
    finally:
        model.config.max_length = before


def compress(model: HIComForCausalLM, features, embeds, prompt: Prompt) -> torch.Tensor:
    """The model's projector on encoded frames: its visual tokens for the prompt's instruction (if it uses one)."""
    guide = model.encode_guides(prompt.guide_ids[None])[0] if model.projector.uses_instruction else None
    return model.projector(features, embeds if model.projector.needs_embeds else None, guide, is_image=False)


def prefill(model: HIComForCausalLM, prompt: Prompt, visual: torch.Tensor) -> torch.Tensor:
    """Splice, run the LLM over the whole prompt and pick the first token greedily (time to first token)."""
    length = prompt.input_ids.shape[1] - 1 + visual.shape[0]
    embeds, mask, _, positions = model.splice(prompt.input_ids, None, None, [visual], max_length=length,
                                              padding_side="left")
    out = model.language_model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=True,
                               logits_to_keep=1)
    return out.logits[:, -1].argmax(-1)


def component_seconds(model: HIComForCausalLM, pixels: torch.Tensor, prompt: Prompt,
                      device) -> tuple[dict, torch.Tensor]:
    """Seconds of the vision encoder, the compressor and the LLM's time to first token, and the visual tokens."""
    (features, embeds), vision_s = timed(lambda: model.encode_frames(pixels, model.projector.needs_embeds), device)
    visual, compressor_s = timed(lambda: compress(model, features, embeds, prompt), device)
    _, llm_s = timed(lambda: prefill(model, prompt, visual), device)
    return {"vision": vision_s, "compressor": compressor_s, "llm_ttft": llm_s}, visual


class _PartClock:
    """Seconds spent in each part of a `generate` call: vision (encode_frames), compressor (encode_guides and
    the projector), llm (every language-model forward: prefill and decoding steps).

    Installed on the model instance for the duration of a `with` (wrapped methods, forward hooks), so the
    shares of a question come from that very question; nothing in the model's code changes.
    """

    def __init__(self, model: HIComForCausalLM, device: torch.device):
        self.model, self.device = model, device
        self.seconds = dict.fromkeys(("vision", "compressor", "llm"), 0.0)
        self._handles, self._started = [], {}

    def _wrap(self, part: str, method: Callable) -> Callable:
        def wrapped(*args, **kwargs):
            out, seconds = timed(lambda: method(*args, **kwargs), self.device)
            self.seconds[part] += seconds
            return out
        return wrapped

    def _hook(self, part: str, module: torch.nn.Module) -> None:
        def start(*_):
            sync_device(self.device)
            self._started[part] = time.perf_counter()

        def stop(*_):
            sync_device(self.device)
            self.seconds[part] += time.perf_counter() - self._started.pop(part)

        self._handles += [module.register_forward_pre_hook(start), module.register_forward_hook(stop)]

    def __enter__(self) -> "_PartClock":
        self.model.encode_frames = self._wrap("vision", self.model.encode_frames)
        if self.model.text_tower is not None:
            self.model.encode_guides = self._wrap("compressor", self.model.encode_guides)
        self._hook("compressor", self.model.projector)
        self._hook("llm", self.model.language_model)
        return self

    def __exit__(self, *exc) -> None:
        for name in ("encode_frames", "encode_guides"):
            self.model.__dict__.pop(name, None)  # the class's methods show through again
        for handle in self._handles:
            handle.remove()


def answer_question(model: HIComForCausalLM, clip: Path, frames: int, prompt: Prompt,
                    preprocessor: FramePreprocessor, decoder: str, max_new_tokens: int, device) -> dict[str, float]:
    """One question end to end: read + preprocess the clip, then generate. Seconds per QUESTION_PARTS + total,
    and cpu: the process's CPU time over the same span (every thread; beside the wall time it shows waiting)."""
    sync_device(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    pixels = preprocessor(read_video(clip, frames, decoder=decoder, scale_for=preprocessor).frames).to(device)
    loaded = time.perf_counter()
    guide = prompt.guide_ids if model.projector.uses_instruction else None
    with _PartClock(model, device) as clock:
        model.generate(prompt.input_ids, visual_items=[VisualItem(pixels, "video", guide)],
                       max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens)
    sync_device(device)
    total, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    parts = {"load": loaded - start, **clock.seconds}
    return {**parts, "other": total - sum(parts.values()), "total": total, "cpu": cpu}


def component_params(model: HIComForCausalLM) -> dict[str, int]:
    """Parameters per component (PARAM_FIELDS); the baseline shares towers and LLM, so only its projector differs."""
    params = {"vision": count(model.vision_tower), "text": count(model.text_tower),
              "projector": count(model.projector), "llm": count(model.language_model)}
    params["total"] = sum(params.values())
    return params


def environment(device: torch.device, dtype: torch.dtype, decoder: str) -> dict:
    """What the timings depend on: device, dtype, threads, decoder and library versions."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical cores"
    return {"device": str(device), "device_name": name, "dtype": str(dtype).removeprefix("torch."),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "decoder": decoder_info(decoder)}

