"""Efficiency profiling (Table A6): HICom against the LLaVA-OneVision baseline, component by component.

The two models share one vision tower, text tower and LLM (the same module objects); only the projector
differs, so every difference in the numbers comes from the compressor and the visual tokens it hands
the LLM. Per model and frame count:

- parameters per component (vision tower incl. pooling head, text tower, projector, LLM);
- median time of the vision encoder, the compressor (including the text encoder for the instruction)
  and the LLM's time to first token (splice + prefill + greedy first token);
- throughput in s/video over many samples, each read from a video file, preprocessed and answered
  through `HIComForCausalLM.generate` (the inference path of evaluation);
- peak memory of one such question; visual tokens; FLOPs of the LLM prefill (FlopCounterMode).

Warm-up runs come first; the timed repeats alternate between the two models, so drift on a busy
machine hits both alike; CUDA is synchronised around every timed region.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import platform
import random
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from hicom.core.errors import ConfigError, DataError
from hicom.core.files import atomic_write_bytes, read_json_object
from hicom.core.types import VIDEO_TOKEN_ID, VisualItem
from hicom.data.video import FramePreprocessor, decoder_info, read_video
from hicom.model.compressor import build_projector
from hicom.model.configuration_hicom import CompressorConfig, HIComConfig, ModelProfile
from hicom.model.modeling_hicom import HIComForCausalLM
from hicom.report import count

MODELS = {"hicom": "HICom", "llava_ov": "LLaVA-OV baseline"}
PARTS = ("vision", "compressor", "llm_ttft")
ROW_FIELDS = ("model", "frames", "params", "visual_tokens", "llm_prefill_tokens", "vision_ms", "compressor_ms",
              "llm_ttft_ms", "load_ms", "e2e_ms", "s_per_video", "llm_prefill_flops", "llm_prefill_attention_flops",
              "peak_memory_mb", "peak_memory_kind", "question_parts_ms", "runs_ms")
QUESTION_PARTS = ("load", "vision", "compressor", "llm", "other")
PARAM_FIELDS = ("vision", "text", "projector", "llm", "total")
RATIO_FIELDS = ("visual_tokens", "llm_prefill_tokens", "llm_prefill_flops", "llm_ttft_ms", "vision_ms",
                "compressor_ms", "e2e_ms", "s_per_video", "peak_memory_mb")
RATIO_TABLE_FIELDS = ("visual_tokens", "llm_prefill_tokens", "llm_prefill_flops", "llm_ttft_ms", "vision_ms",
                      "compressor_ms", "s_per_video", "peak_memory_mb")
MEMORY_KINDS = {
    "cuda_max_memory_allocated": "torch.cuda.max_memory_allocated over one question (weights included)",
    "cpu_peak_rss_growth": "growth of the process RSS over one question, sampled by psutil (weights excluded: "
                           "they were resident before)",
}
# One representative multiple-choice question (the synthetic world's format) for tokenised prompts.
PROFILE_QUESTION = ("Which object appears late in the video?\nA. the red circle\nB. the blue square\n"
                    "C. the green triangle\nD. the white cross\n"
                    "Answer with the option's letter from the given choices directly.")
# CPU SDPA dispatches to an op FlopCounterMode has no formula for; count it like the GPU kernels (dense).
_CPU_SDPA = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# ---------------------------------------------------------------- settings

@dataclass(frozen=True)
class ClipSettings:
    """Synthetic clips rendered when no video paths are given (hicom.data.synthetic scenes, lossless mp4)."""

    count: int = 4
    num_frames: int = 128
    fps: int = 8
    size: int = 128
    seed: int = 0

    def __post_init__(self):
        self.world_config()  # the synthetic world's own checks, reported under this section's name

    def world_config(self):
        from hicom.data.synthetic import WorldConfig

        try:
            return WorldConfig.from_dict({"seed": self.seed, "num_videos": self.count, "num_frames": self.num_frames,
                                          "fps": self.fps, "size": self.size}, "efficiency.clips")
        except ValueError as exc:
            raise ConfigError(str(exc).replace("num_videos", "count")) from None


@dataclass(frozen=True)
class ProfileSettings:
    """params.yaml `efficiency:`; strict keys, every count checked."""

    frames: tuple[int, ...] = (32, 64, 128)
    samples: int = 8  # questions per model and frame count for the s/video throughput
    warmup: int = 1
    repeats: int = 5
    max_new_tokens: int = 4  # tokens generated per question in the throughput (an MCQ answer)
    prompt_tokens: int = 64  # text tokens of the random prompt used when no tokenizer is given
    memory_interval_s: float = 0.002  # psutil sampling interval for the CPU peak-memory estimate
    clips: ClipSettings = field(default_factory=ClipSettings)

    def __post_init__(self):
        frames = tuple(self.frames)
        if not frames or any(isinstance(t, bool) or not isinstance(t, int) or t < 1 for t in frames):
            raise ConfigError(f"efficiency.frames: must be a non-empty list of positive integers, got {self.frames!r}")
        object.__setattr__(self, "frames", frames)
        for name, low in (("samples", 1), ("warmup", 0), ("repeats", 1), ("max_new_tokens", 1),
                          ("prompt_tokens", 2)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"efficiency.{name}: must be an integer >= {low}, got {value!r}")
        if not (isinstance(self.memory_interval_s, (int, float)) and self.memory_interval_s > 0):
            raise ConfigError(f"efficiency.memory_interval_s: must be > 0, got {self.memory_interval_s!r}")

    @classmethod
    def from_dict(cls, data: dict | None) -> "ProfileSettings":
        data = dict(data or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"efficiency: unknown field(s) {unknown} (allowed: {sorted(known)})")
        clips = data.pop("clips", None) or {}
        clip_known = {f.name for f in dataclasses.fields(ClipSettings)}
        if not isinstance(clips, dict) or set(clips) - clip_known:
            raise ConfigError(f"efficiency.clips: expected a mapping with fields {sorted(clip_known)}, got {clips!r}")
        return cls(**data, clips=ClipSettings(**clips))


# ---------------------------------------------------------------- inputs

@dataclass
class Prompt:
    """The question every measurement asks: LLM ids with one <video> placeholder, and the guide ids."""

    input_ids: torch.Tensor  # (1, L)
    guide_ids: torch.Tensor | None  # (L_g,) for the text tower; None when no model needs it
    source: str

    def to(self, device) -> "Prompt":
        guide = None if self.guide_ids is None else self.guide_ids.to(device)
        return Prompt(self.input_ids.to(device), guide, self.source)


def random_prompt(config: HIComConfig, text_tokens: int, seed: int = 0) -> Prompt:
    """Random in-vocabulary ids (no tokenizer needed for a random-init model): timings depend on lengths only.

    The placeholder sits after the first few ids, as after a chat template's system header; the guide is
    padded to guide_max_length, as the SigLIP tokenizer pads it.
    """
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, config.llm_config.vocab_size, (text_tokens,), generator=gen)
    cut = min(8, text_tokens - 1)
    input_ids = torch.cat([ids[:cut], torch.tensor([VIDEO_TOKEN_ID]), ids[cut:]]).unsqueeze(0)
    guide = None
    if config.text_tower_config is not None:
        guide = torch.randint(1, config.text_tower_config.vocab_size, (config.guide_max_length,), generator=gen)
    return Prompt(input_ids, guide, f"random ids: {text_tokens} text tokens + <video>")


def tokenised_prompt(tokenizer, guide_tokenizer, guide_max_length: int) -> Prompt:
    """PROFILE_QUESTION through the model's chat template and, for the guide, the SigLIP tokenizer."""
    from hicom.data.conversation import encode_prompt, extract_guide, tokenise_guides

    guide = None
    if guide_tokenizer is not None:
        guide = tokenise_guides(guide_tokenizer, [extract_guide(PROFILE_QUESTION)], guide_max_length)[0]
    return Prompt(encode_prompt(tokenizer, PROFILE_QUESTION, "video").unsqueeze(0), guide,
                  "tokenised multiple-choice question")


