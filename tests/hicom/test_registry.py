"""Model registry: the served pyfunc, registration with alias challenger, and the promotion gate.

Everything runs against a real MLflow sqlite store in a temporary directory, with a tiny random-init
model saved by the test: the answers are not meant to be right, the path from a clip and a question to
a parsed reply is.
"""
import json
import random
import uuid

import mlflow
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient
from paired_answers import answers, flipped

from hicom.cli import main
from hicom.core.errors import ConfigError
from hicom.data.synthetic import WorldConfig, make_scene, mcq, write_video
from hicom.data.tokenizer import train_tokenizer
from hicom.data.video import FramePreprocessor
from hicom.evaluate.scoring import summarise
from hicom.gate.decision import efficiency_metrics, eval_metrics, profile_row
from hicom.gate.settings import GateConfig
from hicom.model.build import build_model
from hicom.model.checkpoint import save_model
from hicom.params import Params
from hicom.registry import CHALLENGER, CHAMPION, promote, register_version
from hicom.tracking import Tracker

IMAGE = Params.load().profile("tiny").vision.config["image_size"]  # the tiny towers' input side

NAME = "hicom-test"
GATE = GateConfig(accuracy_margin=0.05, min_questions=50)



def results_json(correct: list[bool], per_video: int = 4) -> dict:
    """An evaluate stage's results.json for these answers, scored as an evaluation scores them."""
    records = [{"id": f"q{i}", "video": f"v{i // per_video}", "answer": "A", "choice": "A" if right else "B",
                "correct": right, "num_options": 4, "groups": {}, "instruction_valid": True}
               for i, right in enumerate(correct)]
    return {"benchmark": "synthetic", **summarise(records)}


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
    (root / "eval" / "results.json").write_text(json.dumps(results_json(answers(60))))
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
    results = json.loads((world["root"] / "eval" / "results.json").read_text())
    ci = results["accuracy_ci"]
    assert float(version.tags["accuracy/synthetic"]) == results["accuracy"]
    assert float(version.tags["accuracy/synthetic/ci_low"]) == ci["low"] and float(version.tags["accuracy/synthetic/n"]) == 60
    assert version.tags["question_set/synthetic"] == results["question_set"]
    assert float(version.tags["efficiency/visual_tokens"]) == 48 and float(version.tags["efficiency/s_per_video"]) == 0.5
    assert version.tags["profile"] == "tiny" and "git_commit" in version.tags
    assert (f"accuracy/synthetic: {results['accuracy']:.4f} [95% CI {ci['low']:.4f}, {ci['high']:.4f}], n=60"
            in version.description)
    assert client.get_model_version_by_alias(NAME, CHALLENGER).version == 1
    assert client.get_logged_model(registered["model_id"]).source_run_id == registered["run_id"]
    run = client.get_run(registered["run_id"])
    assert run.info.run_name == "register" and run.data.tags["stage"] == "register"
    assert run.data.metrics["accuracy/synthetic"] == results["accuracy"]
    assert run.data.metrics["accuracy/synthetic/ci_high"] == ci["high"]
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


@pytest.mark.parametrize("protocol", ["likelihood", "generate"])
def test_served_model_answers_by_the_protocol_it_was_evaluated_on_and_returns_a_choice(world, protocol):
    """A model promoted on option-likelihood accuracy is served by option likelihood (no generation, a choice on
    every multiple-choice question); one evaluated by generation generates and parses its reply."""
    root, question = world["root"], world["question"]
    folder = root / f"eval-{protocol}"
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps({**results_json(answers(60)), "protocol": protocol,
                                                     "variant": "likelihood" if protocol == "likelihood" else "default"}))
    name = f"{NAME}-{protocol}"
    assert main(["register", "--model", str(root / "model"), "--towers", str(root / "towers"), "--name", name,
                 "--eval", str(folder), "--out", str(root / f"registered-{protocol}.json")]) == 0
    assert main(["promote", "--name", name, "--version", "1", "--out", str(root / f"promoted-{protocol}.json")]) == 0
    served = mlflow.pyfunc.load_model(f"models:/{name}@{CHAMPION}")
    inner = served.unwrap_python_model()
    if protocol == "likelihood":
        def no_generation(*args, **kwargs):
            raise AssertionError("a likelihood model must not generate")
        inner.model.generate = no_generation
    else:
        reply_ids = inner.tokenizer("The answer is (C).", add_special_tokens=False)["input_ids"]
        inner.model.generate = lambda *args, **kwargs: torch.tensor([reply_ids])
    row = served.predict({"video": str(root / "clip.mp4"), "question": question["question"],
                          "options": question["options"]}).iloc[0].to_dict()
    assert row["choice"] in ("A", "B", "C", "D") and row["answer"] == question["options"]["ABCD".index(row["choice"])]
    if protocol == "generate":
        assert row == {"reply": "The answer is (C).", "choice": "C", "answer": question["options"][2]}


