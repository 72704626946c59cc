import dataclasses
import json

import pytest
import torch
from transformers import SiglipTextModel, SiglipVisionModel

from hicom.core.errors import ConfigError
from hicom.data.synthetic import WorldConfig, generate_world
from hicom.data.tokenizer import train_tokenizer
from hicom.data.video import FramePreprocessor
from hicom.model.build import build_model
from hicom.pretrain.settings import TowerTrainConfig
from hicom.pretrain.towers import pretrain_towers


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_profile):
    root = tmp_path_factory.mktemp("towers")
    generate_world(WorldConfig(seed=1, num_videos=80, num_frames=8, size=64), root / "w", progress=False)
    from hicom.data.tokenizer import world_texts
    tok = train_tokenizer(world_texts(root / "w"), 600)
    lines = []
    result = pretrain_towers(tiny_profile, root / "w", tok, root / "towers",
                             TowerTrainConfig(steps=200, batch_size=32, eval_pairs=32), log=lines.append)
    return root, result, lines


def test_sigmoid_pretraining_makes_text_to_frame_retrieval_clearly_beat_chance(trained):
    _, result, lines = trained
    assert result["retrieval_top1_after"] >= 4 * result["chance"], result
    assert result["loss_last"] < result["loss_first"]
    assert "held-out frames" in lines[0] and "chance" in lines[0]


def test_pretrained_towers_load_as_a_local_siglip_checkpoint_into_the_model(trained, tiny_profile):
    root, _, _ = trained
    towers = root / "towers"
    assert json.loads((towers / "pretrain_metrics.json").read_text())["steps"] == 200
    FramePreprocessor.from_pretrained(towers)
    profile = dataclasses.replace(tiny_profile, vision=dataclasses.replace(tiny_profile.vision, path=str(towers)),
                                  text=dataclasses.replace(tiny_profile.text, path=str(towers)))
    model = build_model(profile)
    assert torch.equal(model.vision_tower.head.probe, SiglipVisionModel.from_pretrained(towers).head.probe)
    assert torch.equal(model.text_tower.head.weight, SiglipTextModel.from_pretrained(towers).head.weight)


def test_tokenizer_larger_than_the_profiles_text_vocab_is_refused(tiny_profile, tmp_path):
    big = train_tokenizer([f"word{i} " * 3 for i in range(3000)], 2000)
    with pytest.raises(ConfigError, match="does not fit the tokenizer"):
        pretrain_towers(tiny_profile, tmp_path, big, tmp_path / "out")
