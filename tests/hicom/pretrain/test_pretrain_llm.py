import dataclasses

import pytest
import torch
from transformers import Qwen2ForCausalLM

from hicom.core.errors import ConfigError
from hicom.data.synthetic import WorldConfig, generate_world
from hicom.data.tokenizer import load_tokenizer, train_tokenizer
from hicom.model.build import build_model
from hicom.pretrain.llm import pretrain_llm, world_dialogues
from hicom.pretrain.settings import LLMTrainConfig, one_cycle_warmup
from tests.tree_bytes import files_that_differ


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_profile):
    root = tmp_path_factory.mktemp("llm")
    generate_world(WorldConfig(seed=4, num_videos=30, num_frames=8, size=64), root / "w", progress=False)
    from hicom.data.tokenizer import world_texts
    tok = train_tokenizer(world_texts(root / "w"), 600, root / "tok")
    lines = []
    result = pretrain_llm(tiny_profile, root / "w", load_tokenizer(root / "tok"), root / "llm",
                          LLMTrainConfig(steps=60, batch_size=16, seq_len=64), log=lines.append)
    return root, result, lines


def test_language_model_pretraining_lowers_held_out_perplexity(trained):
    _, result, lines = trained
    assert result["perplexity_after"] < result["perplexity_before"] / 10
    assert "held-out perplexity" in lines[0]


def test_training_text_never_includes_held_out_test_scenes(trained):
    root, _, _ = trained
    import json
    test_ids = {json.loads(l)["id"] for l in (root / "w" / "mcq_test.jsonl").read_text().splitlines()}
    tok = load_tokenizer(root / "tok")
    texts = world_dialogues(root / "w", tok)
    assert texts and all("<video>" not in t and "<image>" not in t for t in texts)
    from hicom.data.mixture import read_annotations
    used = {s["id"].split("_")[0] for f in ("sft.jsonl", "sft_mcq.jsonl", "cond_pretrain.jsonl")
            for s in read_annotations(root / "w" / f)}
    assert used and used.isdisjoint(test_ids)


def test_pretrained_llm_loads_as_the_profiles_base_llm(trained, tiny_profile):
    root, _, _ = trained
    profile = dataclasses.replace(tiny_profile, llm=dataclasses.replace(tiny_profile.llm, path=str(root / "llm")))
    model = build_model(profile)
    assert torch.equal(model.language_model.lm_head.weight, Qwen2ForCausalLM.from_pretrained(root / "llm").lm_head.weight)


def test_tokenizer_larger_than_the_llm_vocab_is_refused(tiny_profile, tmp_path):
    big = train_tokenizer([f"word{i} " * 3 for i in range(3000)], 2000)
    with pytest.raises(ConfigError, match="smaller than the tokenizer"):
        pretrain_llm(tiny_profile, tmp_path, big, tmp_path / "out")


@pytest.mark.parametrize("fraction", [0.05, 0.1])  # the LLM's and the towers' warm-up
def test_every_step_count_gets_a_one_cycle_schedule_torch_can_run(fraction):
    """llm.steps=20 (towers.steps=10) made the warm-up end at step 0, and OneCycleLR divided by zero."""
    with pytest.raises(ZeroDivisionError):
        _run_one_cycle(round(1 / fraction), fraction)
    for steps in range(1, 120):
        warmup = one_cycle_warmup(steps, fraction)
        _run_one_cycle(steps, warmup)
        assert warmup == fraction or steps * fraction == pytest.approx(1)


def _run_one_cycle(steps: int, warmup: float) -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=steps, pct_start=warmup)
    for _ in range(steps):
        opt.step()
        sched.step()


def test_a_rerun_on_the_same_inputs_writes_byte_identical_outputs(trained, tiny_profile):
    """Later stages are keyed on the bytes of the LLM's outputs (flows/hashes.py, dvc.lock): a rerun that trains the
    same weights writes the same files (a wall time in pretrain_metrics.json made every rerun look changed)."""
    root, _, _ = trained
    pretrain_llm(tiny_profile, root / "w", load_tokenizer(root / "tok"), root / "llm_rerun",
                 LLMTrainConfig(steps=60, batch_size=16, seq_len=64), log=lambda _: None)
    assert (root / "llm" / "pretrain_metrics.json").is_file()
    assert files_that_differ(root / "llm", root / "llm_rerun") == []
