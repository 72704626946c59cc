import pytest
import torch

from hicom.core.types import IGNORE_INDEX, IMAGE_TOKEN_ID, VIDEO_TOKEN_ID, VisualItem
from hicom.model.build import build_model
from hicom.model.modeling_hicom import shared_prefix_length
from hicom.core.sequences import SequenceTooLongError, find_cut
from hicom.params import Params

IMAGE = Params.load().profile("tiny").vision.config["image_size"]  # the tiny towers' input side


@pytest.fixture(scope="module")
def model(tiny_profile):
    torch.manual_seed(0)
    return build_model(tiny_profile).eval()


def clip(frames=8, seed=0):
    return torch.randn(frames, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(seed))


def guide_ids(seed=0, length=32):
    return torch.randint(2, 1000, (length,), generator=torch.Generator().manual_seed(seed))


def item(frames=8, seed=0, modality="video"):
    return VisualItem(clip(frames, seed), modality, guide_ids(seed))


def test_features_are_the_penultimate_layer_and_embeds_the_head_mlp_of_the_last(model):
    px = clip(2)
    feats, embeds = model.encode_frames(px, with_embeds=True)
    with torch.no_grad():
        ref = model.vision_tower(pixel_values=px, output_hidden_states=True)
    assert torch.allclose(feats.flatten(1, 2), ref.hidden_states[-2], atol=1e-6)
    head = model.vision_tower.head
    last = ref.last_hidden_state
    assert torch.allclose(embeds.flatten(1, 2), last + head.mlp(head.layernorm(last)), atol=1e-6)
    without_embeds, none = model.encode_frames(px, with_embeds=False)
    assert none is None and torch.equal(without_embeds, feats)


@pytest.mark.parametrize("with_embeds, last_layer_calls", [(False, 0), (True, 1)])
def test_encoding_frames_runs_the_last_layer_only_for_the_embeds_and_never_the_heads_attention_pooling(
        model, with_embeds, last_layer_calls):
    """The LLaVA-OV projector reads F only: like LLaVA-OneVision's SigLIP, it does not run the last layer. The
    pooling head's attention (its one pooled vector per frame) is used by neither projector."""
    calls = {"last_layer": 0, "pooling": 0}
    vision = model.vision_tower

    def counting(name):
        def hook(*_):
            calls[name] += 1
        return hook

    hooks = [vision.encoder.layers[-1].register_forward_hook(counting("last_layer")),
             vision.head.attention.register_forward_hook(counting("pooling"))]
    try:
        model.encode_frames(clip(2), with_embeds=with_embeds)
    finally:
        for hook in hooks:
            hook.remove()
    assert calls == {"last_layer": last_layer_calls, "pooling": 0}


def test_gradients_reach_only_the_compressor_when_llm_and_towers_are_frozen(tiny_profile):
    m = build_model(tiny_profile)
    m.set_trainable(projector=True, language_model=False, towers=False)
    ids = torch.tensor([[3, VIDEO_TOKEN_ID, 4, 5, 6]])
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 5, 6]])
    m(input_ids=ids, labels=labels, visual_items=[item()]).loss.backward()
    for name, p in m.named_parameters():
        if name.startswith("projector."):
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


def test_training_loss_from_supervised_rows_only_equals_the_full_logits_loss(model):
    ids = torch.tensor([[3, VIDEO_TOKEN_ID, 4, 5, 6, 7], [8, VIDEO_TOKEN_ID, 9, 10, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 5, IGNORE_INDEX, 7],
                           [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 10, IGNORE_INDEX, IGNORE_INDEX]])
    items = [item(seed=1), item(seed=2)]
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, labels=labels, visual_items=items)
        embeds, m, spliced, pos = model.splice(ids, mask, labels, model.encode_visual(items))
        full = model.language_model(inputs_embeds=embeds, attention_mask=m, position_ids=pos, labels=spliced)
    supervised = spliced[:, 1:] != IGNORE_INDEX
    assert out.logits.shape == (3, model.config.llm_config.vocab_size)  # 5 and 7 of row 0, 10 of row 1
    torch.testing.assert_close(out.logits, full.logits[:, :-1][supervised])
    torch.testing.assert_close(out.loss, full.loss)