def render_clips(settings: ClipSettings, out_dir: Path) -> list[Path]:
    """A few synthetic scenes as lossless mp4 files, read back through hicom.data.video like any video."""
    from hicom.data.synthetic import make_scene, write_video

    cfg = settings.world_config()
    paths = []
    for i in range(settings.count):
        scene = make_scene(random.Random(f"{settings.seed}/profile/{i}"), cfg, f"profile_{i:02d}")
        path = Path(out_dir) / f"{scene.id}.mp4"
        write_video(scene, path)
        paths.append(path)
    return paths


def baseline_counterpart(model: HIComForCausalLM) -> HIComForCausalLM:
    """The LLaVA-OV baseline of a HICom model: the same tower and LLM modules, a fresh baseline projector.

    Built on `meta` first, so the shared components cost no memory a second time.
    """
    cfg = model.config
    projector_cfg = CompressorConfig(kind="llava_ov", local=None, global_=None,
                                     baseline_pool=cfg.compressor_config.baseline_pool)
    config = HIComConfig(vision_config=cfg.vision_config, text_tower_config=None, llm_config=cfg.llm_config,
                         compressor=projector_cfg.to_dict(), guide_max_length=cfg.guide_max_length,
                         max_length=cfg.max_length)
    with torch.device("meta"):
        baseline = HIComForCausalLM(config)
    baseline.vision_tower = model.vision_tower
    baseline.language_model = model.language_model
    reference = next(model.projector.parameters())
    vision_dim = cfg.vision_config.hidden_size
    with torch.device(reference.device):
        projector = build_projector(projector_cfg, vision_dim, vision_dim, cfg.llm_config.hidden_size)
    baseline.projector = projector.to(reference.dtype)
    return baseline.eval()


