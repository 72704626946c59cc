import itertools

import pytest
import torch

from hicom.core.errors import ConfigError
from hicom.model.compressor import (
    CrossAttention,
    HIComCompressor,
    LlavaOVProjector,
    position_embedding_3d,
)
from hicom.model.injection import Guide
from hicom.model.settings import CompressorConfig, Injection, compressor_from_preset

C, TEXT, D, G = 64, 48, 40, 8  # vision width, text width (!= C, exercises the projection), LLM width, grid


def make(preset="paper", **overrides) -> HIComCompressor:
    cfg = compressor_from_preset(preset, {"global": {"num_queries": 6, "head_dim": 16}, **overrides})
    return HIComCompressor(cfg, C, TEXT, D).eval()


def guide(seed: int) -> Guide:
    g = torch.Generator().manual_seed(seed)
    return Guide(pooled=torch.randn(TEXT, generator=g), tokens=torch.randn(5, TEXT, generator=g),
                 mask=torch.tensor([True, True, True, False, False]))


def features(t=8):
    return torch.randn(t, G, G, C), torch.randn(t, G, G, C)


@pytest.mark.parametrize("local_mode,global_mode", list(itertools.product(["direct", "coarse", "fine"], repeat=2)))
def test_injected_instruction_changes_the_compressed_tokens(local_mode, global_mode):
    comp = make(local={"injection": local_mode}, **{"global": {"injection": global_mode, "num_queries": 6,
                                                               "head_dim": 16}})
    f, e = features()
    with torch.no_grad():
        a, b = comp(f, e, guide(1)), comp(f, e, guide(2))
    n_local = 2 * 3 * 3
    assert not torch.allclose(a[:n_local], b[:n_local]), "local tokens ignore the instruction"
    assert not torch.allclose(a[n_local:], b[n_local:]), "global tokens ignore the instruction"


def test_injection_off_ignores_the_instruction():
    comp = make("unconditional")
    f, _ = features()
    with torch.no_grad():
        assert torch.equal(comp(f, None, guide(1)), comp(f, None, guide(2)))
        assert torch.equal(comp(f, None, guide(1)), comp(f, None, None))


def test_paper_preset_gives_distinct_global_tokens_release_preset_identical_ones():
    f, e = features()
    with torch.no_grad():
        paper = make("paper")(f, e, guide(1))[-6:]
        release = make("release")(f, e, guide(1))[-6:]
    assert not torch.allclose(paper, paper[:1].expand_as(paper))
    assert torch.allclose(release, release[:1].expand_as(release), atol=1e-6)