def test_shared_prefix_is_the_common_unpadded_text_before_any_placeholder_and_leaves_every_row_a_token():
    V = VIDEO_TOKEN_ID
    ids = torch.tensor([[5, 6, 7, V, 8], [5, 6, 7, V, 9]])
    assert shared_prefix_length(ids, None, shortest=30) == 3  # the placeholder ends it (the same in both rows)
    assert shared_prefix_length(torch.tensor([[5, 6, 7, 8], [5, 6, 9, 8]]), None, 30) == 2  # a difference ends it
    assert shared_prefix_length(torch.tensor([[4, 6], [5, 6]]), None, 30) == 0
    assert shared_prefix_length(ids[:1], None, 30) == 0  # one row: nothing to share
    assert shared_prefix_length(ids, torch.tensor([[1, 1, 0, 1, 1], [1, 1, 1, 1, 1]]), 30) == 2  # padding ends it
    assert shared_prefix_length(torch.tensor([[5, 6, 7], [5, 6, 7]]), None, shortest=3) == 2


@pytest.mark.parametrize("prefix, padded, supervised_in_prefix, checkpointing", [
    (0, False, False, False), (1, False, False, False), (6, True, False, False), (6, False, True, False),
    (6, False, False, True)])
def test_training_loss_and_gradients_with_a_shared_prefix_equal_decoding_every_row_whole(
        tiny_profile, prefix, padded, supervised_in_prefix, checkpointing):
    """Rows that start alike are decoded once up to where they differ, and the rest attends to that prefix's
    cached keys and values: the same loss and gradients as the plain decoder over each whole row. Not under
    activation checkpointing, which runs without a key/value cache: there every row is decoded whole."""
    torch.manual_seed(0)
    m = build_model(tiny_profile).train()
    if checkpointing:
        m.language_model.activation_checkpointing_enable()
    g = torch.Generator().manual_seed(prefix)
    rows = 3
    head = torch.randint(2, 1000, (prefix,), generator=g).expand(rows, -1)
    tail = torch.randint(2, 1000, (rows, 5), generator=g)
    if prefix == 0:
        tail[:, 0] = torch.tensor([11, 12, 13])  # rows differ from the first token
    ids = torch.cat([head, torch.full((rows, 1), VIDEO_TOKEN_ID), tail], dim=1)
    mask = torch.ones_like(ids)
    if padded:
        ids[1, -2:], mask[1, -2:] = 0, 0
    labels = torch.where(mask.bool(), ids, IGNORE_INDEX)
    labels[:, :prefix + 2] = IGNORE_INDEX  # the answer is the text after the clip
    if supervised_in_prefix:
        labels[:, 2] = ids[:, 2]
    items = [item(seed=i) for i in range(rows)]
    batches = []
    hook = m.language_model.model.register_forward_hook(lambda mod, args, kw, out: batches.append(
        kw["inputs_embeds"].shape[0]), with_kwargs=True)
    try:
        loss = m(input_ids=ids, attention_mask=mask, labels=labels, visual_items=items).loss
    finally:
        hook.remove()
    assert batches == ([1, rows] if prefix and not checkpointing else [rows])  # the prefix once, then the rests
    embeds, spliced_mask, spliced, pos = m.splice(ids, mask, labels, m.encode_visual(items))
    whole = m.language_model(inputs_embeds=embeds, attention_mask=spliced_mask, position_ids=pos,
                             labels=spliced).loss
    torch.testing.assert_close(loss, whole)
    params = [p for p in m.parameters() if p.requires_grad]
    for name, got, want in zip([n for n, p in m.named_parameters() if p.requires_grad],
                               torch.autograd.grad(loss, params, allow_unused=True),
                               torch.autograd.grad(whole, params, allow_unused=True)):
        if want is None:
            assert got is None, name
        else:
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6, msg=lambda msg: f"{name}: {msg}")


def test_visual_tokens_are_spliced_at_the_placeholder_and_never_supervised(model):
    ids = torch.tensor([[11, 12, VIDEO_TOKEN_ID, 13, 14]])
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 13, 14]])
    visual = model.encode_visual([item()])
    embeds, mask, out_labels, pos = model.splice(ids, None, labels, visual)
    n = visual[0].shape[0]
    assert embeds.shape[1] == 4 + n
    text = model.get_input_embeddings()(torch.tensor([11, 12, 13, 14]))
    assert torch.allclose(embeds[0, :2], text[:2]) and torch.allclose(embeds[0, 2 + n:], text[2:])
    assert torch.allclose(embeds[0, 2:2 + n], visual[0])
    assert out_labels[0].tolist() == [IGNORE_INDEX] * (3 + n - 1) + [13, 14]
    assert pos[0].tolist() == list(range(4 + n)) and mask.all()