def component_params(model: HIComForCausalLM) -> dict[str, int]:
    params = {"vision": count(model.vision_tower), "text": count(model.text_tower),
              "projector": count(model.projector), "llm": count(model.language_model)}
    params["total"] = sum(params.values())
    return params


# ---------------------------------------------------------------- measuring

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable, device: torch.device):
    """(fn(), seconds), with the device synchronised on both sides so queued kernels are counted."""
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
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
def _room_for(model: HIComForCausalLM, length: int):
    """Let `generate` splice a sequence of `length` tokens: config.max_length is the training cut-off, and
    the baseline's thousands of visual tokens (6272 at 32 frames) exceed it by design."""
    before = model.config.max_length
    model.config.max_length = max(before, length)
    try:
        yield
    finally:
        model.config.max_length = before


def _compress(model: HIComForCausalLM, features, embeds, prompt: Prompt) -> torch.Tensor:
    guide = model.encode_guides(prompt.guide_ids[None])[0] if model.projector.uses_instruction else None
    return model.projector(features, embeds if model.projector.needs_embeds else None, guide, is_image=False)


def _prefill(model: HIComForCausalLM, prompt: Prompt, visual: torch.Tensor) -> torch.Tensor:
    """Splice, run the LLM over the whole prompt and pick the first token greedily (time to first token)."""
    length = prompt.input_ids.shape[1] - 1 + visual.shape[0]
    embeds, mask, _, positions = model.splice(prompt.input_ids, None, None, [visual], max_length=length,
                                              padding_side="left")
    out = model.language_model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=True,
                               logits_to_keep=1)
    return out.logits[:, -1].argmax(-1)


