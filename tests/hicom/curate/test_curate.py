import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from transformers import SiglipConfig, SiglipModel, SiglipTextModel, SiglipVisionModel

from hicom.cli import main
from hicom.core.errors import ConfigError
from hicom.core.sections import build_section
from hicom.curate.curation import (
    GroundTruthGenerator,
    MalformedReply,
    OpenAIGenerator,
    parse_pairs,
    run_curation,
    select_videos,
)
from hicom.curate.settings import CurateConfig, OpenAIConfig
from hicom.data.synthetic import WorldConfig, generate_world
from hicom.data.tokenizer import load_tokenizer, train_tokenizer
from hicom.data.video import FramePreprocessor
from hicom.model.checkpoint import save_model
from hicom.params import Params

IMAGE = Params.load().profile("tiny").vision.config["image_size"]  # the tiny towers' input side

CATEGORIES = ("a red object", "a circle", "an object moving to the left")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("curate")
    generate_world(WorldConfig(seed=3, num_videos=30, num_frames=8, size=64), root / "world", progress=False)
    tok = train_tokenizer(["a red object", "a circle moving to the left", "what does the blue square do"] * 20,
                          300)
    profile = Params.load().profile("tiny")
    text_cfg = dict(profile.text.config, vocab_size=len(tok), pad_token_id=tok.pad_token_id)
    siglip = SiglipModel(SiglipConfig(vision_config=profile.vision.config, text_config=text_cfg))
    save_model(siglip, root / "towers", tokenizer=tok)
    FramePreprocessor(image_size=IMAGE).save_pretrained(root / "towers")
    return root


def towers(world):
    return (SiglipVisionModel.from_pretrained(world / "towers").eval(),
            SiglipTextModel.from_pretrained(world / "towers").eval(), load_tokenizer(world / "towers"),
            FramePreprocessor.from_pretrained(world / "towers"))


def train_videos(world):
    test = {json.loads(l)["id"] for l in (world / "world" / "mcq_test.jsonl").read_text().splitlines()}
    ids = [json.loads(l)["id"] for l in (world / "world" / "scenes.jsonl").read_text().splitlines()]
    return [{"id": i, "video": str(world / "world" / "videos" / f"{i}.mp4")} for i in ids if i not in test]


def test_selection_takes_top_n_per_category_once_each_plus_seeded_random_extras():
    scores = np.array([[0.9, 0.8], [0.8, 0.1], [0.1, 0.7], [0.2, 0.6], [0.0, 0.0], [0.05, 0.05]])
    picks = dict(select_videos(scores, top_per_category=2, random_extra=1, seed=0))
    assert [v for v, r in picks.items() if r == "0"] == [0, 1]
    assert [v for v, r in picks.items() if r == "1"] == [2, 3]  # video 0 is taken already: next best
    assert list(picks.values()).count("random") == 1
    assert picks == dict(select_videos(scores, 2, 1, seed=0))


def test_curation_on_a_synthetic_pool_gives_the_expected_counts_and_shards(world):
    cfg = CurateConfig(categories=CATEGORIES, top_per_category=4, random_extra=5, frames=4, shard_size=7)
    vision, text, tok, pre = towers(world)
    videos = train_videos(world)
    gen = GroundTruthGenerator(world / "world" / "scenes.jsonl", 3, 0)
    out = world / "curated"
    manifest = run_curation(videos, cfg, out, vision, text, tok, pre, gen, world / "world", 32)
    assert manifest["per_category"] == {"a red object": 4, "a circle": 4, "an object moving to the left": 4,
                                         "random": 5}
    assert manifest["written"] == 17 and manifest["rejects"] == 0
    rows = [json.loads(l) for name in sorted(manifest["shards"]) for l in (out / name).read_text().splitlines()]
    assert len(rows) == 17 and len(manifest["shards"]) == 3
    assert len({r["id"] for r in rows}) == 17
    first = rows[0]
    assert first["conversations"][0]["value"].startswith("<video>\n")
    assert (world / "world" / first["video"]).is_file()
    assert len(first["conversations"]) == 6  # three instruction-description pairs


def test_unreadable_candidate_is_rejected_and_the_rest_curated(world, tmp_path):
    cfg = CurateConfig(categories=CATEGORIES, top_per_category=1, random_extra=0, frames=4)
    vision, text, tok, pre = towers(world)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 100)
    videos = train_videos(world)[:5] + [{"id": "broken", "video": str(broken)}]
    gen = GroundTruthGenerator(world / "world" / "scenes.jsonl", 3, 0)
    manifest = run_curation(videos, cfg, tmp_path / "out", vision, text, tok, pre, gen, world / "world", 32)
    assert manifest["scored"] == 5 and manifest["written"] == 3 and manifest["rejects"] == 1
    reject = json.loads((tmp_path / "out" / "rejects.jsonl").read_text())
    assert reject["id"] == "broken" and "broken.mp4" in reject["reason"]


