"""What the measurements run on: the prompt, the clips, and the baseline counterpart of a HICom model."""
from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from hicom.core.errors import ConfigError
from hicom.core.types import VIDEO_TOKEN_ID
from hicom.data.conversation import encode_prompt, extract_guide, tokenise_guides
from hicom.data.synthetic import make_scene, write_video
from hicom.efficiency.settings import ClipSettings
from hicom.model.compressor import build_projector
from hicom.model.configuration_hicom import HIComConfig
from hicom.model.modeling_hicom import HIComForCausalLM
from hicom.model.settings import CompressorConfig, ModelProfile

# One representative multiple-choice question (the synthetic world's format) for tokenised prompts.
EFFICIENCY_QUESTION = ("Which object appears late in the video?\nA. the red circle\nB. the blue square\n"
                       "C. the green triangle\nD. the white cross\n"
                       "Answer with the option's letter from the given choices directly.")


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
    """EFFICIENCY_QUESTION through the model's chat template and, for the guide, the SigLIP tokenizer."""
    guide = None
    if guide_tokenizer is not None:
        guide = tokenise_guides(guide_tokenizer, [extract_guide(EFFICIENCY_QUESTION)], guide_max_length)[0]
    return Prompt(encode_prompt(tokenizer, EFFICIENCY_QUESTION, "video").unsqueeze(0), guide,
                  "tokenised multiple-choice question")


def render_clips(settings: ClipSettings, out_dir: Path) -> list[Path]:
    """A few synthetic scenes as lossless mp4 files, read back through hicom.data.video like any video."""
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
