"""Tokenizers: a small byte-level BPE trained on our own text (tiny profile), or the model's own.

The tiny profile has no downloadable tokenizer, so we train one with the `tokenizers` library on
the generated text and save it as a transformers tokenizer with Qwen2's special tokens and
chat format. Real profiles load the LLM's and SigLIP's tokenizers from their local directories.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from hicom.data.mixture import read_annotations
from hicom.data.synthetic import TRAIN_FILES

PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = [PAD_TOKEN, IM_START, IM_END]
DEFAULT_SYSTEM = "You are a helpful assistant."

# Qwen2-style chat format: a system turn (default one when absent), then user/assistant turns.
CHAT_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\n" + DEFAULT_SYSTEM + "<|im_end|>\n' }}"
    "{% endif %}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: str | Path | None = None,
                    model_max_length: int = 4096) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `texts`; save it (transformers format) when out_dir is given."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(texts, trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token=PAD_TOKEN, eos_token=IM_END,
                                  additional_special_tokens=[IM_START], model_max_length=model_max_length)
    tok.chat_template = CHAT_TEMPLATE
    if out_dir is not None:
        tok.save_pretrained(out_dir)
    return tok


def load_tokenizer(path: str | Path):
    """A tokenizer from a local directory (ours, Qwen's or SigLIP's); never from a hub."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: tokenizer directory not found")
    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


def world_texts(world: Path) -> Iterable[str]:
    """Every caption, question and answer of a synthetic world's training files (never the held-out test's)."""
    for name in TRAIN_FILES:
        for sample in read_annotations(world / name):
            for turn in sample["conversations"]:
                yield turn["value"].replace("<video>", "").replace("<image>", "")