@pytest.mark.parametrize("reply,message", [
    ("Sure! Here are some pairs.", "not JSON"),
    ('{"instruction": "What moves?", "description": "A ball."}', "non-empty JSON list"),
    ('[{"instruction": "What?", "description": "A red ball rolls."}]', "3\\+ words"),
    ('[{"instruction": "What does the ball do?", "description": "It rolls."}, '
     '{"instruction": "What does the ball do?", "description": "It rolls left."}]', "repeat"),
])
def test_malformed_generator_replies_are_refused(reply, message):
    with pytest.raises(MalformedReply, match=message):
        parse_pairs(reply, 3)


def test_fenced_json_reply_is_accepted():
    assert parse_pairs('```json\n[{"instruction": "What does the ball do?", "description": "It rolls left."}]\n```',
                       3) == [("What does the ball do?", "It rolls left.")]


class FakeVLM(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint: fails once with 503, then answers; malformed for some videos."""
    calls = []
    failed_once = False

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeVLM.calls.append(body)
        if not FakeVLM.failed_once:
            FakeVLM.failed_once = True
            self.send_response(503)
            self.end_headers()
            return
        frames = [c for c in body["messages"][0]["content"] if c["type"] == "image_url"]
        # the frame payload tells videos apart: every third distinct video gets a malformed reply
        bad = sum(map(ord, frames[0]["image_url"]["url"][-40:])) % 3 == 0
        content = "I cannot answer in JSON." if bad else json.dumps(
            [{"instruction": "What does the first object do?", "description": "It moves across the frame."}])
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_openai_generator_retries_caches_and_rejects_malformed_replies(world, tmp_path, monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeVLM)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("TEST_VLM_KEY", "secret-token")
    try:
        cfg = OpenAIConfig(base_url=f"http://127.0.0.1:{server.server_port}/v1", model="fake-vlm",
                           api_key_env="TEST_VLM_KEY", concurrency=2, max_retries=2, frames=2, retry_backoff_s=0.01)
        from hicom.data.dataset import RejectLog
        videos = train_videos(world)[:9]
        gen = OpenAIGenerator(cfg, 3, tmp_path / "cache")
        rejects = RejectLog(tmp_path / "rejects.jsonl")
        out = gen.generate(videos, rejects)
        rejected = {r["id"] for r in rejects.read()}
        assert rejected and out and rejected.isdisjoint(out) and len(rejected) + len(out) == 9
        assert all("MalformedReply" in r["reason"] for r in rejects.read())
        assert all(pairs == [("What does the first object do?", "It moves across the frame.")] for pairs in out.values())
        assert FakeVLM.calls[0]["model"] == "fake-vlm"
        n_calls = len(FakeVLM.calls)
        assert gen.generate([v for v in videos if v["id"] in out], RejectLog(tmp_path / "r2.jsonl")) == \
            {k: out[k] for k in out}
        assert len(FakeVLM.calls) == n_calls  # valid replies come from the cache
        assert len(list((tmp_path / "cache").glob("*.json"))) == len(out)  # malformed replies are not cached
    finally:
        server.shutdown()


def test_curate_config_rejects_unknown_fields_and_generators():
    with pytest.raises(ConfigError, match=r"^curate.top_n: unknown key"):
        build_section(CurateConfig, {"categories": ["x"], "top_n": 3}, "curate")
    with pytest.raises(ConfigError, match="^curate.generator: expected one of groundtruth, openai, got 'gpt'"):
        build_section(CurateConfig, {"categories": ["x"], "generator": "gpt"}, "curate")
    with pytest.raises(ConfigError, match="^curate.categories: at least one"):
        build_section(CurateConfig, {"categories": []}, "curate")


def test_curate_command_runs_on_a_world_given_relative_paths(world, tmp_path, capsys, monkeypatch):
    params = tmp_path / "params.yaml"
    import yaml

    from hicom.params import PARAMS_FILE
    data = yaml.safe_load(PARAMS_FILE.read_text())
    data["curate"].update(top_per_category=2, random_extra=3, frames=4)
    params.write_text(yaml.safe_dump(data))
    monkeypatch.chdir(world)
    rc = main(["--params", str(params), "curate", "--world", "world", "--towers", "towers", "--out", str(tmp_path / "cur")])
    assert rc == 0
    manifest = json.loads((tmp_path / "cur" / "manifest.json").read_text())
    assert manifest["written"] == 2 * len(data["curate"]["categories"]) + 3
    rows = [json.loads(l) for name in manifest["shards"] for l in (tmp_path / "cur" / name).read_text().splitlines()]
    assert all((world / "world" / r["video"]).is_file() for r in rows)  # paths are relative to the world
    assert "curate:" in capsys.readouterr().out
