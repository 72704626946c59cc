import json
import re

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from transformers import Qwen2ForCausalLM, SiglipConfig, SiglipModel

from hicom.core.errors import ConfigError
from hicom.core.types import VIDEO_TOKEN_ID, VisualItem
from hicom.model.build import build_model, make_config
from hicom.model.checkpoint import (
    CheckpointError,
    load_compressor,
    save_compressor,
    save_model,
)
from hicom.model.compressor import HIComCompressor
from hicom.model.modeling_hicom import HIComForCausalLM
from hicom.model.settings import compressor_from_preset
from hicom.params import PARAMS_FILE, Params

IMAGE = Params.load().profile("tiny").vision.config["image_size"]  # the tiny towers' input side


def sample():
    g = torch.Generator().manual_seed(3)
    ids = torch.tensor([[4, VIDEO_TOKEN_ID, 5, 6]])
    return ids, [VisualItem(torch.randn(8, 3, IMAGE, IMAGE, generator=g), "video", torch.randint(2, 1000, (32,), generator=g))]


def test_whole_model_save_then_load_gives_the_same_outputs_to_1e_6(tiny_profile, tmp_path):
    model = build_model(tiny_profile).eval()
    save_model(model, tmp_path / "model")
    assert (tmp_path / "model" / "model.safetensors").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind
    loaded = HIComForCausalLM.from_pretrained(tmp_path / "model").eval()
    ids, items = sample()
    with torch.no_grad():  # equal to the last bits only without the tiny profile's standardiser (see below)
        assert torch.allclose(model(input_ids=ids, visual_items=items).logits,
                              loaded(input_ids=ids, visual_items=items).logits, rtol=0, atol=1e-6)
    assert loaded.config.compressor == model.config.compressor


def test_compressor_checkpoint_round_trip_is_exact(tiny_profile, tmp_path):
    a = build_model(tiny_profile).eval()
    torch.manual_seed(1)
    b = build_model(tiny_profile).eval()
    b.vision_tower.load_state_dict(a.vision_tower.state_dict())
    b.text_tower.load_state_dict(a.text_tower.state_dict())
    b.language_model.load_state_dict(a.language_model.state_dict())
    ids, items = sample()
    with torch.no_grad():
        assert not torch.equal(a(input_ids=ids, visual_items=items).logits, b(input_ids=ids, visual_items=items).logits)
        save_compressor(a.projector, tmp_path / "stage1")
        load_compressor(b.projector, tmp_path / "stage1")
        assert torch.equal(a(input_ids=ids, visual_items=items).logits, b(input_ids=ids, visual_items=items).logits)
    assert json.loads((tmp_path / "stage1" / "compressor.json").read_text())["compressor"]["kind"] == "hicom"


def test_compressor_checkpoint_with_a_wrong_key_fails_naming_it(tiny_profile, tmp_path):
    model = build_model(tiny_profile)
    save_compressor(model.projector, tmp_path)
    state = load_file(tmp_path / "compressor.safetensors")
    state["global_compressor.querry"] = state.pop("global_compressor.query")
    save_file(state, tmp_path / "compressor.safetensors")
    with pytest.raises(CheckpointError, match=r"missing keys \['global_compressor.query'\], "
                                              r"unexpected keys \['global_compressor.querry'\]"):
        load_compressor(model.projector, tmp_path)


def test_compressor_checkpoint_with_another_shape_or_config_fails(tiny_profile, tmp_path):
    model = build_model(tiny_profile)
    save_compressor(model.projector, tmp_path)
    state = load_file(tmp_path / "compressor.safetensors")
    state["global_compressor.query"] = state["global_compressor.query"][:4]
    save_file(state, tmp_path / "bad.safetensors")
    queries = tuple(model.projector.global_compressor.query.shape)
    with pytest.raises(CheckpointError, match=re.escape(f"global_compressor.query: checkpoint (4, 64) vs model {queries}")):
        load_compressor(model.projector, tmp_path / "bad.safetensors")
    other = HIComCompressor(compressor_from_preset("paper", {"global": {"head_dim": 32, "num_queries": queries[0],
                                                                         "pos_embed": "sum"},
                                                              "standardize": True}),
                            64, 64, 64)
    with pytest.raises(CheckpointError, match="pos_embed"):
        load_compressor(other, tmp_path)


def test_missing_or_corrupt_compressor_checkpoint_is_named(tiny_profile, tmp_path):
    model = build_model(tiny_profile)
    with pytest.raises(CheckpointError, match="not found"):
        load_compressor(model.projector, tmp_path / "nope.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.safetensors: cannot read"):
        load_compressor(model.projector, tmp_path / "junk.safetensors")