# -- the gate against the registry ---------------------------------------------------------------
def add_version(world, registered, name, correct=None, tokens=48.0, latency=1.0, records=True):
    """A new version of `name` (from the one logged model) with its own run holding eval/synthetic/results.json
    for these answers (records=False: the run has no evaluation, as versions registered before records were)."""
    content = results_json(correct if correct is not None else answers(400))
    folder = world["root"] / f"eval-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps(content))
    with Tracker(run_name="register", system_metrics=False, tags={"stage": "register"}) as tracker:
        if records:
            tracker.log_artifact(folder / "results.json", "eval/synthetic")
    metrics = {**eval_metrics(content), "efficiency/visual_tokens": tokens, "efficiency/s_per_video": latency}
    return register_version(name, model_uri=f"models:/{registered['model_id']}", model_id=registered["model_id"],
                            run_id=tracker.run_id, metrics=metrics,
                            question_sets={"synthetic": content["question_set"]})["version"]


def champion(world, name):
    return str(world["client"].get_model_version_by_alias(name, CHAMPION).version)


def test_first_registered_version_becomes_champion(world, registered):
    v1 = add_version(world, registered, "gate-first")
    result = promote(name="gate-first", version=None, gate=GATE)  # the challenger by default
    assert result["promoted"] and result["champion_version"] == v1 == champion(world, "gate-first")
    assert result["reasons"] == ["no champion yet: the first registered version becomes champion"]


def test_better_challenger_becomes_champion_and_the_paired_numbers_are_logged(world, registered):
    client = world["client"]
    old = answers(400)
    v1 = add_version(world, registered, "gate-better", old)
    promote(name="gate-better", version=v1, gate=GATE)
    v2 = add_version(world, registered, "gate-better", flipped(old, 10, 50), latency=0.9)
    result = promote(name="gate-better", version=v2, gate=GATE)
    assert result["promoted"] and result["outcome"] == "promoted" and result["previous_champion_version"] == v1
    assert champion(world, "gate-better") == v2
    assert all(reason.startswith("pass") for reason in result["reasons"])
    numbers = result["comparisons"]["synthetic"]
    assert numbers["n"] == 400 and numbers["difference"] == pytest.approx(40 / 400) and numbers["ci_low"] > -0.05
    tags = client.get_model_version("gate-better", v2).tags
    assert tags["promotion"] == "promoted" and tags["promotion.compared_with"] == v1
    assert tags["gate/synthetic/verdict"] == "pass" and tags["gate/synthetic/n"] == "400"
    assert float(tags["gate/synthetic/difference"]) == pytest.approx(0.1)
    assert float(tags["gate/synthetic/ci_low"]) == numbers["ci_low"] and "cluster bootstrap" in tags["gate/synthetic/method"]
    assert tags["gate/synthetic/question_set"] == tags["question_set/synthetic"]
    run = client.get_run(tags["promotion.run_id"])
    assert run.data.tags["stage"] == "promote" and run.data.tags["promotion"] == "promoted"
    assert run.data.tags["gate/synthetic/ci_high"] == tags["gate/synthetic/ci_high"]
    assert "promotion.json" in {a.path for a in client.list_artifacts(run.info.run_id)}


def test_clearly_worse_accuracy_is_rejected_and_says_why(world, registered):
    client = world["client"]
    old = answers(2000)
    v1 = add_version(world, registered, "gate-worse", old)
    promote(name="gate-worse", version=v1, gate=GATE)
    v2 = add_version(world, registered, "gate-worse", flipped(old, 300, 100), latency=0.5)
    result = promote(name="gate-worse", version=v2, gate=GATE)
    assert not result["promoted"] and result["outcome"] == "rejected"
    assert result["champion_version"] == v1 == champion(world, "gate-worse")
    [failed] = [r for r in result["reasons"] if r.startswith("FAIL")]
    assert failed.startswith("FAIL accuracy/synthetic: challenger") and "-0.100 [95% CI" in failed
    assert failed.endswith("the interval lies below -0.05 (worse)")
    tags = client.get_model_version("gate-worse", v2).tags
    assert tags["promotion"] == "rejected" and tags["gate/synthetic/verdict"] == "worse"
    assert client.get_model_version_by_alias("gate-worse", CHALLENGER).version == int(v2)


def test_slightly_worse_on_a_small_set_is_inconclusive_and_keeps_the_champion(world, registered, capsys):
    client = world["client"]
    old = answers(60)
    v1 = add_version(world, registered, "gate-small", old)
    promote(name="gate-small", version=v1, gate=GATE)
    v2 = add_version(world, registered, "gate-small", flipped(old, 7, 5))
    out = world["root"] / "small.json"
    assert main(["promote", "--name", "gate-small", "--version", v2, "--out", str(out)]) == 0  # params' gate
    result = json.loads(out.read_text())
    assert result["outcome"] == "inconclusive" and champion(world, "gate-small") == v1
    assert "not promoted (inconclusive: champion kept)" in capsys.readouterr().out
    tags = client.get_model_version("gate-small", v2).tags
    assert tags["promotion"] == "inconclusive" and tags["gate/synthetic/verdict"] == "inconclusive"
    assert float(tags["gate/synthetic/ci_low"]) < -0.05 < float(tags["gate/synthetic/ci_high"])


