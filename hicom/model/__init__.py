"""The HICom model: SigLIP towers, instruction-injected compressors, Qwen2 LLM."""
from hicom.model.build import baseline_of, build_model, make_config
from hicom.model.checkpoint import CheckpointError, load_compressor, save_compressor, save_model
from hicom.model.compressor import HIComCompressor, LlavaOVProjector, build_projector, window_indices
from hicom.model.injection import Guide, GuideInjector
from hicom.model.modeling_hicom import (IGNORE_INDEX, IMAGE_TOKEN_ID, VIDEO_TOKEN_ID, HIComConfig, HIComForCausalLM,
                                        SequenceTooLongError, VisualItem)

__all__ = [
    "baseline_of", "build_model", "make_config", "CheckpointError", "load_compressor", "save_compressor",
    "save_model", "HIComCompressor", "LlavaOVProjector", "build_projector", "window_indices", "Guide",
    "GuideInjector", "IGNORE_INDEX", "IMAGE_TOKEN_ID", "VIDEO_TOKEN_ID", "HIComConfig", "HIComForCausalLM",
    "SequenceTooLongError", "VisualItem",
]
