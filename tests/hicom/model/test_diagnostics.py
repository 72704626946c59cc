import pytest
import torch

from hicom.core.types import VisualItem
from hicom.model.build import build_model
from hicom.model.diagnostics import global_token_spread, relative_spread


def test_relative_spread_is_zero_for_identical_tokens_and_scale_free():
    same = torch.ones(16, 8)
    assert relative_spread(same) == 0.0
    tokens = torch.randn(16, 8)
    assert relative_spread(tokens) > 0
    assert relative_spread(7.5 * tokens) == pytest.approx(relative_spread(tokens), rel=1e-5)


def test_relative_spread_names_a_shape_it_cannot_measure():
    with pytest.raises(ValueError, match=r"\(1, 8\)"):
        relative_spread(torch.ones(1, 8))


@pytest.mark.parametrize("preset,moves", [("paper", True), ("unconditional", False)])
def test_global_tokens_move_with_the_question_only_when_the_instruction_is_injected(tiny_profile, preset, moves):
    from hicom.model.settings import compressor_from_preset

    sizes = tiny_profile.compressor
    compressor = compressor_from_preset(preset, {
        "local": {"temporal_kernel": sizes.local.temporal_kernel, "spatial_kernel": sizes.local.spatial_kernel},
        "global": {"num_queries": sizes.global_.num_queries, "head_dim": sizes.global_.head_dim}})
    model = build_model(tiny_profile, compressor=compressor).eval()
    size = model.config.vision_config.image_size
    items = [VisualItem(torch.rand(4, 3, size, size), "video", torch.randint(2, 1000, (3, 12))) for _ in range(2)]
    spread = global_token_spread(model, items)
    assert spread["global_tokens_spread"] > 0
    assert (spread["global_tokens_question_spread"] > 1e-4) is moves