def test_items_fill_placeholders_in_batch_order_with_right_padding(model):
    ids = torch.tensor([[IMAGE_TOKEN_ID, 7, 0], [8, VIDEO_TOKEN_ID, 9]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    visual = model.encode_visual([item(1, 1, "image"), item(8, 2)])
    embeds, out_mask, _, _ = model.splice(ids, mask, None, visual)
    n_img, n_vid = visual[0].shape[0], visual[1].shape[0]
    assert out_mask[0].sum() == n_img + 1 and out_mask[1].sum() == n_vid + 2
    assert torch.allclose(embeds[0, :n_img], visual[0])
    assert torch.allclose(embeds[1, 1:1 + n_vid], visual[1])


def test_placeholder_missing_from_prompt_is_an_error(model):
    with pytest.raises(ValueError, match="0 <image>/<video> placeholders but 1 visual items"):
        model(input_ids=torch.tensor([[5, 6, 7]]), visual_items=[item()])


@pytest.mark.parametrize("shape,message", [((0, 3, IMAGE, IMAGE), "frames >= 1"), ((3, IMAGE, IMAGE), "frames >= 1")])
def test_bad_pixel_values_name_the_item_and_shape(model, shape, message):
    ids = torch.tensor([[5, VIDEO_TOKEN_ID]])
    with pytest.raises(ValueError, match=message):
        model(input_ids=ids, visual_items=[VisualItem(torch.zeros(shape), "video", guide_ids())])


def test_find_cut_keeps_whole_answers_and_all_visual_tokens():
    I = IGNORE_INDEX
    labels = torch.tensor([I, I, I, I, 1, 2, I, I, 3, 4, 5])  # answers at 4-5 and 8-10
    assert find_cut(labels, visual_end=3, max_length=20) == 11
    assert find_cut(labels, visual_end=3, max_length=10) == 6  # answer 2 would be cut: drop it whole
    assert find_cut(labels, visual_end=3, max_length=6) == 6
    with pytest.raises(SequenceTooLongError, match="no whole answer"):
        find_cut(labels, visual_end=3, max_length=5)
    with pytest.raises(SequenceTooLongError, match="visual tokens end at position 9"):
        find_cut(labels, visual_end=9, max_length=8)


def test_splice_truncates_after_splicing_without_cutting_an_answer(model):
    n = model.num_visual_tokens(8)
    ids = torch.tensor([[VIDEO_TOKEN_ID, 1, 20, 21, 2, 30, 31, 32]])
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 20, 21, IGNORE_INDEX, 30, 31, 32]])
    visual = model.encode_visual([item()])
    _, _, out, _ = model.splice(ids, None, labels, visual, max_length=n + 6)
    assert out.shape[1] == n + 3  # the second answer did not fit: dropped whole, with its question
    assert out[0, -2:].tolist() == [20, 21]
    with pytest.raises(SequenceTooLongError, match="prompt of"):
        model.splice(ids, None, None, visual, max_length=n + 2)


