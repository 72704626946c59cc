import json
import time

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from hicom.cli import main
from hicom.core.errors import ConfigError, DataError
from hicom.core.sections import build_section
from hicom.data.video import FramePreprocessor
from hicom.efficiency.accuracy import load_eval_results, resolve_tokens
from hicom.efficiency.fields import (
    PARAM_FIELDS,
    QUESTION_PARTS,
    RATIO_FIELDS,
    ROW_FIELDS,
)
from hicom.efficiency import run as efficiency_run
from hicom.efficiency.flops import question_flops
from hicom.efficiency.inputs import model_pair, random_prompt, render_clips
from hicom.efficiency.measure import PeakMemory
from hicom.efficiency.outputs import log_to_tracker, write_outputs
from hicom.efficiency.run import measure_efficiency
from hicom.efficiency.settings import EfficiencySettings
from hicom.model.build import baseline_of, build_model
from hicom.model.compressor import LlavaOVProjector
from hicom.params import PARAMS_FILE, Params
from hicom.report import measure_tokens
from hicom.tracking import Tracker

FRAMES = (4, 8)
SMALL = {"frames": list(FRAMES), "samples": 1, "warmup": 0, "repeats": 1, "max_new_tokens": 2, "prompt_tokens": 16,
         "clips": {"count": 1, "num_frames": 16, "fps": 8, "size": 64, "seed": 0}}


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    """One small profile of the tiny model (2 frame counts, 1 sample), shared by the tests that read it."""
    torch.manual_seed(0)
    profile = Params.load().profile("tiny")
    settings = build_section(EfficiencySettings, SMALL, "efficiency")
    clips = render_clips(settings.clips, tmp_path_factory.mktemp("clips"))
    models = model_pair(build_model(profile), torch.device("cpu"), torch.float32)
    result = measure_efficiency(models, profile_name="tiny", model_source="test", clips=clips, clips_source="test clip",
                         prompt=random_prompt(models["hicom"].config, settings.prompt_tokens),
                         preprocessor=FramePreprocessor(profile.vision.config["image_size"]), settings=settings,
                         decoder="pyav", device=torch.device("cpu"))
    return profile, models, result


def tokens_at(frames: int) -> tuple[int, int]:
    """(HICom, baseline) visual tokens of the tiny profile, as the report counts them on the meta device."""
    profile = Params.load().profile("tiny")
    return (measure_tokens(build_model(profile, device="meta"), frames),
            measure_tokens(build_model(baseline_of(profile), device="meta"), frames))


def test_every_row_has_every_field_for_both_models_at_each_frame_count(profiled):
    _, _, result = profiled
    expected = {(model, frames) for model in ("hicom", "llava_ov") for frames in FRAMES}
    assert {(r["model"], r["frames"]) for r in result["rows"]} == expected
    for row in result["rows"]:
        assert set(row) == set(ROW_FIELDS)
        assert set(row["params"]) == set(PARAM_FIELDS)
        for key in ("vision_ms", "compressor_ms", "llm_ttft_ms", "load_ms", "e2e_ms", "s_per_video"):
            assert row[key] > 0, key
        assert row["e2e_ms"] > row["load_ms"]
        parts = row["question_parts_ms"]
        assert set(parts) == set(QUESTION_PARTS) and min(parts.values()) >= 0
        assert parts["vision"] > 0 and parts["compressor"] > 0 and parts["llm"] > 0
        assert sum(parts.values()) == pytest.approx(1e3 * row["s_per_video"])
        assert row["peak_memory_kind"] == "cpu_peak_rss_growth" and row["peak_memory_mb"] >= 0
    assert [set(q) for q in result["ratios"]] == [{"frames", *RATIO_FIELDS}] * len(FRAMES)


