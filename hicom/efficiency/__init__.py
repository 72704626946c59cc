"""Efficiency measurement (Table A6): HICom against the LLaVA-OneVision baseline, component by component.

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

Modules, by job: `settings` (params.yaml `efficiency:`), `inputs` (prompt, clips, the baseline
counterpart), `measure` (timers, peak memory, part clock), `flops`, `accuracy` (evaluation results
beside the measurements), `run` (measure_efficiency: both models at every frame count), `fields`
(what profile.json holds), `tables` (ratios, table.md) and `outputs` (files, MLflow); plots are in
hicom.plots, shared with the pipeline report.
"""