def test_a_champion_registered_without_records_is_kept_and_the_reason_names_it(world, registered):
    v1 = add_version(world, registered, "gate-legacy", records=False)
    with pytest.raises(ConfigError, match=f"version {v1}: its run .* has no artifact eval/synthetic/results.json"):
        promote(name="gate-legacy", version=v1, gate=GATE)  # a challenger without records is refused
    world["client"].set_registered_model_alias("gate-legacy", CHAMPION, v1)  # a champion from before records
    v2 = add_version(world, registered, "gate-legacy")
    result = promote(name="gate-legacy", version=v2, gate=GATE)
    assert result["outcome"] == "inconclusive" and champion(world, "gate-legacy") == v1
    assert any(f"champion version {v1} cannot be paired: its run" in r and "has no artifact eval/synthetic/results.json"
               in r for r in result["reasons"])


def test_more_visual_tokens_leave_the_champion_in_place_even_with_better_accuracy(world, registered):
    old = answers(400)
    v1 = add_version(world, registered, "gate-tokens", old)
    promote(name="gate-tokens", version=v1, gate=GATE)
    v2 = add_version(world, registered, "gate-tokens", flipped(old, 0, 100), tokens=49.0)
    result = promote(name="gate-tokens", version=v2, gate=GATE)
    assert not result["promoted"] and champion(world, "gate-tokens") == v1
    assert [r.split(":")[0] for r in result["reasons"] if r.startswith("FAIL")] == ["FAIL efficiency/visual_tokens"]


def test_equal_challenger_passes_the_gate(world, registered):
    v1 = add_version(world, registered, "gate-equal")
    promote(name="gate-equal", version=v1, gate=GATE)
    v2 = add_version(world, registered, "gate-equal")
    result = promote(name="gate-equal", version=v2,
                     gate=GateConfig(accuracy_margin=0.01, min_questions=50, visual_tokens_max_increase=0.0,
                                     latency_max_increase=0.0))
    assert result["promoted"] and champion(world, "gate-equal") == v2


def test_promoting_the_champion_again_changes_nothing(world, registered):
    v1 = add_version(world, registered, "gate-again")
    promote(name="gate-again", version=v1, gate=GATE)
    result = promote(name="gate-again", version=v1, gate=GATE)
    assert not result["promoted"] and result["outcome"] == "unchanged"
    assert result["reasons"] == [f"version {v1} is already the champion"]
    assert champion(world, "gate-again") == v1


def test_a_set_below_the_minimum_fails_before_anything_is_logged(world, registered):
    client = world["client"]
    v1 = add_version(world, registered, "gate-minimum", answers(60))
    runs_before = len(client.search_runs([e.experiment_id for e in client.search_experiments()]))
    with pytest.raises(ConfigError, match=f"registry.gate.min_questions: version {v1} was evaluated on 60 synthetic "
                                          "questions, fewer than the minimum 100"):
        promote(name="gate-minimum", version=v1, gate=GateConfig(accuracy_margin=0.05, min_questions=100))
    assert len(client.search_runs([e.experiment_id for e in client.search_experiments()])) == runs_before
    assert "promotion" not in client.get_model_version("gate-minimum", v1).tags
    assert client.get_registered_model("gate-minimum").aliases.get(CHAMPION) is None


def test_promote_of_an_unknown_model_or_version_fails_naming_it(world, registered, capsys):
    assert main(["promote", "--name", "no-such-model", "--out", str(world["root"] / "x.json")]) == 2
    assert "registered model 'no-such-model' does not exist" in capsys.readouterr().err
    assert main(["promote", "--name", NAME, "--version", "99", "--out", str(world["root"] / "x.json")]) == 2
    assert f"registered model '{NAME}' has no version '99'" in capsys.readouterr().err
    assert not (world["root"] / "x.json").exists()


# -- inputs, checked before anything is logged ---------------------------------------------------
def test_register_with_results_without_per_question_records_fails_naming_the_file(world, tmp_path, capsys):
    content = results_json(answers(60))
    del content["questions"]
    (tmp_path / "results.json").write_text(json.dumps(content))
    rc = main(["register", "--model", str(world["root"] / "model"), "--towers", str(world["root"] / "towers"),
               "--eval", str(tmp_path), "--name", "never", "--out", str(tmp_path / "out.json")])
    assert rc == 2
    assert f"{tmp_path / 'results.json'}: no per-question records" in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()


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