def _components(model: HIComForCausalLM, pixels: torch.Tensor, prompt: Prompt, device) -> tuple[dict, torch.Tensor]:
    (features, embeds), vision_s = _timed(lambda: model.encode_frames(pixels, model.projector.needs_embeds), device)
    visual, compressor_s = _timed(lambda: _compress(model, features, embeds, prompt), device)
    _, llm_s = _timed(lambda: _prefill(model, prompt, visual), device)
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
        def timed(*args, **kwargs):
            out, seconds = _timed(lambda: method(*args, **kwargs), self.device)
            self.seconds[part] += seconds
            return out
        return timed

    def _hook(self, part: str, module: torch.nn.Module) -> None:
        def start(*_):
            _sync(self.device)
            self._started[part] = time.perf_counter()

        def stop(*_):
            _sync(self.device)
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


def _answer(model: HIComForCausalLM, clip: Path, frames: int, prompt: Prompt, preprocessor: FramePreprocessor,
            decoder: str, max_new_tokens: int, device) -> dict[str, float]:
    """One question end to end: read + preprocess the clip, then generate. Seconds per QUESTION_PARTS + total."""
    _sync(device)
    start = time.perf_counter()
    pixels = preprocessor(read_video(clip, frames, decoder=decoder).frames).to(device)
    loaded = time.perf_counter()
    guide = prompt.guide_ids if model.projector.uses_instruction else None
    with _PartClock(model, device) as clock:
        model.generate(prompt.input_ids, visual_items=[VisualItem(pixels, "video", guide)],
                       max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens)
    _sync(device)
    total = time.perf_counter() - start
    parts = {"load": loaded - start, **clock.seconds}
    return {**parts, "other": total - sum(parts.values()), "total": total}


def _prefill_flops(model: HIComForCausalLM, prompt: Prompt, visual: torch.Tensor) -> tuple[int, int]:
    """(all, attention) FLOPs of the prefill: attention grows with the square of the length, the rest linearly."""
    with FlopCounterMode(display=False, custom_mapping={_CPU_SDPA: _cpu_sdpa_flops}) as counter:
        _prefill(model, prompt, visual)
    attention = sum(n for op, n in counter.get_flop_counts()["Global"].items() if "scaled_dot_product" in str(op))
    return counter.get_total_flops(), attention


def _time_components(models: dict, pixels: torch.Tensor, prompt: Prompt, settings: ProfileSettings,
                     device) -> tuple[dict[str, dict[str, list[float]]], dict[str, torch.Tensor]]:
    """Seconds per PARTS and repeat, per model (models alternating), and each model's visual tokens."""
    for _ in range(settings.warmup):
        for model in models.values():
            _components(model, pixels, prompt, device)
    runs = {name: {part: [] for part in PARTS} for name in models}
    visual = {}
    for _ in range(settings.repeats):
        for name, model in models.items():
            seconds, visual[name] = _components(model, pixels, prompt, device)
            for part, value in seconds.items():
                runs[name][part].append(value)
    return runs, visual


def _row(name: str, model: HIComForCausalLM, frames: int, runs: dict[str, list[float]], questions: list[dict],
         visual: torch.Tensor, memory: PeakMemory, prompt: Prompt) -> dict:
    runs = {**runs, "load": [q["load"] for q in questions], "e2e": [q["total"] for q in questions]}
    median_ms = {part: 1e3 * statistics.median(values) for part, values in runs.items()}
    flops, attention_flops = _prefill_flops(model, prompt, visual)
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
        "s_per_video": statistics.mean(runs["e2e"]),
        "llm_prefill_flops": flops,
        "llm_prefill_attention_flops": attention_flops,
        "peak_memory_mb": memory.bytes / 2**20,
        "peak_memory_kind": memory.kind,
        "question_parts_ms": {part: 1e3 * statistics.mean(q[part] for q in questions) for part in QUESTION_PARTS},
        "runs_ms": {part: [round(1e3 * value, 3) for value in values] for part, values in runs.items()},
    }