def spliced_row_by_row(model, ids, mask, labels, visual, max_length, padding_side):
    """The splice's definition, one row at a time: each kept text token's embedding, each placeholder replaced by
    its item's tokens (labels ignored there), cut where find_cut says, padded with zeros on one side."""
    text = model.get_input_embeddings()(ids.clamp(min=0))
    rows, row_labels, item_index = [], [], 0
    for b in range(ids.shape[0]):
        pieces, piece_labels, visual_end = [], [], 0
        for pos in torch.nonzero(mask[b]).flatten().tolist():
            if ids[b, pos] < 0:
                tokens = visual[item_index]
                item_index += 1
                pieces.append(tokens)
                piece_labels += [IGNORE_INDEX] * tokens.shape[0]
                visual_end = len(piece_labels)
            else:
                pieces.append(text[b, pos:pos + 1])
                piece_labels.append(IGNORE_INDEX if labels is None else int(labels[b, pos]))
        seq_labels = torch.tensor(piece_labels)
        cut = find_cut(seq_labels, visual_end, max_length)
        rows.append(torch.cat(pieces)[:cut])
        row_labels.append(seq_labels[:cut])
    length = max(r.shape[0] for r in rows)
    embeds = torch.zeros(len(rows), length, text.shape[-1])
    out_labels = torch.full((len(rows), length), IGNORE_INDEX)
    out_mask = torch.zeros(len(rows), length, dtype=torch.long)
    positions = torch.zeros(len(rows), length, dtype=torch.long)
    for b, (row, lab) in enumerate(zip(rows, row_labels)):
        span = slice(0, len(row)) if padding_side == "right" else slice(length - len(row), length)
        embeds[b, span], out_labels[b, span], out_mask[b, span] = row, lab, 1
        positions[b, span] = torch.arange(len(row))
    return embeds, out_mask, out_labels, positions


@pytest.mark.parametrize("seed, padding_side, with_labels, cut", [
    (3, "right", True, False), (5, "left", False, False), (9, "right", True, True), (10, "left", True, True),
    (13, "right", False, False)])
def test_splice_equals_its_row_by_row_definition_in_values_and_gradients(model, seed, padding_side, with_labels, cut):
    """Batches of 5-6 rows of 3-30 text tokens, right padding, 0-2 placeholders a row (images and videos of 2-12
    tokens), two answers in the longer rows; with `cut`, max_length one short of the longest row, which then ends
    after its first answer. The gradients reaching the text embeddings and the visual tokens are the same bits as
    the reference's."""
    g = torch.Generator().manual_seed(seed)
    rows = int(torch.randint(1, 7, (1,), generator=g))
    lengths = torch.randint(3, 31, (rows,), generator=g).tolist()
    ids = torch.zeros(rows, max(lengths), dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, IGNORE_INDEX)
    visual, dim, spliced = [], model.config.llm_config.hidden_size, []
    for b, n in enumerate(lengths):
        ids[b, :n] = torch.randint(1, 1000, (n,), generator=g)
        mask[b, :n] = 1
        spliced.append(n)
        for pos in sorted(torch.randperm(min(n, 3), generator=g)[:int(torch.randint(0, 3, (1,), generator=g))]):
            ids[b, pos] = [IMAGE_TOKEN_ID, VIDEO_TOKEN_ID][int(pos) % 2]
            visual.append(torch.randn(int(torch.randint(2, 13, (1,), generator=g)), dim, generator=g))
            spliced[b] += visual[-1].shape[0] - 1
        labels[b, n - 2:n] = ids[b, n - 2:n]
        if n >= 10:
            labels[b, 5:7] = ids[b, 5:7]
    assert len(visual) >= 2 and rows >= 5, "the seed should draw several rows and placeholders"
    max_length = max(spliced) - 1 if cut else 1024
    labels = labels if with_labels else None
    weight = model.get_input_embeddings().weight

    def run(splice):
        tokens = [v.clone().requires_grad_() for v in visual]
        weight.grad = None
        outputs = splice(tokens)
        (outputs[0] * torch.linspace(-1, 1, outputs[0].numel()).reshape(outputs[0].shape)).sum().backward()
        return outputs, [t.grad for t in tokens], weight.grad.clone()

    got, got_visual_grads, got_text_grad = run(lambda tokens: model.splice(
        ids, mask, labels, tokens, max_length=max_length, padding_side=padding_side))
    want, want_visual_grads, want_text_grad = run(lambda tokens: spliced_row_by_row(
        model, ids, mask, labels, tokens, max_length, padding_side))
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]) and torch.equal(got[3], want[3])
    assert (got[2] is None) == (labels is None) and (labels is None or torch.equal(got[2], want[2]))
    assert all(torch.equal(a, b) for a, b in zip(got_visual_grads, want_visual_grads))
    assert torch.equal(got_text_grad, want_text_grad)
    assert got[0].shape[1] < max(spliced) if cut else got[0].shape[1] == max(spliced)