def test_visual_tokens_and_parameters_match_the_meta_device_report(profiled):
    profile, _, result = profiled
    meta = {"hicom": build_model(profile, device="meta"), "llava_ov": build_model(baseline_of(profile), device="meta")}
    for row in result["rows"]:
        assert row["visual_tokens"] == measure_tokens(meta[row["model"]], row["frames"])
        assert row["params"]["projector"] == sum(p.numel() for p in meta[row["model"]].projector.parameters())
    hicom_text = {r["params"]["text"] for r in result["rows"] if r["model"] == "hicom"}
    assert hicom_text == {sum(p.numel() for p in meta["hicom"].text_tower.parameters())}
    assert {r["params"]["text"] for r in result["rows"] if r["model"] == "llava_ov"} == {0}


def test_prefill_flops_ratio_exceeds_one_and_follows_the_prefill_lengths(profiled):
    """Attention FLOPs grow with L^2 (counted dense), the rest with L: the ratio is in [r, r^2], r the length ratio."""
    _, _, result = profiled
    rows = {(r["model"], r["frames"]): r for r in result["rows"]}
    flops_per_extra_token = []
    for q in result["ratios"]:
        r = q["llm_prefill_tokens"]
        assert q["visual_tokens"] > r > 1
        assert r < q["llm_prefill_flops"] < r * r
        hicom, base = rows[("hicom", q["frames"])], rows[("llava_ov", q["frames"])]
        assert base["llm_prefill_attention_flops"] / hicom["llm_prefill_attention_flops"] == pytest.approx(r * r)
        linear = [row["llm_prefill_flops"] - row["llm_prefill_attention_flops"] for row in (hicom, base)]
        extra_tokens = base["llm_prefill_tokens"] - hicom["llm_prefill_tokens"]
        flops_per_extra_token.append((linear[1] - linear[0]) / extra_tokens)
    assert flops_per_extra_token[0] > 0
    assert flops_per_extra_token == pytest.approx([flops_per_extra_token[0]] * len(FRAMES))


def test_baseline_counterpart_shares_towers_and_llm_and_has_the_llava_ov_projector(profiled):
    _, models, _ = profiled
    hicom, base = models["hicom"], models["llava_ov"]
    assert base.vision_tower is hicom.vision_tower and base.language_model is hicom.language_model
    assert base.text_tower is None and isinstance(base.projector, LlavaOVProjector)
    assert not any(p.is_meta for p in base.parameters())


def test_outputs_are_written_and_the_accuracy_plot_only_with_eval_results(profiled, tmp_path):
    _, models, result = profiled
    files = write_outputs(result, tmp_path / "plain")
    assert sorted(files) == ["latency_breakdown.png", "profile.json", "table.md"]
    assert not (tmp_path / "plain" / "accuracy_vs_tokens.png").exists()
    assert files["latency_breakdown.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = files["table.md"].read_text()
    assert "| LLaVA-OV baseline | 8 |" in table and "Baseline / HICom:" in table
    assert "Accuracy vs tokens: not drawn: no --eval-results given" in table
    assert json.loads(files["profile.json"].read_text())["rows"] == json.loads(json.dumps(result["rows"]))

    results_file = tmp_path / "sft_eval" / "results.json"
    results_file.parent.mkdir()
    results_file.write_text(json.dumps({"benchmark": "synthetic", "accuracy": 0.4, "chance": 0.25,
                                        "settings": {"frames": 8}}))
    points = resolve_tokens(load_eval_results([results_file]), models["hicom"], default_frames=32)
    assert points[0]["visual_tokens"] == models["hicom"].num_visual_tokens(8)
    assert points[0]["tokens_source"] == "assumed: the profiled HICom model at 8 frames"
    assert points[0]["label"] == "synthetic"
    files = write_outputs({**result, "accuracy_vs_tokens": points, "accuracy_plot": "accuracy_vs_tokens.png"},
                          tmp_path / "with_eval")
    assert files["accuracy_vs_tokens.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_profile_metrics_and_files_are_logged_to_mlflow(profiled, tmp_path):
    _, _, result = profiled
    files = write_outputs(result, tmp_path / "out")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with Tracker(tracking_uri=uri, experiment="profile-test", system_metrics=False) as tracker:
        log_to_tracker(tracker, result, files)
    client = MlflowClient(uri)
    run = client.get_run(tracker.run_id)
    tokens = {(r["model"], r["frames"]): r["visual_tokens"] for r in result["rows"]}
    assert run.data.metrics["llava_ov.f8.visual_tokens"] == tokens["llava_ov", 8]
    assert run.data.metrics["ratio.f8.visual_tokens"] == pytest.approx(tokens["llava_ov", 8] / tokens["hicom", 8])
    assert run.data.params["efficiency.frames"] == "[4, 8]"
    assert sorted(a.path for a in client.list_artifacts(tracker.run_id, "efficiency")) == [
        "efficiency/latency_breakdown.png", "efficiency/profile.json", "efficiency/table.md"]


def test_peak_memory_on_the_cpu_sees_a_large_allocation():
    with PeakMemory(torch.device("cpu"), interval_s=0.001) as peak:
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
        block.add_(1)
        time.sleep(0.05)
        del block
    assert peak.kind == "cpu_peak_rss_growth"
    assert peak.bytes >= 48 * 2**20


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ('{"total": 3}', "field 'accuracy' must be a number in \\[0, 1\\], got None"),
    ('{"accuracy": 0.5, "visual_tokens": 0}', "field 'visual_tokens' must be a positive integer, got 0"),
])
def test_malformed_eval_results_name_the_file_and_field(tmp_path, content, message):
    path = tmp_path / "results.json"
    path.write_text(content)
    with pytest.raises(DataError, match=f"{path}: {message}"):
        load_eval_results([path])