@torch.no_grad()
def profile_models(models: dict[str, HIComForCausalLM], clips: list[Path], prompt: Prompt,
                   preprocessor: FramePreprocessor, settings: ProfileSettings, decoder: str,
                   device: torch.device | str, log: Callable[[str], None] = lambda _msg: None) -> list[dict]:
    """One row per model and frame count (ROW_FIELDS); the models must share towers and LLM."""
    device = torch.device(device)
    if set(models) != set(MODELS):
        raise ValueError(f"profile_models: expected models {sorted(MODELS)}, got {sorted(models)}")
    if not clips:
        raise ValueError("profile_models: no clips to read")
    prompt = prompt.to(device)
    rows = []
    for frames in settings.frames:
        pixels = preprocessor(read_video(clips[0], frames, decoder=decoder).frames).to(device)
        runs, visual = _time_components(models, pixels, prompt, settings, device)
        questions, memory = {name: [] for name in models}, {}
        with contextlib.ExitStack() as stack:
            longest = prompt.input_ids.shape[1] + max(v.shape[0] for v in visual.values())
            for model in models.values():
                stack.enter_context(_room_for(model, longest))
            for i in range(settings.samples):  # alternating models, as the component repeats
                for name, model in models.items():
                    questions[name].append(_answer(model, clips[i % len(clips)], frames, prompt, preprocessor,
                                                   decoder, settings.max_new_tokens, device))
            for name, model in models.items():
                with PeakMemory(device, settings.memory_interval_s) as memory[name]:
                    _answer(model, clips[0], frames, prompt, preprocessor, decoder, settings.max_new_tokens, device)
        for name, model in models.items():
            rows.append(_row(name, model, frames, runs[name], questions[name], visual[name], memory[name], prompt))
            log(f"profile: {MODELS[name]} at {frames} frames: {rows[-1]['visual_tokens']} visual tokens, "
                f"LLM TTFT {rows[-1]['llm_ttft_ms']:.1f} ms, {rows[-1]['s_per_video']:.3f} s/video")
    return rows


def resolve_device(name: str) -> torch.device:
    """"auto": the GPU when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """"auto": bf16 on a GPU (as the paper serves), fp32 on the CPU."""
    choices = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in choices:
        raise ConfigError(f"--dtype: {name!r} is not one of {['auto', *choices]}")
    return choices[name]


@dataclass
class Subject:
    """The HICom model to measure (its baseline is derived from it), its prompt, and where it came from."""

    hicom: HIComForCausalLM
    prompt: Prompt
    towers: Path | None  # SigLIP folder: instruction tokenizer and preprocessor; None: a random-init profile's
    source: str


def subject(profile: ModelProfile, model_dir: str | Path | None, towers: Path | None,
            prompt_tokens: int) -> Subject:
    """A trained model from model_dir (guided ones need towers: their instruction tokenizer), or else the
    profile's model built from its config, random init (with towers, its towers loaded from there)."""
    from hicom.data.tokenizer import load_tokenizer
    from hicom.model.build import build_model

    if model_dir:
        hicom = HIComForCausalLM.from_pretrained(model_dir)
        towers = towers or (Path(profile.text.path) if profile.text.path else None)
        guide_tokenizer = None
        if hicom.projector.uses_instruction:
            if towers is None or not towers.is_dir():
                raise ConfigError(f"efficiency: the model in {model_dir} is guided by the instruction: pass --towers "
                                  f"DIR (the SigLIP directory with its tokenizer); got {towers}")
            guide_tokenizer = load_tokenizer(towers)
        prompt = tokenised_prompt(load_tokenizer(model_dir), guide_tokenizer, hicom.config.guide_max_length)
        source = f"trained HICom from {model_dir}; baseline: its towers and LLM with a LLaVA-OV projector"
        return Subject(hicom, prompt, towers, source)
    if towers:
        profile = dataclasses.replace(profile, vision=dataclasses.replace(profile.vision, path=str(towers)),
                                      text=dataclasses.replace(profile.text, path=str(towers)))
    hicom = build_model(profile)
    source = (f"profile {profile.name!r} built from its config (random init"
              f"{f', towers from {towers}' if towers else ''}); baseline: the same towers and LLM with a "
              f"LLaVA-OV projector")
    return Subject(hicom, random_prompt(hicom.config, prompt_tokens), towers, source)


