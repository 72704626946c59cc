"""Tiny pre-training: stands in for downloading SigLIP and Qwen2 when the tiny profile runs offline.

`towers` trains the tiny SigLIP vision and text towers contrastively on synthetic frames and captions;
`llm` trains the tiny Qwen2 on the synthetic world's chat-formatted text. Both read the synthetic
world (hicom.data) and save checkpoints that load like downloaded ones (hicom.model), which is why
they live above both packages rather than inside the model.
"""
