import json
import shutil

import pytest
import torch

from hicom.core.types import IGNORE_INDEX
from hicom.data.dataset import (
    ConversationDataset,
    RejectLog,
    SampleSettings,
    batch_to,
    collate,
)
from hicom.data.feature_cache import FeatureCache, FramePolicy, module_fingerprint
from hicom.data.mixture import load_mixture
from hicom.data.synthetic import WorldConfig, generate_world
from hicom.data.tokenizer import train_tokenizer
from hicom.data.video import FramePreprocessor
from hicom.model.build import build_model
from hicom.params import Params

IMAGE = Params.load().profile("tiny").vision.config["image_size"]  # the tiny towers' input side


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    generate_world(WorldConfig(seed=5, num_videos=6, num_frames=8, size=64, qa_per_video=3), root / "w",
                   progress=False)
    texts = [t["value"] for l in (root / "w" / "sft.jsonl").read_text().splitlines()
             for t in json.loads(l)["conversations"]]
    tok = train_tokenizer(texts * 5, 400)
    return root, tok


def mixture(root, name):
    (root / f"{name}.yaml").write_text(f"datasets:\n  - json_path: w/{name}.jsonl\n")
    return load_mixture(root / f"{name}.yaml")


def dataset(root, tok, samples, guided, rejects_name="rejects.jsonl"):
    settings = SampleSettings(num_frames=8, guided=guided, guide_max_length=64, stage="test")
    return ConversationDataset(samples, tok, FramePreprocessor(IMAGE), settings, RejectLog(root / rejects_name),
                               guide_tokenizer=tok)


def test_guided_sample_yields_one_sequence_per_question_sharing_one_decoded_clip(world):
    root, tok = world
    samples = mixture(root, "sft")
    item = dataset(root, tok, samples, guided=True)[0]
    k = len(samples[0]["conversations"]) // 2
    assert len(item["sequences"]) == k and item["guide_input_ids"].shape == (k, 64)
    assert item["pixel_values"].shape == (8, 3, IMAGE, IMAGE)
    batch = collate([item], pad_id=tok.pad_token_id)
    assert batch["input_ids"].shape[0] == k and len(batch["visual_items"]) == 1
    for row in range(k):  # each sequence supervises exactly one answer
        sup = (batch["labels"][row] != IGNORE_INDEX).int()
        assert int((sup[1:] - sup[:-1] == 1).sum()) + int(sup[0]) == 1


def test_batch_to_moves_every_tensor_of_the_batch_and_its_visual_items(world):
    root, tok = world
    samples = mixture(root, "sft")[:2]
    batch = collate([dataset(root, tok, samples, guided=True)[i] for i in range(2)], pad_id=tok.pad_token_id)
    moved = batch_to(batch, "meta")  # the trainer moves batches to the engine's device (a GPU there)
    for name in ("input_ids", "labels", "attention_mask"):
        assert moved[name].device.type == "meta" and moved[name].shape == batch[name].shape
    for before, after in zip(batch["visual_items"], moved["visual_items"]):
        assert after.pixel_values.device.type == "meta" and after.guide_input_ids.device.type == "meta"
        assert before.pixel_values.device.type == "cpu"  # the original batch is left as it was
    assert moved["ids"] == batch["ids"]


def test_unreadable_video_is_skipped_and_recorded_while_others_go_through(world, tmp_path):
    root, tok = world
    samples = mixture(root, "sft")[:3]
    broken = tmp_path / "broken.mp4"
    shutil.copy(samples[1]["video"], broken)
    broken.write_bytes(broken.read_bytes()[:200])  # truncated
    samples[1] = dict(samples[1], video=str(broken))
    samples.append(dict(samples[0], id="missing", video=str(tmp_path / "nope.mp4")))
    ds = dataset(root, tok, samples, guided=True, rejects_name="r.jsonl")
    items = [ds[i] for i in range(len(ds))]
    assert [i is None for i in items] == [False, True, False, True]
    batch = collate(items, pad_id=tok.pad_token_id)
    assert batch["ids"] == [samples[0]["id"], samples[2]["id"]]  # nothing substituted
    rejects = {r["id"]: r for r in ds.rejects.read()}
    assert set(rejects) == {samples[1]["id"], "missing"}
    assert "broken.mp4" in rejects[samples[1]["id"]]["reason"] and rejects["missing"]["stage"] == "test"


def bad_samples(samples: list[dict], tmp_path) -> list[dict]:
    """A missing video, a <video> tag with no video, a video with no tag."""
    first = samples[0]
    no_tag = [dict(t, value=t["value"].replace("<video>", "")) for t in first["conversations"]]
    return [dict(first, id="missing", video=str(tmp_path / "nope.mp4")),
            {k: v for k, v in first.items() if k != "video"} | {"id": "tag-without-video"},
            dict(first, id="video-without-tag", conversations=no_tag)]