def model_pair(hicom: HIComForCausalLM, device: torch.device, dtype: torch.dtype) -> dict[str, HIComForCausalLM]:
    """{"hicom": the model, "llava_ov": its baseline counterpart}, on the device, in eval mode."""
    hicom = hicom.to(device=device, dtype=dtype).eval()
    return {"hicom": hicom, "llava_ov": baseline_counterpart(hicom)}


def environment(device: torch.device, dtype: torch.dtype, decoder: str) -> dict:
    """What the timings depend on: device, dtype, threads, decoder and library versions."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical cores"
    return {"device": str(device), "device_name": name, "dtype": str(dtype).removeprefix("torch."),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "decoder": decoder_info(decoder)}


def run_profile(models: dict[str, HIComForCausalLM], *, profile_name: str, model_source: str, clips: list[Path],
                clips_source: str, prompt: Prompt, preprocessor: FramePreprocessor, settings: ProfileSettings,
                decoder: str, device: torch.device, eval_entries: list[dict] | None = None, default_frames: int = 32,
                log: Callable[[str], None] = lambda _msg: None) -> dict:
    """Profile both models and assemble profile.json's content."""
    rows = profile_models(models, clips, prompt, preprocessor, settings, decoder, device, log)
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


def ratios(rows: list[dict]) -> list[dict]:
    """baseline / HICom of every RATIO_FIELDS value, per frame count (None where HICom's value is 0)."""
    by_key = {(r["model"], r["frames"]): r for r in rows}
    out = []
    for frames in sorted({r["frames"] for r in rows}):
        hicom, base = by_key[("hicom", frames)], by_key[("llava_ov", frames)]
        out.append({"frames": frames, **{k: (base[k] / hicom[k] if hicom[k] else None) for k in RATIO_FIELDS}})
    return out


# ---------------------------------------------------------------- accuracy inputs

def load_eval_results(paths: list[str | Path]) -> list[dict]:
    """Read evaluation results.json files (as `python -m hicom evaluate` writes them); each needs a numeric
    `accuracy` in [0, 1].

    Optional: `visual_tokens` (tokens per question); the frames, from `num_frames` or `settings.frames`;
    `label` (else `benchmark`, else the file's folder name). Read before any profiling, so a wrong path
    fails in a second rather than after the measurements.
    """
    entries = []
    for path in map(Path, paths):
        data = read_json_object(path, DataError, "--eval-results: ")
        accuracy = data.get("accuracy")
        if isinstance(accuracy, bool) or not isinstance(accuracy, (int, float)) or not 0 <= accuracy <= 1:
            raise DataError(f"--eval-results: {path}: field 'accuracy' must be a number in [0, 1], got {accuracy!r}")
        settings = data.get("settings") if isinstance(data.get("settings"), dict) else {}
        counts = {"visual_tokens": data.get("visual_tokens"), "num_frames": data.get("num_frames"),
                  "settings.frames": settings.get("frames")}
        for key, value in counts.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise DataError(f"--eval-results: {path}: field {key!r} must be a positive integer, got {value!r}")
        label = data.get("label") or data.get("benchmark") or path.parent.name or path.stem
        entries.append({"path": str(path), "label": str(label), "accuracy": float(accuracy),
                        "visual_tokens": counts["visual_tokens"],
                        "num_frames": counts["num_frames"] or counts["settings.frames"], "chance": data.get("chance")})
    return entries