def test_release_projector_file_with_model_prefix_loads(tmp_path):
    cfg = compressor_from_preset("release", {"global": {"head_dim": 16}})
    src, dst = HIComCompressor(cfg, 64, 64, 32), HIComCompressor(cfg, 64, 64, 32)
    torch.save({f"model.mm_projector.{k}": v for k, v in src.state_dict().items()}, tmp_path / "mm_projector.bin")
    load_compressor(dst, tmp_path)
    assert sorted(src.state_dict()) == ['global_compressor.attn_layer.k_proj.bias', 'global_compressor.attn_layer.k_proj.weight',
                                        'global_compressor.attn_layer.out_proj.bias', 'global_compressor.attn_layer.out_proj.weight',
                                        'global_compressor.attn_layer.q_proj.bias', 'global_compressor.attn_layer.q_proj.weight',
                                        'global_compressor.attn_layer.v_proj.bias', 'global_compressor.attn_layer.v_proj.weight',
                                        'global_compressor.query', 'global_compressor.readout.0.bias',
                                        'global_compressor.readout.0.weight', 'global_compressor.readout.2.bias',
                                        'global_compressor.readout.2.weight', 'local_compressor.readout.0.bias',
                                        'local_compressor.readout.0.weight', 'local_compressor.readout.2.bias',
                                        'local_compressor.readout.2.weight']
    assert all(torch.equal(src.state_dict()[k], v) for k, v in dst.state_dict().items())


def _profile_with_paths(tmp_path, tiny_profile, siglip_dir, qwen_dir, **llm_override):
    params = yaml.safe_load(PARAMS_FILE.read_text())
    model = params["profiles"]["tiny"]["model"]
    model["vision"]["path"] = str(siglip_dir)
    model["text"]["path"] = str(siglip_dir)
    model["llm"]["path"] = str(qwen_dir)
    model["llm"]["config"].update(llm_override)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return Params.load(tmp_path / "params.yaml").profile("tiny")


def test_towers_load_from_local_pretrained_directories(tiny_profile, tmp_path):
    config = make_config(tiny_profile)
    siglip = SiglipModel(SiglipConfig(vision_config=config.vision_config.to_dict(),
                                      text_config=config.text_tower_config.to_dict()))
    qwen = Qwen2ForCausalLM(config.llm_config)
    siglip.save_pretrained(tmp_path / "siglip")
    qwen.save_pretrained(tmp_path / "qwen")
    model = build_model(_profile_with_paths(tmp_path, tiny_profile, tmp_path / "siglip", tmp_path / "qwen"))
    assert torch.equal(model.vision_tower.head.probe, siglip.vision_model.head.probe)
    assert torch.equal(model.text_tower.head.weight, siglip.text_model.head.weight)
    assert torch.equal(model.language_model.lm_head.weight, qwen.lm_head.weight)
    assert all(p.device.type == "cpu" for p in model.parameters())
    with pytest.raises(ConfigError, match="profile says hidden_size=128 but the checkpoint has hidden_size=64"):
        build_model(_profile_with_paths(tmp_path, tiny_profile, tmp_path / "siglip", tmp_path / "qwen",
                                        hidden_size=128))


def test_missing_pretrained_directory_is_named(tiny_profile, tmp_path):
    profile = _profile_with_paths(tmp_path, tiny_profile, tmp_path / "no-siglip", tmp_path / "no-qwen")
    with pytest.raises(ConfigError, match="no-siglip: pretrained directory not found"):
        build_model(profile)


def test_fitted_feature_standardisation_travels_with_the_compressor_and_the_whole_model(tiny_profile, tmp_path):
    assert tiny_profile.compressor.standardize  # the tiny profile standardises its towers' features
    a = build_model(tiny_profile).eval()
    g = torch.Generator().manual_seed(5)
    dim = a.config.vision_config.hidden_size
    a.projector.standardizer.fit([5 + 2 * torch.randn(8, 9, 9, dim, generator=g) for _ in range(2)])
    b = build_model(tiny_profile).eval()
    save_compressor(a.projector, tmp_path / "stage1")
    load_compressor(b.projector, tmp_path / "stage1")
    save_model(a, tmp_path / "model")
    c = HIComForCausalLM.from_pretrained(tmp_path / "model").eval()
    for other in (b, c):
        assert other.projector.standardizer.fitted
        for name in ("mean", "std"):
            assert torch.equal(getattr(other.projector.standardizer, name), getattr(a.projector.standardizer, name))
    ids, items = sample()
    # Not bit-equal: with the standardiser's buffers in the model the loaded copy's visual tokens differ from the
    # saved one's by about 1e-8 (measured; also while it is the identity, unfitted). Cause not found.
    with torch.no_grad():
        assert torch.allclose(a(input_ids=ids, visual_items=items).logits, c(input_ids=ids, visual_items=items).logits,
                              rtol=0, atol=1e-6)
