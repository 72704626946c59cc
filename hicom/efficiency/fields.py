"""What profile.json holds: the models compared, the parts timed, the fields of a row and of a ratio.

Free of torch, so readers of profile.json (reports) can name its fields without loading the model code.
"""
MODELS = {"hicom": "HICom", "llava_ov": "LLaVA-OV baseline"}
PARTS = ("vision", "compressor", "llm_ttft")
ROW_FIELDS = ("model", "frames", "params", "visual_tokens", "llm_prefill_tokens", "vision_ms", "compressor_ms",
              "llm_ttft_ms", "load_ms", "e2e_ms", "e2e_cpu_ms", "s_per_video", "llm_prefill_flops",
              "llm_prefill_attention_flops", "peak_memory_mb", "peak_memory_kind", "question_parts_ms", "runs_ms")
QUESTION_PARTS = ("load", "vision", "compressor", "llm", "other")
PARAM_FIELDS = ("vision", "text", "projector", "llm", "total")
RATIO_FIELDS = ("visual_tokens", "llm_prefill_tokens", "llm_prefill_flops", "llm_ttft_ms", "vision_ms",
                "compressor_ms", "e2e_ms", "e2e_cpu_ms", "s_per_video", "peak_memory_mb")
RATIO_TABLE_FIELDS = ("visual_tokens", "llm_prefill_tokens", "llm_prefill_flops", "llm_ttft_ms", "vision_ms",
                      "compressor_ms", "s_per_video", "peak_memory_mb")
MEMORY_KINDS = {
    "cuda_max_memory_allocated": "torch.cuda.max_memory_allocated over one question (weights included)",
    "cpu_peak_rss_growth": "growth of the process RSS over one question, sampled by psutil (weights excluded: "
                           "they were resident before)",
}