def resolve_tokens(entries: list[dict], hicom: HIComForCausalLM, default_frames: int) -> list[dict]:
    """Visual tokens per entry: the file's own `visual_tokens`, else the profiled HICom model's count at the
    file's `num_frames` (default: the profile's num_frames, what `evaluate` samples), recorded as assumed."""
    out = []
    for entry in entries:
        entry = dict(entry)
        if entry["visual_tokens"] is not None:
            entry["tokens_source"] = "results file"
        else:
            frames = entry["num_frames"] or default_frames
            entry["visual_tokens"] = hicom.num_visual_tokens(frames)
            entry["tokens_source"] = f"assumed: the profiled HICom model at {frames} frames"
        out.append(entry)
    return out


# ---------------------------------------------------------------- outputs

def _m(n: int) -> str:
    return f"{n / 1e6:.2f}M"


def format_table(result: dict) -> str:
    """Markdown in the shape of Table A6: components, times, throughput, tokens, FLOPs, memory; then ratios."""
    rows, env = result["rows"], result["environment"]
    memory_kind = rows[0]["peak_memory_kind"]
    lines = [
        f"# Efficiency profile: profile `{result['profile']}`",
        "",
        f"Model: {result['model_source']}. Device: {env['device']} ({env['device_name']}), dtype {env['dtype']}, "
        f"torch threads: {env['torch_threads']}. Decoder: {env['decoder']['decoder']} {env['decoder']['version']}. "
        f"Clips: {result['clips_source']}. Prompt: {result['prompt']['source']}.",
        f"Medians of {result['settings']['repeats']} repeats after {result['settings']['warmup']} warm-up; "
        f"s/video: mean over {result['settings']['samples']} questions (video loading, preprocessing, vision, "
        f"compressor, prefill and {result['settings']['max_new_tokens']} generated tokens). "
        f"Peak memory: {MEMORY_KINDS[memory_kind]}. Prefill FLOPs: FlopCounterMode; attention (in brackets) is "
        f"counted dense and grows with the square of the prefill length, the rest linearly.",
        "",
        "| model | frames | vision params | text params | compressor params | LLM params | vision ms "
        "| compressor ms (incl. text) | LLM TTFT ms | s/video | visual tokens | prefill GFLOPs (attention) "
        "| peak mem MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        p = r["params"]
        lines.append(
            f"| {MODELS[r['model']]} | {r['frames']} | {_m(p['vision'])} | {_m(p['text'])} | {_m(p['projector'])} "
            f"| {_m(p['llm'])} | {r['vision_ms']:.1f} | {r['compressor_ms']:.1f} | {r['llm_ttft_ms']:.1f} "
            f"| {r['s_per_video']:.3f} | {r['visual_tokens']} | {r['llm_prefill_flops'] / 1e9:.2f} "
            f"({r['llm_prefill_attention_flops'] / 1e9:.2f}) "
            f"| {r['peak_memory_mb']:.1f} |")
    lines += [
        "",
        "Baseline / HICom:",
        "",
        "| frames | visual tokens | LLM prefill tokens | prefill FLOPs | LLM TTFT | vision | compressor "
        "| s/video | peak mem |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for q in result["ratios"]:
        cells = ["n/a" if q[k] is None else f"{q[k]:.2f}x" for k in RATIO_TABLE_FIELDS]
        lines.append(f"| {q['frames']} | " + " | ".join(cells) + " |")
    lines += ["", f"Accuracy vs tokens: {result['accuracy_plot']}"]
    return "\n".join(lines) + "\n"


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    return buffer.getvalue()


def latency_breakdown_png(rows: list[dict]) -> bytes:
    """Stacked bars (vision / compressor / LLM TTFT, ms) per model, grouped by frame count."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(1.6 + 1.1 * len(rows), 4.2))
    ax = figure.add_subplot()
    labels = [f"{'HICom' if r['model'] == 'hicom' else 'LLaVA-OV'}\n{r['frames']} f" for r in rows]
    bottom = [0.0] * len(rows)
    for part, colour in (("vision_ms", "#4c72b0"), ("compressor_ms", "#dd8452"), ("llm_ttft_ms", "#55a868")):
        heights = [r[part] for r in rows]
        ax.bar(labels, heights, bottom=bottom, color=colour,
               label={"vision_ms": "vision encoder", "compressor_ms": "compressor (incl. text encoder)",
                      "llm_ttft_ms": "LLM time to first token"}[part])
        bottom = [b + h for b, h in zip(bottom, heights)]
    ax.set_ylabel("median ms per question")
    ax.set_title("Latency breakdown: HICom vs LLaVA-OV baseline")
    ax.legend(fontsize=8)
    return _png(figure)


def accuracy_vs_tokens_png(points: list[dict]) -> bytes:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.5, 4))
    ax = figure.add_subplot()
    ax.scatter([p["visual_tokens"] for p in points], [p["accuracy"] for p in points], color="#4c72b0")
    for p in points:
        ax.annotate(p["label"], (p["visual_tokens"], p["accuracy"]), textcoords="offset points", xytext=(4, 4),
                    fontsize=8)
    chances = {p["chance"] for p in points if isinstance(p.get("chance"), (int, float))}
    if len(chances) == 1:
        ax.axhline(chances.pop(), color="grey", linestyle="--", linewidth=1, label="chance")
        ax.legend(fontsize=8)
    ax.set_xlabel("visual tokens per question")
    ax.set_ylabel("accuracy")
    ax.set_title("Accuracy vs visual tokens")
    return _png(figure)


def write_outputs(result: dict, out_dir: str | Path) -> dict[str, Path]:
    """profile.json, table.md, latency_breakdown.png and, with eval results, accuracy_vs_tokens.png (atomic)."""
    out = Path(out_dir)
    files = {"profile.json": out / "profile.json", "table.md": out / "table.md",
             "latency_breakdown.png": out / "latency_breakdown.png"}
    atomic_write_bytes(files["profile.json"], (json.dumps(result, indent=2) + "\n").encode())
    atomic_write_bytes(files["table.md"], format_table(result).encode())
    atomic_write_bytes(files["latency_breakdown.png"], latency_breakdown_png(result["rows"]))
    if result["accuracy_vs_tokens"]:
        files["accuracy_vs_tokens.png"] = out / "accuracy_vs_tokens.png"
        atomic_write_bytes(files["accuracy_vs_tokens.png"], accuracy_vs_tokens_png(result["accuracy_vs_tokens"]))
    return files


def log_to_tracker(tracker, result: dict, files: dict[str, Path]) -> None:
    """Params (settings, environment), one metric per row field and ratio, and the output files."""
    env = result["environment"]
    tracker.log_params({"profile": result["profile"], "model_source": result["model_source"],
                        "efficiency": {k: v for k, v in result["settings"].items() if k != "clips"},
                        "efficiency.clips_source": result["clips_source"], "prompt_source": result["prompt"]["source"],
                        "device": env["device"], "dtype": env["dtype"], "torch_threads": env["torch_threads"],
                        "decoder": env["decoder"]["decoder"], "decoder_version": env["decoder"]["version"],
                        "peak_memory_kind": result["rows"][0]["peak_memory_kind"]})
    metrics = {}
    for r in result["rows"]:
        prefix = f"{r['model']}.f{r['frames']}"
        for key in ("visual_tokens", "llm_prefill_tokens", "vision_ms", "compressor_ms", "llm_ttft_ms", "load_ms",
                    "e2e_ms", "s_per_video", "llm_prefill_flops", "llm_prefill_attention_flops", "peak_memory_mb"):
            metrics[f"{prefix}.{key}"] = r[key]
        for part, n in r["params"].items():
            metrics[f"{prefix}.params.{part}"] = n
        for part, ms in r["question_parts_ms"].items():
            metrics[f"{prefix}.question_ms.{part}"] = ms
    for q in result["ratios"]:
        for key in RATIO_FIELDS:
            if q[key] is not None:
                metrics[f"ratio.f{q['frames']}.{key}"] = q[key]
    tracker.log_metrics(metrics)
    for path in files.values():
        tracker.log_artifact(path, "profile")
