"""hicom: the HICom video-LLM library (model, data, training, evaluation, profiling)."""