def test_a_visual_tag_must_match_the_sample_and_each_bad_sample_is_named(world, tmp_path):
    from hicom.data.settings import ReadLimits

    root, tok = world
    samples = mixture(root, "sft")[:1]
    bad = bad_samples(samples, tmp_path)
    settings = SampleSettings(num_frames=8, guided=True, stage="test")
    ds = ConversationDataset(samples + bad, tok, FramePreprocessor(IMAGE), settings, RejectLog(tmp_path / "r.jsonl"),
                             guide_tokenizer=tok)
    ds.settings = SampleSettings(num_frames=8, guided=True, stage="test", limits=ReadLimits(max_frame_pixels=4095))
    assert ds[0] is None  # 64x64 frames: over 4095 pixels
    ds.settings = settings
    assert [ds[i] is None for i in range(len(ds))] == [False, True, True, True]
    reasons = {r["id"]: r["reason"] for r in ds.rejects.read()}
    assert "its conversation has a <video> tag but the sample names no video" in reasons["tag-without-video"]
    assert "the sample has a video but its conversation has no <video> tag" in reasons["video-without-tag"]
    assert "64x64 = 4096 pixels are over data.limits.max_frame_pixels=4095" in reasons[samples[0]["id"]]


def test_each_bad_sample_is_recorded_once_per_stage_over_epochs_ranks_and_resumed_runs(world, tmp_path):
    root, tok = world
    samples = mixture(root, "sft")[:2]
    samples += bad_samples(samples, tmp_path)
    rejects = tmp_path / "rejects.jsonl"

    def rank(stage="test"):
        settings = SampleSettings(num_frames=8, guided=True, stage=stage)
        return ConversationDataset(samples, tok, FramePreprocessor(IMAGE), settings, RejectLog(rejects),
                                   guide_tokenizer=tok)

    first, second = rank(), rank()
    for epoch in range(2):  # each sample seen on either rank, every epoch
        for i in range(len(samples)):
            (first if (i + epoch) % 2 else second)[i]
    rank()[2]  # a resumed run, fresh process, same file
    assert sorted(r["id"] for r in RejectLog(rejects).read()) == ["missing", "tag-without-video",
                                                                  "video-without-tag"]
    rank("next")[2]  # another stage sharing the file records its own
    assert len(RejectLog(rejects).read()) == 4


def test_a_collated_batch_trains_the_tiny_model(world, tiny_profile):
    root, tok = world
    ds = dataset(root, tok, mixture(root, "sft")[:2], guided=True)
    batch = collate([ds[0], ds[1]], pad_id=tok.pad_token_id)
    model = build_model(tiny_profile)
    model.set_trainable(projector=True, language_model=False)
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"],
                visual_items=batch["visual_items"])
    out.loss.backward()
    assert torch.isfinite(out.loss) and model.projector.local_compressor.readout[0].weight.grad is not None


def test_unguided_alignment_sample_supervises_all_answers_in_one_sequence(world):
    root, tok = world
    item = dataset(root, tok, mixture(root, "align_images")[:1], guided=False)[0]
    assert len(item["sequences"]) == 1 and item["guide_input_ids"] is None
    assert item["modality"] == "image" and item["pixel_values"].shape[0] == 1


def test_each_sample_is_tokenised_once_and_later_epochs_reuse_the_same_ids(world, monkeypatch):
    root, tok = world
    import hicom.data.dataset as ds_module

    calls = []
    real = ds_module.encode_sample
    monkeypatch.setattr(ds_module, "encode_sample", lambda *a, **k: calls.append(a[4]) or real(*a, **k))
    ds = dataset(root, tok, mixture(root, "sft")[:2], guided=True)
    first = [ds[i] for i in range(2)]
    second = [ds[i] for i in range(2)]  # the next epoch
    assert len(calls) == 2
    for a, b in zip(first, second):
        assert torch.equal(a["guide_input_ids"], b["guide_input_ids"])
        assert all(torch.equal(x.input_ids, y.input_ids) for x, y in zip(a["sequences"], b["sequences"]))


def test_feature_cache_hits_skip_decoding_and_both_towers_and_leave_the_loss_unchanged(world, tmp_path, tiny_profile,
                                                                                      monkeypatch):
    root, tok = world
    samples = mixture(root, "sft")[:2]
    torch.manual_seed(0)
    model = build_model(tiny_profile).eval()
    model.set_guidance(True)
    preprocessor = FramePreprocessor(IMAGE)
    cache = FeatureCache(tmp_path / "cache", module_fingerprint(model.vision_tower, with_embeds=True),
                         FramePolicy.from_preprocessor(preprocessor, 8, "decord"),
                         text_fingerprint=module_fingerprint(model.text_tower, with_embeds=False))
    settings = SampleSettings(num_frames=8, guided=True, guide_max_length=64, stage="test")
    cached = ConversationDataset(samples, tok, preprocessor, settings, RejectLog(tmp_path / "rejects.jsonl"),
                                 guide_tokenizer=tok, feature_cache=cache)

    def loss(ds, with_cache):
        batch = collate([ds[0], ds[1]], pad_id=tok.pad_token_id)
        with torch.no_grad():
            if with_cache:
                batch["visual_items"] = cache.complete(model, batch["visual_items"])
            return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         labels=batch["labels"], visual_items=batch["visual_items"]).loss, batch

    uncached, _ = loss(dataset(root, tok, samples, guided=True), with_cache=False)
    cold, _ = loss(cached, with_cache=True)  # computes and stores features and encoded guides
    stats = cache.stats()
    assert (stats["misses"], stats["entries"], stats["guide_misses"], stats["guide_entries"]) == (2, 2, 2, 2)

    def must_not_run(*args, **kwargs):
        raise AssertionError("a tower ran although its outputs were cached")

    monkeypatch.setattr(model.vision_tower.embeddings, "forward", must_not_run)  # encode_frames starts there
    monkeypatch.setattr(model.text_tower, "forward", must_not_run)
    monkeypatch.setattr("hicom.data.dataset.read_video", must_not_run)
    warm, batch = loss(cached, with_cache=True)
    assert all(it.pixel_values is None and it.guide_pooled is not None for it in batch["visual_items"])
    assert cache.stats()["hits"] == 2 and cache.stats()["guide_hits"] == 2
    torch.testing.assert_close(cold, uncached)
    torch.testing.assert_close(warm, uncached)


