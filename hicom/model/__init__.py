"""The HICom model: SigLIP towers, instruction-injected compressors, Qwen2 LLM."""
from hicom.model.build import baseline_of, build_model, make_config
from hicom.model.checkpoint import (
    CheckpointError,
    load_compressor,
    save_compressor,
    save_model,
)
from hicom.model.compressor import (
    HIComCompressor,
    LlavaOVProjector,
    build_projector,
    window_indices,
)
from hicom.model.injection import Guide, GuideInjector
from hicom.model.modeling_hicom import (
    HIComConfig,
    HIComForCausalLM,
    SequenceTooLongError,
)

__all__ = [
    "baseline_of", "build_model", "make_config", "CheckpointError", "load_compressor", "save_compressor",
    "save_model", "HIComCompressor", "LlavaOVProjector", "build_projector", "window_indices", "Guide",
    "GuideInjector", "HIComConfig", "HIComForCausalLM",
    "SequenceTooLongError",
]