@pytest.mark.parametrize("local_mode,global_mode,grouping", [
    *[(lm, gm, True) for lm, gm in itertools.product(["direct", "coarse", "fine"], repeat=2)],
    ("off", "coarse", True), ("coarse", "off", True), ("coarse", "fine", False),
])
def test_k_stacked_guides_compress_exactly_as_each_guide_alone(local_mode, global_mode, grouping):
    comp = make(local={"injection": local_mode, "grouping": grouping},
                **{"global": {"injection": global_mode, "num_queries": 6, "head_dim": 16}})
    f, e = features()
    alone = [guide(seed) for seed in (1, 2, 3)]
    alone[1].mask = torch.tensor([True, True, True, True, True])  # each guide keeps its own padding
    stacked = Guide(torch.stack([g.pooled for g in alone]), torch.stack([g.tokens for g in alone]),
                    torch.stack([g.mask for g in alone]))
    with torch.no_grad():
        together = comp(f, e, stacked)
        one_by_one = torch.stack([comp(f, e, g) for g in alone])
        second_alone = comp(f, e, stacked[1])
    assert together.shape == (3, comp.num_tokens(8, G, G), D)
    torch.testing.assert_close(together, one_by_one, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(second_alone, one_by_one[1], rtol=1e-5, atol=1e-6)


def reference_attention(layer: CrossAttention, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """The textbook multi-head cross-attention: project, split heads, softmax(q k^T / sqrt(d)) v, merge, project."""
    b, k, n, dim = query.shape
    d = dim // layer.heads
    q = layer.q_proj(query).reshape(b, k * n, layer.heads, d).transpose(1, 2)
    key = layer.k_proj(context).reshape(b, -1, layer.heads, d).transpose(1, 2)
    value = layer.v_proj(context).reshape(b, -1, layer.heads, d).transpose(1, 2)
    out = (q @ key.transpose(-1, -2) / d ** 0.5).softmax(-1) @ value
    return layer.out_proj(out.transpose(1, 2).reshape(b, k, n, dim))


# (width, head width, guides per item, queries): the first four fold the projections into the queries
# (k n (heads - 1) < width; one head always), the last three project the context (many guides; many queries)
@pytest.mark.parametrize("dim,head_dim,k,n", [(64, 32, 1, 16), (64, 16, 1, 6), (96, 32, 2, 8), (64, 64, 1, 16),
                                              (64, 32, 8, 16), (32, 8, 1, 32), (64, 16, 1, 32)])
def test_cross_attention_equals_the_textbook_formula_in_value_and_gradient_in_either_form(dim, head_dim, k, n):
    torch.manual_seed(0)
    layer = CrossAttention(dim, head_dim)
    for p in layer.parameters():  # non-zero biases, so the key bias's logit and the value bias are exercised
        torch.nn.init.normal_(p, std=0.2)
    query = torch.randn(3, k, n, dim, requires_grad=True)
    context = torch.randn(3, 50, dim)
    grads = []
    for attend in (layer, lambda q, c: reference_attention(layer, q, c)):
        out = attend(query, context)
        weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
        grads.append((out, *torch.autograd.grad((out * weight).sum(), [query, *layer.parameters()])))
    # rounding scales with the largest entry (k_proj.bias's gradient is zero but for rounding, in both forms)
    atol = 1e-5 * max(1.0, *(t.abs().max().item() for t in grads[1]))
    for name, got, want in zip(["output", "query", *dict(layer.named_parameters())], *grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=atol, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("frames", [1, 2, 3, 5, 6, 9, 32, 33])
def test_token_count_matches_grid_for_any_frame_count(frames):
    comp = make()
    f, e = features(frames)
    with torch.no_grad():
        out = comp(f, e, guide(0))
    kt = 1 if frames == 1 else 4
    assert out.shape == (-(-frames // kt) * 3 * 3 + 6, D)
    assert comp.num_tokens(frames, G, G) == out.shape[0]


def test_image_mode_uses_temporal_kernel_one():
    comp = make()
    f, e = features(4)
    with torch.no_grad():
        assert comp(f, e, guide(0), is_image=True).shape[0] == 4 * 9 + 6


def test_without_grouping_each_query_sees_the_whole_clip():
    grouped = make("unconditional")
    ungrouped = make("unconditional", local={"grouping": False})
    ungrouped.load_state_dict(grouped.state_dict())
    f = torch.zeros(8, G, G, C)
    f[-1, -1, -1] = 5.0  # a token only the last group contains
    with torch.no_grad():
        first_grouped = grouped(f)[0]
        first_ungrouped = ungrouped(f)[0]
        first_grouped_empty = grouped(torch.zeros_like(f))[0]
    assert torch.allclose(first_grouped, first_grouped_empty)  # group 0 cannot see the last token
    assert not torch.allclose(first_ungrouped, first_grouped_empty)


def test_split_concat_position_embedding_distinguishes_axes_the_summed_one_does_not():
    split = position_embedding_3d(4, 4, 4, 64, "split_concat")
    summed = position_embedding_3d(4, 4, 4, 64, "sum")
    assert torch.allclose(summed[1, 2, 3], summed[3, 2, 1])
    assert not torch.allclose(split[1, 2, 3], split[3, 2, 1])
    assert split.shape == summed.shape == (4, 4, 4, 64)


def test_baseline_pools_video_frames_two_by_two_and_keeps_images_whole():
    proj = LlavaOVProjector(CompressorConfig(kind="llava_ov", local=None, global_=None), C, D)
    with torch.no_grad():
        assert proj(torch.randn(3, 27, 27, C)).shape == (3 * 14 * 14, D)
        assert proj(torch.randn(1, 27, 27, C), is_image=True).shape == (729, D)


@pytest.mark.parametrize("bad,message", [
    (torch.randn(0, G, G, C), "zero frames"),
    (torch.randn(G, G, C), "rank 4"),
    (torch.randn(2, 1, 1, G, G, C), "rank 4"),
    (torch.randn(2, G, G, C + 1), "channels"),
    (torch.randn(2, 0, G, G, C), "zero frames"),
    (torch.randn(0, 2, G, G, C), "zero items"),
    (torch.randn(2, 2, G, G, C + 1), "channels"),
])
@pytest.mark.parametrize("kind", ["hicom", "llava_ov"])
def test_bad_feature_tensors_are_rejected_with_their_shape(bad, message, kind):
    projector = make() if kind == "hicom" else LlavaOVProjector(CompressorConfig(kind="llava_ov", local=None,
                                                                                 global_=None), C, D)
    with pytest.raises(ValueError, match=message) as info:
        projector(bad, None, guide(0))
    assert str(tuple(bad.shape)) in str(info.value)


def test_features_of_several_items_need_per_item_guides_and_the_shapes_are_named():
    comp = make()
    f = torch.randn(2, 1, G, G, C)
    with pytest.raises(ValueError, match=r"2 items \(shape \(2, 1, 8, 8, 64\)\).*pooled shape \(48,\)"):
        comp(f, f, guide(0))  # one item's guide for two items
    three = Guide.stack([guide(1), guide(2), guide(3)])
    with pytest.raises(ValueError, match=r"2 items .*pooled shape \(3, 1, 48\)"):
        comp(f, f, three)
    with pytest.raises(ValueError, match=r"per-item guides \(pooled \(3, 1, 48\)\).*got shape \(1, 8, 8, 64\)"):
        comp(f[0], f[0], three)
    with pytest.raises(ValueError, match=r"embeds: shape \(2, 1, 8, 8, 64\) differs from features \(2, 2, 8, 8, 64\)"):
        comp(torch.randn(2, 2, G, G, C), f, Guide.stack([guide(1), guide(2)]))
    with pytest.raises(ValueError, match=r"guide 1's pooled has shape \(2, 48\), guide 0's \(1, 48\)"):
        Guide.stack([guide(1), Guide(torch.stack([guide(2).pooled, guide(3).pooled]))])


def test_guided_compressor_without_an_instruction_says_so():
    f, e = features()
    with pytest.raises(ValueError, match="needs an instruction"):
        make()(f, e, None)


def test_unknown_injection_mode_names_the_field_and_value():
    with pytest.raises(ConfigError, match=r"compressor.global.injection: unknown injection mode 'film'"):
        compressor_from_preset("paper", {"global": {"injection": "film"}})
    with pytest.raises(ConfigError, match="unknown preset 'papr'"):
        compressor_from_preset("papr")
    with pytest.raises(ConfigError, match=r"unknown field\(s\) \['kernel'\]"):
        compressor_from_preset("paper", {"local": {"kernel": 3}})


def test_injection_parameters_are_exactly_the_injector_modules():
    comp = make()
    by_name = {id(p) for n, p in comp.named_parameters() if "guide_injector" in n}
    injectors = {id(p) for m in (comp.local_compressor, comp.global_compressor) for p in m.guide_injector.parameters()}
    assert by_name == injectors and by_name
    # direct injection with equal text and vision widths has no parameters at all (the release's case)
    same_width = HIComCompressor(compressor_from_preset("release", {"global": {"head_dim": 16}}), C, C, D)
    assert Injection.DIRECT is same_width.cfg.local.injection
    assert not [n for n, _ in same_width.named_parameters() if "guide_injector" in n]


MODES = ["off", "direct", "coarse", "fine"]


@pytest.mark.parametrize("local_mode,global_mode", list(itertools.product(MODES, repeat=2)))
def test_every_trainable_parameter_gets_a_gradient_when_the_text_width_differs_from_the_vision_width(
        local_mode, global_mode):
    assert TEXT != C
    comp = make(local={"injection": local_mode}, **{"global": {"injection": global_mode, "num_queries": 6,
                                                               "head_dim": 16}}).train()
    f, e = features()
    comp(f, e, guide(1)).square().mean().backward()
    # direct injection replaces the global queries by the instruction, so the learnable ones go unread
    unread = {"global_compressor.query"} if global_mode == "direct" else set()
    without = [n for n, p in comp.named_parameters()
               if n not in unread and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not without, f"parameters without a gradient: {without}"


def shared_component_features(dim: int, items: int = 3, seed: int = 0) -> list[torch.Tensor]:
    """Patch features as the tiny towers give them: one large component shared by every patch of every
    clip, plus per-patch variation of a different size in each channel."""
    g = torch.Generator().manual_seed(seed)
    shared = 10 * torch.randn(dim, generator=g)
    scale = torch.rand(dim, generator=g) * 2 + 0.1
    return [shared + scale * torch.randn(8, G, G, dim, generator=g) for _ in range(items)]


@pytest.mark.parametrize("dim", [16, 64, 96])
def test_fitted_standardizer_gives_each_channel_zero_mean_and_unit_spread_at_any_width(dim):
    from hicom.model.compressor import FeatureStandardizer
    standardizer = FeatureStandardizer(dim)
    features = shared_component_features(dim)
    assert torch.equal(standardizer(features[0]), features[0])  # unfitted: the identity
    info = standardizer.fit(features)
    assert info["items"] == 3 and info["patches"] == 3 * 8 * G * G and bool(standardizer.fitted)
    out = torch.cat([standardizer(f).reshape(-1, dim) for f in features])
    assert out.mean(0).abs().max() < 1e-4
    assert torch.allclose(out.std(0), torch.ones(dim), atol=1e-4)
    with pytest.raises(ValueError, match="channels"):
        standardizer.fit([torch.randn(2, G, G, dim + 1)])
    with pytest.raises(ValueError, match="at least one"):
        standardizer.fit([])


@pytest.mark.parametrize("kind", ["hicom", "llava_ov"])
def test_standardize_makes_the_compressor_tokens_differ_from_clip_to_clip(kind):
    """The reason for the option: with a large shared component, two clips' tokens are nearly alike until the
    statistics are fitted; after fitting they differ more than twice as much, relative to their norm."""
    cfg = compressor_from_preset("unconditional", {"global": {"num_queries": 6, "head_dim": 16}, "kind": kind,
                                                   "standardize": True})
    torch.manual_seed(0)
    projector = (HIComCompressor(cfg, C, TEXT, D) if kind == "hicom" else LlavaOVProjector(cfg, C, D)).eval()
    a, b = shared_component_features(C, items=2)

    def relative_difference():
        with torch.no_grad():
            ta, tb = projector(a), projector(b)
        return ((ta - tb).norm(dim=-1) / ta.norm(dim=-1)).mean().item()

    before = relative_difference()
    projector.standardizer.fit([a, b])
    after = relative_difference()
    assert after > 2 * before, (before, after)


def test_standardize_off_adds_no_tensors_and_no_config_key_so_release_checkpoints_still_load():
    off = make()
    assert not [k for k in off.state_dict() if k.startswith("standardizer.")]
    assert "standardize" not in off.cfg.to_dict()
    on = make(standardize=True)
    assert {k for k in on.state_dict() if k.startswith("standardizer.")} == {
        "standardizer.mean", "standardizer.std"}
    assert CompressorConfig.from_dict(on.cfg.to_dict()) == on.cfg
    with pytest.raises(ConfigError, match="compressor.standardize"):
        CompressorConfig.from_dict({"standardize": "yes"})


# -- several items in one call ------------------------------------------------------------------------------------
B = 3  # items per batched call


def item_guide(item: int, k: int) -> Guide:
    """Item `item`'s guides: a single Guide (k = 1) or k stacked ones, each with its own padding."""
    alone = [guide(100 * item + j) for j in range(k)]
    for j, g in enumerate(alone):
        g.mask = torch.arange(5) < 5 - (item + j) % 3
    return alone[0] if k == 1 else Guide(torch.stack([g.pooled for g in alone]), torch.stack([g.tokens for g in alone]),
                                         torch.stack([g.mask for g in alone]))


def item_features(frames: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, frames, G, G, C, generator=g), torch.randn(B, frames, G, G, C, generator=g)


def grads(module: torch.nn.Module) -> dict[str, torch.Tensor | None]:
    out = {n: None if p.grad is None else p.grad.clone() for n, p in module.named_parameters()}
    module.zero_grad(set_to_none=True)
    return out


def run_items(projector, f, e, guides, is_image):
    """(one call on the B items, the B items one by one stacked), each with its parameter gradients for a
    sum-of-outputs loss."""
    projector.zero_grad(set_to_none=True)
    together = projector(f, e, None if guides is None else Guide.stack(guides), is_image=is_image)
    together.sum().backward()
    grads_together = grads(projector)
    alone = []
    for i in range(f.shape[0]):
        out = projector(f[i], None if e is None else e[i], None if guides is None else guides[i], is_image=is_image)
        out.sum().backward()
        alone.append(out if guides is None or guides[i].batched else out[None])  # (k, N, D) with guides
    return (together, grads_together), (torch.stack(alone), grads(projector))


def as_double(guide: Guide) -> Guide:
    return Guide(guide.pooled.double(), None if guide.tokens is None else guide.tokens.double(), guide.mask)


def assert_batched_equals_alone(projector, f, e, guides, is_image=False):
    """Outputs and parameter gradients (loss: the sum of the outputs) of one call on B items equal B calls.

    Outputs are compared at float32, as trained; gradients at float64: a sum-of-outputs loss gives
    gradients of size ~10-100 summed over thousands of terms, whose float32 rounding (~1e-6 relative) alone
    exceeds atol 1e-5, while a wrong batching (one item's keys or guide reaching another) changes them by far
    more."""
    (together, _), (alone, _) = run_items(projector, f, e, guides, is_image)
    assert together.shape == alone.shape
    assert torch.allclose(together, alone, atol=1e-5), (together - alone).abs().max()
    projector.double()
    try:
        (together, grads_together), (alone, grads_alone) = run_items(
            projector, f.double(), None if e is None else e.double(),
            None if guides is None else [as_double(g) for g in guides], is_image)
    finally:
        projector.float()
    assert torch.allclose(together, alone, atol=1e-5)
    assert grads_together.keys() == grads_alone.keys()
    for name, g in grads_together.items():
        assert (g is None) == (grads_alone[name] is None), name
        if g is not None:
            assert torch.allclose(g, grads_alone[name], atol=1e-5), (name, (g - grads_alone[name]).abs().max())


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("preset,local_mode,global_mode", [
    ("paper", "direct", "coarse"), ("release", "direct", "direct"), ("unconditional", "off", "off"),
    ("paper", "fine", "fine"), ("paper", "coarse", "coarse"), ("paper", "off", "fine"), ("paper", "fine", "off"),
    ("release", "coarse", "fine"),
])
def test_items_compressed_in_one_call_equal_each_item_alone_for_every_injection_mode(preset, local_mode, global_mode,
                                                                                     k):
    comp = make(preset, local={"injection": local_mode},
                **{"global": {"injection": global_mode, "num_queries": 6, "head_dim": 16}})
    f, e = item_features(8)
    assert_batched_equals_alone(comp, f, e, [item_guide(i, k) for i in range(B)])


@pytest.mark.parametrize("modality", ["video", "image"])
@pytest.mark.parametrize("frames", [1, 5, 8])
@pytest.mark.parametrize("kernel", [(1, 9), (4, 3), (2, 2)])
@pytest.mark.parametrize("grouping", [True, False])
def test_items_compressed_in_one_call_equal_each_item_alone_for_every_grid_setting(grouping, kernel, frames, modality):
    comp = make(local={"injection": "fine", "grouping": grouping, "temporal_kernel": kernel[0],
                       "spatial_kernel": kernel[1]},
                **{"global": {"injection": "coarse", "num_queries": 6, "head_dim": 16}})
    f, e = item_features(frames, seed=frames)
    assert_batched_equals_alone(comp, f, e, [item_guide(i, 3) for i in range(B)], is_image=modality == "image")


def test_items_compressed_in_one_call_equal_each_item_alone_with_fitted_standardizer():
    comp = make(standardize=True)
    f, e = item_features(5)
    comp.standardizer.fit(list(f))
    assert_batched_equals_alone(comp, f, e, [item_guide(i, 3) for i in range(B)])


@pytest.mark.parametrize("preset", ["paper", "unconditional"])
def test_items_compressed_in_one_call_without_guides_give_one_compression_per_item(preset):
    comp = make(preset)
    f, e = item_features(5)
    comp.guided = False  # alignment: no instruction, every level unconditional
    assert_batched_equals_alone(comp, f, e, None)
    assert comp(f, e).shape == (B, comp.num_tokens(5, G, G), D)
    # guides given while guidance is off: each item's compression repeated for its k guides, as for one item
    out = comp(f, e, Guide.stack([item_guide(i, 3) for i in range(B)]))
    assert out.shape == (B, 3, comp.num_tokens(5, G, G), D)
    assert torch.equal(out[:, 0], out[:, 2])
    assert_batched_equals_alone(comp, f, e, [item_guide(i, 3) for i in range(B)])


@pytest.mark.parametrize("standardize", [False, True])
@pytest.mark.parametrize("modality", ["video", "image"])
@pytest.mark.parametrize("frames", [1, 5, 8])
def test_baseline_items_compressed_in_one_call_equal_each_item_alone(frames, modality, standardize):
    torch.manual_seed(0)
    proj = LlavaOVProjector(CompressorConfig(kind="llava_ov", local=None, global_=None, standardize=standardize),
                            C, D)
    f = torch.randn(B, frames, 27, 27, C)
    if standardize:
        proj.standardizer.fit(list(f))
    assert_batched_equals_alone(proj, f, None, None, is_image=modality == "image")
    assert proj(f, is_image=modality == "image").shape == (B, proj.num_tokens(frames, 27, 27, modality == "image"), D)


def test_guide_stack_gives_per_item_guides_and_indexing_gives_an_items_guides_back():
    single, three = item_guide(0, 1), item_guide(1, 3)
    stacked = Guide.stack([three, item_guide(2, 3)])
    assert stacked.per_item and not stacked.batched and stacked.pooled.shape == (2, 3, TEXT)
    assert stacked.tokens.shape == (2, 3, 5, TEXT) and stacked.mask.shape == (2, 3, 5)
    assert torch.equal(stacked[0].pooled, three.pooled) and torch.equal(stacked[0].mask, three.mask)
    ones = Guide.stack([single, item_guide(3, 1)])
    assert ones.pooled.shape == (2, 1, TEXT) and torch.equal(ones[0][0].pooled, single.pooled)
    assert single.as_items().pooled.shape == (1, 1, TEXT) and three.as_items().pooled.shape == (1, 3, TEXT)
    with pytest.raises(ValueError, match="only guides of equal shapes"):
        Guide.stack([single, three])
