"""Model registry: the served pyfunc, registration with alias challenger, and the promotion gate.

Everything runs against a real MLflow sqlite store in a temporary directory, with a tiny random-init
model saved by the test: the answers are not meant to be right, the path from a clip and a question to
a parsed reply is.
"""
import json
import random

import mlflow
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from hicom.cli import main
from hicom.core.errors import ConfigError
from hicom.data.synthetic import WorldConfig, make_scene, mcq, write_video
from hicom.data.tokenizer import train_tokenizer
from hicom.data.video import FramePreprocessor
from hicom.gate import (
    GateConfig,
    efficiency_metrics,
    eval_metrics,
    gate_decision,
    profile_row,
)
from hicom.model.build import build_model
from hicom.model.checkpoint import save_model
from hicom.params import Params
from hicom.registry import CHALLENGER, CHAMPION, promote, register_version

IMAGE = Params.load().profile("tiny").vision.config["image_size"]  # the tiny towers' input side

NAME = "hicom-test"


def profile_json(tokens=48, s_per_video=0.5, frames=32):
    """The rows of a profile stage's profile.json that the registry reads."""
    row = {"frames": frames, "params": {"total": 1}, "visual_tokens": tokens, "vision_ms": 10.0, "compressor_ms": 2.0,
           "llm_ttft_ms": 5.0, "s_per_video": s_per_video, "peak_memory_kind": "cpu_peak_rss_growth"}
    return {"rows": [{"model": "hicom", **row}, {"model": "llava_ov", **row, "visual_tokens": 4 * tokens}]}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny saved model, towers (instruction tokenizer + preprocessor), one rendered clip and its question,
    evaluation and profile results, and a sqlite MLflow store named by $MLFLOW_TRACKING_URI."""
    root = tmp_path_factory.mktemp("registry")
    scene = make_scene(random.Random(0), WorldConfig(num_videos=1, num_frames=8, size=64), "clip")
    write_video(scene, root / "clip.mp4")
    question = mcq(scene, random.Random(1))
    texts = [question["question"], *question["options"], "The answer is (B).", "A B C D"] * 4
    tokenizer = train_tokenizer(texts, 300, root / "tokenizer")
    from hicom.params import Params
    torch.manual_seed(0)
    save_model(build_model(Params.load().profile("tiny")), root / "model", tokenizer=tokenizer)
    tokenizer.save_pretrained(root / "towers")
    FramePreprocessor(IMAGE).save_pretrained(root / "towers")
    (root / "eval").mkdir()
    (root / "eval" / "results.json").write_text(json.dumps({"benchmark": "synthetic", "accuracy": 0.35, "total": 20}))
    (root / "profile.json").write_text(json.dumps(profile_json()))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
        yield {"root": root, "question": question, "client": MlflowClient()}
    mlflow.set_tracking_uri(None)  # registry calls set MLflow's global URI; later modules must not inherit it


@pytest.fixture(scope="module")
def registered(world):
    """`python -m hicom register` once: version 1 of NAME, from the tiny model, with eval and profile results."""
    root = world["root"]
    rc = main(["register", "--model", str(root / "model"), "--towers", str(root / "towers"), "--name", NAME,
               "--eval", str(root / "eval"), "--efficiency", str(root / "profile.json"),
               "--out", str(root / "registered.json")])
    assert rc == 0
    return json.loads((root / "registered.json").read_text())


def test_register_writes_its_result_and_tags_the_version_with_the_gate_metrics(world, registered):
    client = world["client"]
    assert registered == {"name": NAME, "version": "1", "run_id": registered["run_id"],
                          "model_uri": f"models:/{NAME}/1", "model_id": registered["model_id"]}
    version = client.get_model_version(NAME, "1")
    assert float(version.tags["accuracy/synthetic"]) == 0.35
    assert float(version.tags["efficiency/visual_tokens"]) == 48 and float(version.tags["efficiency/s_per_video"]) == 0.5
    assert version.tags["profile"] == "tiny" and "git_commit" in version.tags
    assert "accuracy/synthetic: 0.3500" in version.description
    assert client.get_model_version_by_alias(NAME, CHALLENGER).version == 1
    assert client.get_logged_model(registered["model_id"]).source_run_id == registered["run_id"]
    run = client.get_run(registered["run_id"])
    assert run.info.run_name == "register" and run.data.tags["stage"] == "register"
    assert run.data.metrics["accuracy/synthetic"] == 0.35
    logged = {a.path for folder in ("eval/synthetic", "efficiency") for a in client.list_artifacts(run.info.run_id, folder)}
    assert logged == {"eval/synthetic/results.json", "efficiency/profile.json"}


def test_champion_loaded_by_alias_answers_a_question_about_a_generated_clip(world, registered):
    root, question = world["root"], world["question"]
    rc = main(["promote", "--name", NAME, "--version", registered["version"], "--out", str(root / "promoted.json")])
    assert rc == 0
    assert json.loads((root / "promoted.json").read_text())["champion_version"] == registered["version"]
    served = mlflow.pyfunc.load_model(f"models:/{NAME}@{CHAMPION}")
    answers = served.predict(pd.DataFrame([{"video": str(root / "clip.mp4"), "question": question["question"],
                                            "options": question["options"]}]))
    assert list(answers.columns) == ["reply", "choice", "answer"] and len(answers) == 1
    reply, choice, answer = answers.iloc[0]
    assert isinstance(reply, str)
    assert choice in (None, "A", "B", "C", "D")
    assert answer == (question["options"]["ABCD".index(choice)] if choice else reply)


def test_served_model_parses_a_reply_into_the_chosen_letter_and_option(world, registered):
    served = mlflow.pyfunc.load_model(registered["model_uri"])
    inner = served.unwrap_python_model()
    reply_ids = inner.tokenizer("The answer is (B).", add_special_tokens=False)["input_ids"]
    inner.model.generate = lambda *args, **kwargs: torch.tensor([reply_ids])
    question = world["question"]
    answers = served.predict({"video": str(world["root"] / "clip.mp4"), "question": question["question"],
                              "options": question["options"]})
    assert answers.iloc[0].to_dict() == {"reply": "The answer is (B).", "choice": "B",
                                         "answer": question["options"][1]}
    open_question = served.predict({"video": str(world["root"] / "clip.mp4"), "question": "What moves?"})
    assert open_question.iloc[0].to_dict() == {"reply": "The answer is (B).", "choice": None,
                                               "answer": "The answer is (B)."}


# -- the gate against the registry ---------------------------------------------------------------
def add_version(registered, name, accuracy=0.5, tokens=48.0, latency=1.0):
    """A new version of `name` (from the one logged model) carrying these gate metrics."""
    metrics = {"accuracy/synthetic": accuracy, "efficiency/visual_tokens": tokens, "efficiency/s_per_video": latency}
    return register_version(name, model_uri=f"models:/{registered['model_id']}", model_id=registered["model_id"],
                            run_id=registered["run_id"], metrics=metrics)["version"]


def champion(world, name):
    return str(world["client"].get_model_version_by_alias(name, CHAMPION).version)


def test_first_registered_version_becomes_champion(world, registered):
    v1 = add_version(registered, "gate-first")
    result = promote(name="gate-first", version=None, gate=GateConfig())  # the challenger by default
    assert result["promoted"] and result["champion_version"] == v1 == champion(world, "gate-first")
    assert result["reasons"] == ["no champion yet: the first registered version becomes champion"]


def test_better_challenger_becomes_champion_and_the_decision_is_logged(world, registered):
    client = world["client"]
    v1 = add_version(registered, "gate-better")
    promote(name="gate-better", version=v1, gate=GateConfig())
    v2 = add_version(registered, "gate-better", accuracy=0.6, latency=0.9)
    result = promote(name="gate-better", version=v2, gate=GateConfig())
    assert result["promoted"] and result["previous_champion_version"] == v1
    assert champion(world, "gate-better") == v2
    assert all(reason.startswith("pass") for reason in result["reasons"])
    tags = client.get_model_version("gate-better", v2).tags
    assert tags["promotion"] == "promoted" and tags["promotion.compared_with"] == v1
    run = client.get_run(tags["promotion.run_id"])
    assert run.data.tags["stage"] == "promote" and run.data.tags["promotion"] == "promoted"
    assert "promotion.json" in {a.path for a in client.list_artifacts(run.info.run_id)}


def test_lower_accuracy_leaves_the_champion_in_place_and_says_why(world, registered):
    client = world["client"]
    v1 = add_version(registered, "gate-worse")
    promote(name="gate-worse", version=v1, gate=GateConfig())
    v2 = add_version(registered, "gate-worse", accuracy=0.45, latency=0.5)
    result = promote(name="gate-worse", version=v2, gate=GateConfig(accuracy_max_drop=0.01))
    assert not result["promoted"] and result["champion_version"] == v1 == champion(world, "gate-worse")
    assert [r for r in result["reasons"] if r.startswith("FAIL")] == [
        "FAIL accuracy/synthetic: 0.4500 vs champion 0.5000 (may drop at most 0.01)"]
    tags = client.get_model_version("gate-worse", v2).tags
    assert tags["promotion"] == "rejected" and "FAIL accuracy/synthetic" in tags["promotion.reasons"]
    assert client.get_model_version_by_alias("gate-worse", CHALLENGER).version == int(v2)


def test_more_visual_tokens_leave_the_champion_in_place_even_with_better_accuracy(world, registered):
    v1 = add_version(registered, "gate-tokens")
    promote(name="gate-tokens", version=v1, gate=GateConfig())
    v2 = add_version(registered, "gate-tokens", accuracy=0.9, tokens=49.0)
    result = promote(name="gate-tokens", version=v2, gate=GateConfig(visual_tokens_max_increase=0.0))
    assert not result["promoted"] and champion(world, "gate-tokens") == v1
    assert [r.split(":")[0] for r in result["reasons"] if r.startswith("FAIL")] == ["FAIL efficiency/visual_tokens"]


def test_equal_challenger_passes_the_gate(world, registered):
    v1 = add_version(registered, "gate-equal")
    promote(name="gate-equal", version=v1, gate=GateConfig())
    v2 = add_version(registered, "gate-equal")
    result = promote(name="gate-equal", version=v2, gate=GateConfig(0.0, 0.0, 0.0))
    assert result["promoted"] and champion(world, "gate-equal") == v2


def test_promoting_the_champion_again_changes_nothing(world, registered):
    v1 = add_version(registered, "gate-again")
    promote(name="gate-again", version=v1, gate=GateConfig())
    result = promote(name="gate-again", version=v1, gate=GateConfig())
    assert not result["promoted"] and result["reasons"] == [f"version {v1} is already the champion"]
    assert champion(world, "gate-again") == v1


def test_promote_of_an_unknown_model_or_version_fails_naming_it(world, registered, capsys):
    assert main(["promote", "--name", "no-such-model", "--out", str(world["root"] / "x.json")]) == 2
    assert "registered model 'no-such-model' does not exist" in capsys.readouterr().err
    assert main(["promote", "--name", NAME, "--version", "99", "--out", str(world["root"] / "x.json")]) == 2
    assert f"registered model '{NAME}' has no version '99'" in capsys.readouterr().err
    assert not (world["root"] / "x.json").exists()


# -- the gate's rules, without a store -----------------------------------------------------------
CHAMP = {"accuracy/a": 0.5, "accuracy/b": 0.4, "efficiency/visual_tokens": 100.0, "efficiency/s_per_video": 1.0}


@pytest.mark.parametrize("change,passed", [
    ({"accuracy/a": 0.495}, True),  # within the 0.01 tolerance
    ({"accuracy/a": 0.485}, False),
    ({"efficiency/s_per_video": 1.2}, True),  # within 25 %
    ({"efficiency/s_per_video": 1.3}, False),
    ({"efficiency/visual_tokens": 101.0}, False),
    ({"efficiency/visual_tokens": 50.0, "accuracy/b": 0.9}, True),
])
def test_gate_applies_each_tolerance(change, passed):
    gate = GateConfig(accuracy_max_drop=0.01, visual_tokens_max_increase=0.0, latency_max_increase=0.25)
    assert gate_decision({**CHAMP, **change}, CHAMP, gate).passed is passed


def test_challenger_missing_a_benchmark_the_champion_has_is_rejected():
    challenger = {k: v for k, v in CHAMP.items() if k != "accuracy/b"}
    decision = gate_decision(challenger, CHAMP, GateConfig())
    assert not decision.passed
    assert "FAIL accuracy/b: challenger was not evaluated on it (champion 0.4000)" in decision.reasons


def test_a_new_benchmark_is_reported_but_not_compared():
    decision = gate_decision({**CHAMP, "accuracy/c": 0.1}, CHAMP, GateConfig())
    assert decision.passed and "new accuracy/c: 0.1000 (champion has none; not compared)" in decision.reasons


# -- inputs, checked before anything is logged ---------------------------------------------------
def test_results_without_a_benchmark_or_a_score_are_errors_naming_the_file():
    with pytest.raises(ConfigError, match=r"x/results.json: no top-level 'benchmark' field"):
        eval_metrics({"accuracy": 0.3}, "x/results.json")
    with pytest.raises(ConfigError, match=r"x/results.json: accuracy must be a number .* got None"):
        eval_metrics({"benchmark": "mvbench", "accuracy": None}, "x/results.json")


def test_profile_without_the_configured_frame_count_is_an_error_naming_it():
    with pytest.raises(ConfigError, match=r"p.json: no row with model 'hicom' at frames=64 .* registry.efficiency_frames"):
        profile_row(profile_json(frames=32), 64, "p.json")
    row = profile_row(profile_json(), 32)
    assert efficiency_metrics(row)["efficiency/visual_tokens"] == 48.0
    with pytest.raises(ConfigError, match="has no numeric 's_per_video'"):
        efficiency_metrics({k: v for k, v in row.items() if k != "s_per_video"})


def test_register_with_a_bad_results_file_fails_before_logging_anything(world, tmp_path, capsys):
    (tmp_path / "results.json").write_text(json.dumps({"accuracy": 0.3}))
    runs_before = len(world["client"].search_runs([e.experiment_id for e in world["client"].search_experiments()]))
    rc = main(["register", "--model", str(world["root"] / "model"), "--towers", str(world["root"] / "towers"),
               "--eval", str(tmp_path), "--name", "never", "--out", str(tmp_path / "out.json")])
    assert rc == 2 and "no top-level 'benchmark' field" in capsys.readouterr().err
    runs_after = len(world["client"].search_runs([e.experiment_id for e in world["client"].search_experiments()]))
    assert runs_after == runs_before and not (tmp_path / "out.json").exists()