def test_settings_reject_unknown_fields_and_bad_counts():
    with pytest.raises(ConfigError, match=r"efficiency\.sample: unknown key"):
        build_section(EfficiencySettings, {"sample": 3}, "efficiency")
    with pytest.raises(ConfigError, match="efficiency.repeats: must be an integer >= 1, got 0"):
        build_section(EfficiencySettings, {"repeats": 0}, "efficiency")
    with pytest.raises(ConfigError, match="efficiency.frames"):
        build_section(EfficiencySettings, {"frames": [32, 0]}, "efficiency")
    with pytest.raises(ConfigError, match="efficiency.clips.size: must be even"):
        build_section(EfficiencySettings, {"clips": {"size": 63}}, "efficiency")
    assert Params.load().efficiency.frames == (32, 64, 128)


@pytest.fixture
def small_params(tmp_path):
    params = yaml.safe_load(PARAMS_FILE.read_text())
    params["efficiency"] = {**params["efficiency"], "clips": SMALL["clips"], "prompt_tokens": 16}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_cli_profiles_the_tiny_model_without_tracking(small_params, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["--params", str(small_params), "efficiency", "--profile", "tiny", "--frames", "4", "--samples", "1",
                 "--warmup", "0", "--repeats", "1", "--threads", "1", "--no-track", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    hicom, base = tokens_at(4)
    assert f"4 frames: visual tokens LLaVA-OV baseline {base} vs HICom {hicom} ({base / hicom:.2f}x); LLM prefill time" \
        in printed
    result = json.loads((out / "profile.json").read_text())
    assert [(r["model"], r["frames"]) for r in result["rows"]] == [("hicom", 4), ("llava_ov", 4)]
    assert result["environment"]["torch_threads"] == 1
    assert sorted(p.name for p in out.iterdir()) == ["latency_breakdown.png", "profile.json", "table.md"]


def test_cli_missing_eval_results_file_is_a_clear_error_before_profiling(small_params, tmp_path, capsys):
    missing = tmp_path / "nowhere" / "results.json"
    code = main(["--params", str(small_params), "efficiency", "--profile", "tiny", "--frames", "4", "--no-track",
                 "--eval-results", str(missing), "--out", str(tmp_path / "out")])
    assert code == 2
    assert f"error: --eval-results: {missing}: no such file" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_profiles_a_saved_model_with_a_tokenised_question(small_params, tiny_profile, tmp_path):
    from hicom.data.tokenizer import train_tokenizer
    from hicom.efficiency.inputs import EFFICIENCY_QUESTION
    from hicom.model.checkpoint import save_model

    towers = tmp_path / "towers"  # stands in for a SigLIP directory: instruction tokenizer + preprocessor
    tokenizer = train_tokenizer([EFFICIENCY_QUESTION, "a red circle moves left"] * 4, 300, towers)
    FramePreprocessor(tiny_profile.vision.config["image_size"]).save_pretrained(towers)
    save_model(build_model(tiny_profile), tmp_path / "model", tokenizer)
    out = tmp_path / "out"
    code = main(["--params", str(small_params), "efficiency", "--profile", "tiny", "--model", str(tmp_path / "model"),
                 "--towers", str(towers), "--frames", "4", "--samples", "1", "--warmup", "0", "--repeats", "1",
                 "--no-track", "--out", str(out)])
    assert code == 0
    result = json.loads((out / "profile.json").read_text())
    assert result["model_source"].startswith(f"trained HICom from {tmp_path / 'model'}")
    assert result["prompt"]["source"] == "tokenised multiple-choice question"
    assert result["prompt"]["guide_tokens"] == tiny_profile.guide_max_length
    assert [r["visual_tokens"] for r in result["rows"]] == list(tokens_at(4))


def test_question_flops_on_the_meta_device_count_what_the_measured_prefill_counted(profiled):
    profile, _, result = profiled
    meta = {"hicom": build_model(profile, device="meta"), "llava_ov": build_model(baseline_of(profile), device="meta")}
    for row in result["rows"]:
        text_tokens = row["llm_prefill_tokens"] - row["visual_tokens"]
        counts = question_flops(meta[row["model"]], row["frames"], text_tokens)
        assert counts["llm_prefill"] == row["llm_prefill_flops"], (row["model"], row["frames"])
        assert counts["vision"] > 0 and counts["compressor"] > 0
        assert counts["total"] == counts["vision"] + counts["compressor"] + counts["llm_prefill"]
    # The same tower on the same frames: vision FLOPs differ only by what HICom reads off the tower (embeds).
    by_model = {r["model"]: question_flops(meta[r["model"]], r["frames"], 16) for r in result["rows"]
                if r["frames"] == FRAMES[0]}
    assert by_model["hicom"]["vision"] >= by_model["llava_ov"]["vision"]
    assert by_model["llava_ov"]["llm_prefill"] > by_model["hicom"]["llm_prefill"]


def test_each_round_of_timing_starts_with_the_other_model(monkeypatch, tmp_path):
    """Neither model always runs first (in the cache and allocator state the other left): components and
    questions alike rotate the first model from round to round."""
    torch.manual_seed(0)
    profile = Params.load().profile("tiny")
    settings = build_section(EfficiencySettings, {**SMALL, "frames": [4], "samples": 4, "warmup": 1, "repeats": 3},
                             "efficiency")
    models = model_pair(build_model(profile), torch.device("cpu"), torch.float32)
    names = {id(model): name for name, model in models.items()}
    order = {"component_seconds": [], "answer_question": []}
    for function in order:
        real = getattr(efficiency_run, function)

        def spy(model, *args, _real=real, _calls=order[function], **kwargs):
            _calls.append(names[id(model)])
            return _real(model, *args, **kwargs)

        monkeypatch.setattr(efficiency_run, function, spy)
    measure_efficiency(models, profile_name="tiny", model_source="test",
                       clips=render_clips(settings.clips, tmp_path), clips_source="test clip",
                       prompt=random_prompt(models["hicom"].config, settings.prompt_tokens),
                       preprocessor=FramePreprocessor(profile.vision.config["image_size"]), settings=settings,
                       decoder="pyav", device=torch.device("cpu"))
    del order["answer_question"][8:]  # after the 4 timed rounds: one untimed question each for peak memory
    firsts = {function: calls[::2] for function, calls in order.items()}
    assert firsts["component_seconds"] == ["hicom", "llava_ov", "hicom", "llava_ov"]  # 1 warm-up + 3 repeats
    assert firsts["answer_question"] == ["hicom", "llava_ov", "hicom", "llava_ov"]
    assert all(sorted(calls[i:i + 2]) == ["hicom", "llava_ov"] for calls in order.values()
               for i in range(0, len(calls), 2))