def test_batched_greedy_generation_matches_one_by_one(model):
    a = torch.tensor([[3, 4, VIDEO_TOKEN_ID, 5]])
    b = torch.tensor([[6, VIDEO_TOKEN_ID, 7, 8, 9, 10]])
    single_a = model.generate(a, visual_items=[item(8, 1)], max_new_tokens=6)
    single_b = model.generate(b, visual_items=[item(8, 2)], max_new_tokens=6)
    batch = torch.tensor([[0, 0, 3, 4, VIDEO_TOKEN_ID, 5], [6, VIDEO_TOKEN_ID, 7, 8, 9, 10]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1] * 6])
    both = model.generate(batch, attention_mask=mask, visual_items=[item(8, 1), item(8, 2)], max_new_tokens=6)
    assert both[0, :single_a.shape[1]].tolist() == single_a[0].tolist()
    assert both[1, :single_b.shape[1]].tolist() == single_b[0].tolist()


def test_baseline_model_needs_no_text_tower(tiny_profile):
    from hicom.model.build import baseline_of
    base = build_model(baseline_of(tiny_profile)).eval()
    assert base.text_tower is None
    ids = torch.tensor([[5, VIDEO_TOKEN_ID, 6]])
    out = base(input_ids=ids, visual_items=[VisualItem(clip(), "video")])
    pooled = -(-(IMAGE // tiny_profile.vision.config["patch_size"]) // 2)  # the grid after 2x2 pooling, ceil
    assert out.logits.shape[1] == 2 + 8 * pooled * pooled


def test_item_with_k_guides_is_encoded_once_and_fills_k_placeholders(model, monkeypatch):
    guides = torch.stack([guide_ids(1), guide_ids(2), guide_ids(3)])
    calls = []
    original = model.encode_frames
    monkeypatch.setattr(model, "encode_frames", lambda px, with_embeds: calls.append(px.shape[0]) or original(px, with_embeds))
    shared = model.encode_visual([VisualItem(clip(), "video", guides)])
    assert calls == [8] and len(shared) == 3
    for k in range(3):
        alone = model.encode_visual([VisualItem(clip(), "video", guides[k])])[0]
        assert torch.allclose(shared[k], alone, atol=1e-6)
    assert not torch.allclose(shared[0], shared[1])


def test_guidance_off_runs_the_same_compressor_without_instruction_or_text_tower(tiny_profile, monkeypatch):
    m = build_model(tiny_profile).eval()
    m.set_guidance(False)
    monkeypatch.setattr(m, "encode_guides", lambda ids: pytest.fail("text tower used with guidance off"))
    a = m.encode_visual([VisualItem(clip(), "video", None)])[0]
    b = m.encode_visual([VisualItem(clip(), "video", guide_ids(3))])[0]
    assert torch.equal(a, b)
    m.set_guidance(True)
    monkeypatch.undo()
    assert not torch.allclose(m.encode_visual([item(8, 0)])[0], a)


def test_mixed_items_are_compressed_in_one_call_per_shape_and_come_back_in_item_order(model):
    """Two 8-frame clips (one with features and guides from the cache), a 5-frame clip with 3 questions, another
    8-frame clip with 3 questions and an image: one projector call per (shape, modality, k), the same tokens in
    the same order as encoding each item alone."""
    cached = item(8, 1)
    cached.features, cached.embeds = model.encode_frames(cached.pixel_values, with_embeds=True)
    cached.pixel_values = None
    ((cached.guide_pooled, cached.guide_tokens),) = model.encode_item_guides([cached.guide_input_ids])
    three = torch.stack([guide_ids(4), guide_ids(5), guide_ids(6)])
    items = [item(8, 0), item(5, 2), cached, VisualItem(clip(5, 3), "video", three), item(1, 7, "image"),
             VisualItem(clip(8, 8), "video", three)]
    calls = []
    handle = model.projector.register_forward_pre_hook(lambda _m, args: calls.append(tuple(args[0].shape[:2])))
    try:
        together = model.encode_visual(items)
        assert calls == [(2, 8), (1, 5), (1, 5), (1, 1), (1, 8)]  # (items, frames) per call
        calls.clear()
        alone = [tokens for it in items for tokens in model.encode_visual([it])]
    finally:
        handle.remove()
    assert len(calls) == len(items) and len(together) == len(alone) == 1 + 1 + 1 + 3 + 1 + 3
    for a, b in zip(together, alone):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(together[0], together[2])  # different clips stay apart
