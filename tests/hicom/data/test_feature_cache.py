"""Feature cache: exact round trips, invalidation by video / tower / policy / range, corrupt entries, races.

No real videos are needed: the cache only hashes bytes, so small files of arbitrary bytes stand in.
"""
from __future__ import annotations

import json
import logging
import os
import threading

import pytest
import torch
from torch import nn

from hicom.core import files
from hicom.core.files import file_digest
from hicom.data import feature_cache
from hicom.data.feature_cache import FeatureCache, FramePolicy, module_fingerprint
from hicom.data.video import FramePreprocessor

POLICY = FramePolicy(
    num_frames=8, decoder="decord", image_size=32, image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5),
    pad_to_square=True,
)


def tower(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6))


@pytest.fixture
def video(tmp_path):
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"\x00\x01 not really a video " * 50)
    return path


@pytest.fixture
def cache(tmp_path):
    return FeatureCache(tmp_path / "cache", module_fingerprint(tower(), with_embeds=True), POLICY)


def features_and_embeds(dtype=torch.float32):
    features = torch.randn(2, 3, 3, 5).to(dtype)
    return features, (features * 2 + 1)


def entry_files(cache: FeatureCache, pattern: str) -> list:
    return sorted(cache.directory.glob(f"*/{pattern}"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_round_trip_returns_identical_features_and_embeds_in_their_dtype(cache, video, dtype):
    features, embeds = features_and_embeds(dtype)
    key = cache.key(video)
    cache.put(key, features.transpose(1, 2), embeds.transpose(1, 2))  # non-contiguous inputs are fine
    got_features, got_embeds = cache.get(key)
    assert got_features.dtype == dtype and got_embeds.dtype == dtype
    assert torch.equal(got_features, features.transpose(1, 2)) and torch.equal(got_embeds, embeds.transpose(1, 2))


def test_round_trip_without_embeds_returns_none_for_them(cache, video):
    features, _ = features_and_embeds()
    key = cache.key(video)
    cache.put(key, features, None)
    got_features, got_embeds = cache.get(key)
    assert torch.equal(got_features, features) and got_embeds is None


def test_stats_count_hits_misses_and_entries_on_disk(cache, video):
    key = cache.key(video)
    assert cache.get(key) is None
    cache.put(key, *features_and_embeds())
    assert cache.get(key) is not None
    stats = cache.stats()
    assert (stats["hits"], stats["misses"], stats["entries"]) == (1, 1, 1)
    assert stats["bytes"] == cache.path(key).stat().st_size


def test_rewritten_video_gets_a_new_key_and_misses(cache, video):
    old_key = cache.key(video)
    cache.put(old_key, *features_and_embeds())
    video.write_bytes(b"other content, other length")
    new_key = cache.key(video)
    assert new_key != old_key and cache.get(new_key) is None


def test_identical_bytes_at_another_path_share_the_key(cache, video, tmp_path):
    copy = tmp_path / "renamed.mkv"
    copy.write_bytes(video.read_bytes())
    assert cache.key(copy) == cache.key(video)


def test_start_and_end_change_the_key(cache, video):
    keys = {cache.key(video), cache.key(video, start=1.0), cache.key(video, end=1.0), cache.key(video, 1.0, 2.5)}
    assert len(keys) == 4
    assert cache.key(video, 1, 2) == cache.key(video, 1.0, 2.0)


def test_a_different_frame_policy_uses_another_directory_and_misses(cache, video, tmp_path):
    key = cache.key(video)
    cache.put(key, *features_and_embeds())
    for change in ({"num_frames": 16}, {"decoder": "pyav"}, {"image_size": 64}, {"pad_to_square": False},
                   {"image_mean": (0.4, 0.5, 0.5)}, {"image_std": (0.5, 0.5, 0.6)}, {"frame_dir_fps": 1.0}):
        other = FeatureCache(cache.root, cache.tower_fingerprint, FramePolicy(**{**POLICY.to_dict(), **change}))
        assert other.directory != cache.directory, change
        assert other.get(other.key(video)) is None, change


def test_a_tower_with_one_weight_changed_uses_another_directory_and_misses(cache, video):
    key = cache.key(video)
    cache.put(key, *features_and_embeds())
    changed = tower()
    with torch.no_grad():
        changed[0].weight[2, 1] += 1e-3
    other = FeatureCache(cache.root, module_fingerprint(changed, with_embeds=True), POLICY)
    assert other.directory != cache.directory and other.get(key) is None
    assert FeatureCache(cache.root, module_fingerprint(tower(), with_embeds=True), POLICY).get(key) is not None


def test_module_fingerprint_is_equal_for_equal_weights_and_differs_with_with_embeds():
    assert module_fingerprint(tower(), True) == module_fingerprint(tower(), True)
    assert module_fingerprint(tower(), True) != module_fingerprint(tower(), False)
    assert module_fingerprint(tower(), True) != module_fingerprint(tower().to(torch.bfloat16), True)


def test_module_fingerprint_sees_writes_through_data():
    module = tower()
    before = module_fingerprint(module, False)
    module[1].bias.data[0] = 7.0  # bypasses the parameter's version counter
    assert module_fingerprint(module, False) != before


@pytest.mark.parametrize("damage", ["truncate", "empty", "garbage header", "unexpected tensors"])
def test_a_damaged_entry_is_a_miss_warned_about_and_moved_aside_then_put_works(cache, video, caplog, damage):
    key = cache.key(video)
    cache.put(key, *features_and_embeds())
    path = cache.path(key)
    data = path.read_bytes()
    if damage == "unexpected tensors":
        from safetensors.torch import save_file
        save_file({"pixels": torch.zeros(2)}, path)
    else:
        path.write_bytes({"truncate": data[: len(data) // 2], "empty": b"", "garbage header": b"\xff" * 64}[damage])
    damaged = path.read_bytes()
    with caplog.at_level(logging.WARNING, logger="hicom.cache"):
        assert cache.get(key) is None
    assert cache.misses == 1
    assert any(str(path) in r.getMessage() and r.name == "hicom.cache" for r in caplog.records)
    assert not path.exists()
    assert path.with_name(path.name + ".corrupt").read_bytes() == damaged
    features, embeds = features_and_embeds()
    cache.put(key, features, embeds)
    assert torch.equal(cache.get(key)[0], features)
    assert cache.stats()["entries"] == 1  # the .corrupt file is not counted


def test_two_threads_putting_the_same_key_leave_a_readable_entry_and_no_temp_files(cache, video, monkeypatch):
    key = cache.key(video)
    features, embeds = features_and_embeds()
    both_written = threading.Barrier(2, timeout=5)
    real_save = feature_cache.save_file

    def save_then_wait(tensors, filename, *args, **kwargs):
        real_save(tensors, filename, *args, **kwargs)
        both_written.wait()  # each writer's temp file is complete before either renames it

    monkeypatch.setattr(feature_cache, "save_file", save_then_wait)
    errors = []

    def writer():
        try:
            cache.put(key, features, embeds)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    got_features, got_embeds = cache.get(key)
    assert torch.equal(got_features, features) and torch.equal(got_embeds, embeds)
    assert [p.name for p in cache.path(key).parent.iterdir()] == [cache.path(key).name]


def test_a_put_that_fails_midway_keeps_the_previous_entry_and_leaves_no_temp_file(cache, video, monkeypatch):
    key = cache.key(video)
    features, embeds = features_and_embeds()
    cache.put(key, features, embeds)

    def disk_full(tensors, filename, *args, **kwargs):
        with open(filename, "wb") as fh:
            fh.write(b"partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(feature_cache, "save_file", disk_full)
    with pytest.raises(OSError, match="No space left"):
        cache.put(key, features + 1, None)
    assert torch.equal(cache.get(key)[0], features)
    assert [p.name for p in cache.path(key).parent.iterdir()] == [cache.path(key).name]


def test_info_json_describes_tower_and_policy(cache):
    info = json.loads((cache.directory / "info.json").read_text())
    assert info["tower_fingerprint"] == cache.tower_fingerprint
    assert info["policy"] == json.loads(json.dumps(POLICY.to_dict()))
    assert info["policy_digest"] == POLICY.digest()
    assert FramePolicy(**info["policy"]) == POLICY
    assert cache.directory.name == f"{cache.tower_fingerprint[:16]}-{POLICY.digest()[:16]}"


def test_policy_digest_is_pinned_and_independent_of_how_fields_were_spelled():
    # A changed digest silently invalidates every cache: change this value only on purpose (last: read_version 2).
    assert POLICY.digest() == "245c860c958ebb54b9ea66bbd9005638da7eec1e018fd73c78ebbba6fc2a7b21"
    spelled = FramePolicy(8, "decord", 32, [0.5, 0.5, 0.5], (0.5, 0.5, 0.5), True, frame_dir_fps=3)
    assert spelled.digest() == POLICY.digest()
    preprocessor = FramePreprocessor(image_size=32)
    assert FramePolicy.from_preprocessor(preprocessor, num_frames=8, decoder="decord") == POLICY


@pytest.mark.parametrize("bad", [{"decoder": "opencv"}, {"num_frames": 0}, {"image_std": (0.5, 0.0, 0.5)},
                                 {"read_version": 0}])
def test_frame_policy_rejects_invalid_fields(bad):
    with pytest.raises(ValueError):
        FramePolicy(**{**POLICY.to_dict(), **bad})


def test_file_digest_is_memoised_while_the_file_is_unchanged(video, monkeypatch):
    calls = []
    real = files._hash_path
    monkeypatch.setattr(files, "_hash_path", lambda path: calls.append(path) or real(path))
    first = file_digest(video)
    assert file_digest(video) == first and file_digest(str(video)) == first
    assert len(calls) == 1


def test_file_digest_is_not_stale_after_a_size_change(video):
    before = file_digest(video)
    with open(video, "ab") as fh:
        fh.write(b"more")
    assert file_digest(video) != before


def test_file_digest_is_not_stale_after_a_same_size_rewrite_with_a_new_mtime(video):
    before = file_digest(video)
    stat = video.stat()
    data = bytearray(video.read_bytes())
    data[0] ^= 0xFF
    video.write_bytes(bytes(data))
    os.utime(video, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert file_digest(video) != before


def test_file_digest_of_a_frame_directory_follows_frame_bytes_and_names(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        (frames / f"{i}.jpg").write_bytes(bytes([i]) * 10)
    before = file_digest(frames)
    (frames / "1.jpg").write_bytes(b"\x09" * 11)
    after_edit = file_digest(frames)
    os.rename(frames / "2.jpg", frames / "3.jpg")
    assert len({before, after_edit, file_digest(frames)}) == 3


def test_file_digest_of_a_missing_path_raises_naming_it(tmp_path):
    missing = tmp_path / "gone.mp4"
    with pytest.raises(FileNotFoundError, match="gone.mp4"):
        file_digest(missing)


def test_malformed_keys_and_mismatched_embeds_are_rejected(cache, video):
    with pytest.raises(ValueError, match="sha256"):
        cache.get("../../etc/passwd")
    features, _ = features_and_embeds()
    with pytest.raises(ValueError, match="shaped like features"):
        cache.put(cache.key(video), features, features[:1])


# -- encoded instructions (the frozen text tower's outputs) ------------------------------------------
TEXT = module_fingerprint(tower(1), with_embeds=False)


@pytest.fixture
def guide_cache(tmp_path):
    return FeatureCache(tmp_path / "cache", module_fingerprint(tower(), with_embeds=True), POLICY, text_fingerprint=TEXT)


def guide_ids(k=3, length=8, seed=0):
    return torch.randint(1, 100, (k, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("with_tokens", [False, True])
def test_guides_round_trip_exactly_with_or_without_token_states(guide_cache, with_tokens):
    key = guide_cache.guide_key(guide_ids())
    pooled = torch.randn(3, 6)
    tokens = torch.randn(3, 8, 6) if with_tokens else None
    assert guide_cache.get_guides(key) is None
    guide_cache.put_guides(key, pooled, tokens)
    got_pooled, got_tokens = guide_cache.get_guides(key)
    assert torch.equal(got_pooled, pooled)
    assert (got_tokens is None) if tokens is None else torch.equal(got_tokens, tokens)
    stats = guide_cache.stats()
    assert (stats["guide_hits"], stats["guide_misses"], stats["guide_entries"]) == (1, 1, 1)
    assert (stats["hits"], stats["misses"], stats["entries"]) == (0, 0, 0)  # video entries counted apart


def test_guide_key_follows_the_token_ids_and_their_shape_only(guide_cache):
    ids = guide_ids()
    assert guide_cache.guide_key(ids) == guide_cache.guide_key(ids.clone().to(torch.int32))
    changed = ids.clone()
    changed[2, 5] += 1
    assert guide_cache.guide_key(changed) != guide_cache.guide_key(ids)
    assert guide_cache.guide_key(ids.reshape(4, 6)) != guide_cache.guide_key(ids)


def test_another_text_tower_uses_another_directory_and_misses(guide_cache, tmp_path):
    key = guide_cache.guide_key(guide_ids())
    guide_cache.put_guides(key, torch.randn(3, 6), None)
    other = FeatureCache(tmp_path / "cache", guide_cache.tower_fingerprint, POLICY,
                         text_fingerprint=module_fingerprint(tower(2), with_embeds=False))
    assert other.guide_directory != guide_cache.guide_directory and other.get_guides(key) is None
    assert json.loads((guide_cache.guide_directory / "info.json").read_text())["text_fingerprint"] == TEXT


def test_a_damaged_guide_entry_is_a_miss_warned_about_and_moved_aside(guide_cache, caplog):
    key = guide_cache.guide_key(guide_ids())
    guide_cache.put_guides(key, torch.randn(3, 6), torch.randn(3, 8, 6))
    path = guide_cache.guide_directory / key[:2] / f"{key}.safetensors"
    from safetensors.torch import save_file
    save_file({"pooled": torch.randn(3, 6), "tokens": torch.randn(2, 8, 6)}, path)  # guide counts disagree
    with caplog.at_level(logging.WARNING, logger="hicom.cache"):
        assert guide_cache.get_guides(key) is None
    assert any(str(path) in r.getMessage() for r in caplog.records)
    assert path.with_name(path.name + ".corrupt").exists() and not path.exists()


def test_a_cache_without_a_text_fingerprint_has_no_guides_and_refuses_to_store_them(cache):
    key = cache.guide_key(guide_ids())
    assert cache.guide_directory is None and cache.get_guides(key) is None
    with pytest.raises(ValueError, match="text_fingerprint"):
        cache.put_guides(key, torch.randn(3, 6), None)


def test_an_entry_read_once_is_served_from_memory_in_later_epochs_without_its_file(guide_cache, video):
    key, gkey = guide_cache.key(video), guide_cache.guide_key(guide_ids())
    features, embeds = features_and_embeds()
    guide_cache.put(key, features, embeds)
    guide_cache.put_guides(gkey, torch.randn(3, 6), None)
    first, first_guides = guide_cache.get(key), guide_cache.get_guides(gkey)  # from the files
    guide_cache.path(key).unlink()
    next(guide_cache.guide_directory.glob(f"*/{gkey}*")).unlink()
    again, again_guides = guide_cache.get(key), guide_cache.get_guides(gkey)
    assert torch.equal(again[0], first[0]) and torch.equal(again[1], first[1])
    assert torch.equal(again_guides[0], first_guides[0])
    stats = guide_cache.stats()
    assert (stats["hits"], stats["misses"], stats["guide_hits"], stats["guide_misses"]) == (2, 0, 2, 0)


def test_memory_keeps_the_most_recently_read_entries_within_its_byte_budget(tmp_path):
    features, embeds = features_and_embeds()
    entry_bytes = 2 * features.numel() * features.element_size()
    cache = FeatureCache(tmp_path / "cache", module_fingerprint(tower(), with_embeds=True), POLICY,
                         memory_bytes=entry_bytes)  # room for one entry
    keys = []
    for i in range(2):
        clip = tmp_path / f"clip{i}.mp4"
        clip.write_bytes(bytes([i]) * 100)
        keys.append(cache.key(clip))
        cache.put(keys[-1], features + i, embeds + i)
    for key in keys:
        assert cache.get(key) is not None
    for key in keys:
        cache.path(key).unlink()
    assert cache.get(keys[0]) is None  # the older entry left memory when the newer one came in
    assert torch.equal(cache.get(keys[1])[0], features + 1)


def test_no_memory_reads_the_file_every_time_and_a_bad_budget_is_refused(tmp_path, video):
    fingerprint = module_fingerprint(tower(), with_embeds=True)
    cache = FeatureCache(tmp_path / "cache", fingerprint, POLICY, memory_bytes=0)
    key = cache.key(video)
    cache.put(key, *features_and_embeds())
    assert cache.get(key) is not None
    cache.path(key).unlink()
    assert cache.get(key) is None
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="memory_bytes"):
            FeatureCache(tmp_path / "other", fingerprint, POLICY, memory_bytes=bad)