def test_a_cache_entry_has_the_same_bits_whatever_items_shared_its_micro_batch(world, tmp_path, tiny_profile):
    # A tower's output for one input differs in its last bits with the batch it is computed in: with entries
    # computed beside other items, two ranks meeting the same clip stored and used different values, and training
    # from a cold cache drifted from training from the warm one it left.
    root, tok = world
    samples = mixture(root, "sft")
    torch.manual_seed(0)
    model = build_model(tiny_profile).eval()
    model.set_guidance(True)
    preprocessor = FramePreprocessor(IMAGE)
    settings = SampleSettings(num_frames=8, guided=True, guide_max_length=64, stage="test")

    def completed(n, name):
        cache = FeatureCache(tmp_path / name, module_fingerprint(model.vision_tower, with_embeds=True),
                             FramePolicy.from_preprocessor(preprocessor, 8, "decord"),
                             text_fingerprint=module_fingerprint(model.text_tower, with_embeds=False))
        ds = ConversationDataset(samples, tok, preprocessor, settings, RejectLog(tmp_path / f"{name}.jsonl"),
                                 guide_tokenizer=tok, feature_cache=cache)
        batch = collate([ds[i] for i in range(n)], pad_id=tok.pad_token_id)
        with torch.no_grad():
            item = cache.complete(model, batch["visual_items"])[0]
        return item, cache.get(item.cache_key), cache.get_guides(item.guide_cache_key)

    (a_item, a_entry, a_guides), (b_item, b_entry, b_guides) = completed(1, "alone"), completed(len(samples), "beside")
    assert torch.equal(a_item.features, b_item.features) and torch.equal(a_item.embeds, b_item.embeds)
    assert torch.equal(a_item.guide_pooled, b_item.guide_pooled)
    assert all(torch.equal(x, y) for x, y in zip(a_entry, b_entry))
    assert torch.equal(a_guides[0], b_guides[0])


def test_turns_too_long_for_max_length_are_dropped_and_a_sample_with_none_left_is_rejected_not_a_failed_step(
        world, tmp_path, tiny_profile, caplog):
    """A guided turn holds every earlier turn, so later turns grow: those that cannot fit once the visual tokens
    are spliced in are dropped (the model would have raised SequenceTooLongError mid-stage), and a sample none of
    whose turns fits is rejected and named in the rejects file."""
    root, tok = world
    samples = mixture(root, "sft")[:2]
    model = build_model(tiny_profile)
    visual = model.num_visual_tokens(8, "video")
    full = dataset(root, tok, samples, guided=True)[0]["sequences"]
    first = len(full[0].input_ids) - 1 + visual  # the first turn, spliced
    assert len(full) >= 2 and len(full[1].input_ids) - 1 + visual > first

    settings = SampleSettings(num_frames=8, guided=True, guide_max_length=64, stage="test", max_length=first,
                              video_tokens=visual)
    ds = ConversationDataset(samples, tok, FramePreprocessor(IMAGE), settings, RejectLog(tmp_path / "r.jsonl"),
                             guide_tokenizer=tok)
    item = ds[0]
    assert len(item["sequences"]) == 1 and item["guide_input_ids"].shape[0] == 1
    assert f"sample {samples[0]['id']}: {len(full) - 1} of {len(full)} turns dropped" in caplog.text
    batch = collate([item], pad_id=tok.pad_token_id)
    model.config.max_length = first
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"],
                visual_items=batch["visual_items"])
    assert torch.isfinite(out.loss)

    tight = SampleSettings(num_frames=8, guided=True, guide_max_length=64, stage="test", max_length=visual,
                           video_tokens=visual)
    rejects = RejectLog(tmp_path / "tight.jsonl")
    ds = ConversationDataset(samples, tok, FramePreprocessor(IMAGE), tight, rejects, guide_tokenizer=tok)
    assert ds[0] is None
    [record] = rejects.read()
    assert record["id"] == samples[0]["id"]
    assert f"no turn fits in max_length={visual} with its {visual} visual tokens" in record["reason"]
