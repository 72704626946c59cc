"""Measure both models at every frame count and assemble profile.json's content."""
from __future__ import annotations

import contextlib
import dataclasses
import statistics
from collections.abc import Callable
from pathlib import Path

import torch

from hicom.data.video import FramePreprocessor, read_video
from hicom.efficiency.accuracy import resolve_tokens
from hicom.efficiency.fields import MODELS, PARTS, QUESTION_PARTS
from hicom.efficiency.flops import prefill_flops
from hicom.efficiency.inputs import Prompt
from hicom.efficiency.measure import (
    PeakMemory,
    answer_question,
    component_params,
    component_seconds,
    environment,
    room_for,
)
from hicom.efficiency.settings import EfficiencySettings
from hicom.efficiency.tables import ratios
from hicom.model.modeling_hicom import HIComForCausalLM


def _in_turn(models: dict, round_: int) -> list[tuple[str, HIComForCausalLM]]:
    """The models' (name, model) pairs for one round, the first rotating from round to round, so that no model
    always runs first (or always right after the other, in the cache and allocator state it left)."""
    items = list(models.items())
    k = round_ % len(items)
    return items[k:] + items[:k]


def _time_components(models: dict, pixels: torch.Tensor, prompt: Prompt, settings: EfficiencySettings,
                     device) -> tuple[dict[str, dict[str, list[float]]], dict[str, torch.Tensor]]:
    """Seconds per PARTS and repeat, per model (models alternating, the first rotating), and the visual tokens."""
    for i in range(settings.warmup):
        for _, model in _in_turn(models, i):
            component_seconds(model, pixels, prompt, device)
    runs = {name: {part: [] for part in PARTS} for name in models}
    visual = {}
    for i in range(settings.warmup, settings.warmup + settings.repeats):  # the rotation goes on from the warm-up
        for name, model in _in_turn(models, i):
            seconds, visual[name] = component_seconds(model, pixels, prompt, device)
            for part, value in seconds.items():
                runs[name][part].append(value)
    return runs, visual


def _row(name: str, model: HIComForCausalLM, frames: int, runs: dict[str, list[float]], questions: list[dict],
         visual: torch.Tensor, memory: PeakMemory, prompt: Prompt) -> dict:
    runs = {**runs, "load": [q["load"] for q in questions], "e2e": [q["total"] for q in questions],
            "e2e_cpu": [q["cpu"] for q in questions]}
    median_ms = {part: 1e3 * statistics.median(values) for part, values in runs.items()}
    flops, attention_flops = prefill_flops(model, prompt, visual)
    return {
        "model": name,
        "frames": frames,
        "params": component_params(model),
        "visual_tokens": int(visual.shape[0]),
        "llm_prefill_tokens": int(prompt.input_ids.shape[1] - 1 + visual.shape[0]),
        "vision_ms": median_ms["vision"],
        "compressor_ms": median_ms["compressor"],
        "llm_ttft_ms": median_ms["llm_ttft"],
        "load_ms": median_ms["load"],
        "e2e_ms": median_ms["e2e"],
        "e2e_cpu_ms": median_ms["e2e_cpu"],
        "s_per_video": statistics.mean(runs["e2e"]),
        "llm_prefill_flops": flops,
        "llm_prefill_attention_flops": attention_flops,
        "peak_memory_mb": memory.bytes / 2**20,
        "peak_memory_kind": memory.kind,
        "question_parts_ms": {part: 1e3 * statistics.mean(q[part] for q in questions) for part in QUESTION_PARTS},
        "runs_ms": {part: [round(1e3 * value, 3) for value in values] for part, values in runs.items()},
    }


@torch.no_grad()
def measure_models(models: dict[str, HIComForCausalLM], clips: list[Path], prompt: Prompt,
                   preprocessor: FramePreprocessor, settings: EfficiencySettings, decoder: str,
                   device: torch.device | str, log: Callable[[str], None] = lambda _msg: None) -> list[dict]:
    """One row per model and frame count (ROW_FIELDS); the models must share towers and LLM."""
    device = torch.device(device)
    if set(models) != set(MODELS):
        raise ValueError(f"measure_models: expected models {sorted(MODELS)}, got {sorted(models)}")
    if not clips:
        raise ValueError("measure_models: no clips to read")
    prompt = prompt.to(device)
    rows = []
    for frames in settings.frames:
        pixels = preprocessor(read_video(clips[0], frames, decoder=decoder, scale_for=preprocessor).frames).to(device)
        runs, visual = _time_components(models, pixels, prompt, settings, device)
        questions, memory = {name: [] for name in models}, {}
        with contextlib.ExitStack() as stack:
            longest = prompt.input_ids.shape[1] + max(v.shape[0] for v in visual.values())
            for model in models.values():
                stack.enter_context(room_for(model, longest))
            for i in range(settings.samples):  # alternating models, the first rotating, as the component repeats
                for name, model in _in_turn(models, i):
                    questions[name].append(answer_question(model, clips[i % len(clips)], frames, prompt,
                                                           preprocessor, decoder, settings.max_new_tokens, device))
            for name, model in models.items():
                with PeakMemory(device, settings.memory_interval_s) as memory[name]:
                    answer_question(model, clips[0], frames, prompt, preprocessor, decoder, settings.max_new_tokens,
                                    device)
        for name, model in models.items():
            rows.append(_row(name, model, frames, runs[name], questions[name], visual[name], memory[name], prompt))
            log(f"efficiency: {MODELS[name]} at {frames} frames: {rows[-1]['visual_tokens']} visual tokens, "
                f"LLM TTFT {rows[-1]['llm_ttft_ms']:.1f} ms, {rows[-1]['s_per_video']:.3f} s/video")
    return rows


def measure_efficiency(models: dict[str, HIComForCausalLM], *, profile_name: str, model_source: str,
                       clips: list[Path], clips_source: str, prompt: Prompt, preprocessor: FramePreprocessor,
                       settings: EfficiencySettings, decoder: str, device: torch.device,
                       eval_entries: list[dict] | None = None, default_frames: int = 32,
                       log: Callable[[str], None] = lambda _msg: None) -> dict:
    """Measure both models and assemble profile.json's content (profile_name: the params profile measured)."""
    rows = measure_models(models, clips, prompt, preprocessor, settings, decoder, device, log)
    points = resolve_tokens(eval_entries, models["hicom"], default_frames) if eval_entries else []
    dtype = next(models["hicom"].parameters()).dtype
    return {
        "profile": profile_name,
        "model_source": model_source,
        "environment": environment(torch.device(device), dtype, decoder),
        "settings": {**dataclasses.asdict(settings), "frames": list(settings.frames)},
        "clips_source": clips_source,
        "prompt": {"source": prompt.source, "llm_text_tokens": int(prompt.input_ids.shape[1] - 1),
                   "guide_tokens": None if prompt.guide_ids is None else int(prompt.guide_ids.shape[-1])},
        "rows": rows,
        "ratios": ratios(rows),
        "accuracy_vs_tokens": points,
        "accuracy_plot": "accuracy_vs_tokens.png" if points else
                         "not drawn: no --eval-results given, so there is no accuracy to plot",
    }
