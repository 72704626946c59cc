"""The HICom model: SigLIP towers, instruction-injected compressors, Qwen2 LLM.

configuration_hicom (configs, presets, profiles), modeling_hicom (the transformers model), compressor and
injection (the projectors), build (a model from a profile), checkpoint (saving and strict loading).
Import from the module that defines a name; this package runs nothing on import.
"""
