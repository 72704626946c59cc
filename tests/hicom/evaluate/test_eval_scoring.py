"""Scoring, the Table A4 split, the prediction store and metric names, on hand-made records."""
import json

import pytest
from mlflow.utils.validation import _validate_metric_name

from hicom.core.errors import ConfigError, DataError
from hicom.core.sections import build_section
from hicom.evaluate.mcq import Variant, variants_for
from hicom.evaluate.scoring import InstructionFilter, egoschema_submission, summarise
from hicom.evaluate.settings import EvalConfig
from hicom.evaluate.stage import metrics_of
from hicom.evaluate.store import PredictionLog, read_parts, read_records, shard
from hicom.params import Params
from hicom.tracking import metric_name


def record(task, answer, choice, valid=True, options=4, sample_id="x", video="v"):
    return {"id": sample_id, "video": video, "answer": answer, "choice": choice,
            "correct": None if answer is None else choice == answer, "num_options": options,
            "groups": {"task": task}, "instruction_valid": valid}


def test_mlvu_m_avg_is_the_mean_of_task_accuracies_and_differs_from_the_micro_average():
    records = ([record("plotQA", "A", "A")] * 3 + [record("plotQA", "B", None)]  # 3/4 = 0.75
               + [record("count", "C", "D"), record("count", "C", None)]  # 0/2 = 0.0
               + [record("needle", "A", "A"), record("needle", "B", "C")])  # 1/2 = 0.5
    s = summarise(records, ("task",), task_field="task")
    assert s["accuracy"] == pytest.approx(4 / 8)  # micro: 4 correct of 8
    assert s["task_mean"] == pytest.approx((0.75 + 0.0 + 0.5) / 3)  # M-Avg = 0.41667
    assert s["accuracy_answered"] == pytest.approx(4 / 6)  # the reference's Video-MME statistic, beside it
    assert (s["total"], s["answered"], s["unanswered"]) == (8, 6, 2)
    assert {t: v["accuracy"] for t, v in s["breakdown"]["task"].items()} == {"count": 0.0, "needle": 0.5,
                                                                            "plotQA": 0.75}
    assert s["choice_counts"] == {"A": 4, "C": 1, "D": 1, "none": 2}


def test_every_accuracy_carries_its_interval_n_and_videos_and_the_set_its_hash():
    # 40 videos, 3 questions each; tasks alternate by video; question i right when i % 5 != 0
    records = [record(f"t{v % 2}", "A", "A" if (3 * v + q) % 5 else "B", sample_id=f"q{3 * v + q}", video=f"v{v}",
                      valid=q != 2) for v in range(40) for q in range(3)]
    s = summarise(records, ("task",), task_field="task")
    assert s["accuracy"] == pytest.approx(96 / 120)
    ci = s["accuracy_ci"]
    assert (ci["n"], ci["videos"]) == (120, 40) and ci["low"] < s["accuracy"] < ci["high"] < 1
    assert s["task_mean_ci"]["low"] < s["task_mean"] < s["task_mean_ci"]["high"]
    assert s["accuracy_answered_ci"]["n"] == 96 + 24  # every question answered (a wrong letter is an answer)
    for stats in (*s["breakdown"]["task"].values(), *s["validity"].values()):
        assert stats["accuracy_ci"]["n"] == stats["total"]
        assert stats["accuracy_ci"]["low"] <= stats["accuracy"] <= stats["accuracy_ci"]["high"]
    assert s["breakdown"]["task"]["t0"]["accuracy_ci"]["videos"] == 20
    assert s["interval"]["cluster"] == "video" and s["interval"]["confidence"] == 0.95
    assert s["questions"][:2] == [{"id": "q0", "video": "v0", "answer": "A", "correct": False},
                                  {"id": "q1", "video": "v0", "answer": "A", "correct": True}]
    # the hash is the set's (ids and correct answers), not the order or the model's answers
    assert summarise(records[::-1])["question_set"] == s["question_set"]
    assert summarise([{**r, "choice": "C"} for r in records])["question_set"] == s["question_set"]
    assert summarise([{**records[0], "answer": "B"}] + records[1:])["question_set"] != s["question_set"]
    assert summarise(records[1:])["question_set"] != s["question_set"]


def test_an_empty_group_or_a_single_video_has_n_but_no_interval_and_a_record_needs_its_video():
    one_video = summarise([record("t", "A", "A", sample_id=f"q{i}") for i in range(5)])
    assert one_video["accuracy_ci"] == {"low": None, "high": None, "n": 5, "videos": 1}
    assert summarise([])["accuracy_ci"] == {"low": None, "high": None, "n": 0, "videos": 0}
    bare = record("t", "A", "A", sample_id="q7")
    del bare["video"]
    with pytest.raises(DataError, match="record 'q7' has no 'video'"):
        summarise([bare])


def test_valid_and_invalid_instructions_are_scored_separately():
    records = [record("t", "A", "A", valid=True), record("t", "A", "B", valid=True),
               record("t", "A", "A", valid=False), record("t", "B", "B", valid=False), record("t", "C", None, False)]
    s = summarise(records)
    assert s["validity"]["valid"]["accuracy"] == 0.5 and s["validity"]["valid"]["total"] == 2
    assert s["validity"]["invalid"]["accuracy"] == pytest.approx(2 / 3) and s["validity"]["invalid"]["unanswered"] == 1


def test_questions_without_a_public_answer_are_not_scored_and_an_empty_group_has_no_accuracy():
    s = summarise([record("t", None, "A"), record("t", None, None)])
    assert s["total"] == 0 and s["accuracy"] is None and s["validity"]["valid"]["accuracy"] is None


def test_default_patterns_tag_generic_instructions_invalid_and_specific_ones_valid():
    patterns = Params.load().evaluate.invalid_instructions
    tagger = InstructionFilter(patterns)
    for generic in ("What is this video mainly about?", "Describe this video.", "What's the video about?",
                    "What is the main topic of the video?", "Which of the following best describes the video?"):
        assert not tagger.is_valid(generic), generic
    for specific in ("What colour is the circle?", "What happens in the video after the man leaves?",
                     "How many people are shown?"):
        assert tagger.is_valid(specific), specific


def test_a_pattern_that_is_not_a_regex_is_a_config_error_naming_it():
    with pytest.raises(ValueError, match=r"pattern '\(unclosed' is not a regular expression"):
        EvalConfig(invalid_instructions=("(unclosed",))
    with pytest.raises(ConfigError, match=r"evaluate\.max_tokens: unknown key"):
        build_section(EvalConfig, {"max_tokens": 4}, "evaluate")


def test_egoschema_submission_lists_every_question_with_minus_one_where_no_option_was_chosen(tmp_path):
    rows = [{"id": "u0", "choice": "D"}, {"id": "u1", "choice": None}, {"id": "u2", "choice": "A"}]
    assert egoschema_submission(rows, tmp_path / "submission.csv") == 1
    assert (tmp_path / "submission.csv").read_text() == "q_uid,answer\nu0,3\nu1,-1\nu2,0\n"


def test_torn_last_line_is_ignored_on_read_and_cut_off_before_the_next_append(tmp_path):
    path = tmp_path / "parts" / "rank0.jsonl"
    path.parent.mkdir()
    path.write_text(json.dumps({"key": "k1", "reply": "A"}) + "\n" + '{"key": "k2", "rep')
    assert [r["key"] for r in read_records(path)] == ["k1"]
    with PredictionLog(path) as log:
        log.append({"key": "k2", "reply": "B"})
    assert [r["key"] for r in read_records(path)] == ["k1", "k2"]
    assert path.read_text().count("\n") == 2


def test_a_damaged_line_before_the_last_is_an_error_naming_file_and_line(tmp_path):
    path = tmp_path / "parts" / "rank1.jsonl"
    path.parent.mkdir()
    path.write_text('{"key": "k1"}\nnot json\n{"key": "k3"}\n')
    with pytest.raises(DataError, match=r"rank1.jsonl line 2: not a JSON record"):
        read_parts(tmp_path)


def test_parts_of_every_rank_are_read_whatever_world_size_wrote_them(tmp_path):
    for rank, keys in ((0, ["a", "c"]), (1, ["b"]), (2, ["d"])):
        with PredictionLog(tmp_path / "parts" / f"rank{rank}.jsonl") as log:
            for k in keys:
                log.append({"key": k})
    assert sorted(read_parts(tmp_path)) == ["a", "b", "c", "d"]


def test_shards_cover_every_item_once():
    items = list(range(11))
    parts = [shard(items, r, 3) for r in range(3)]
    assert parts[0] == [0, 3, 6, 9] and sorted(sum(parts, [])) == items
    with pytest.raises(ValueError, match="rank 3 is outside a world of 3"):
        shard(items, 3, 3)


def test_variants_cover_subtitles_and_guidance_and_name_themselves():
    assert [v.name for v in variants_for("both", subtitles=True)] == [
        "default", "guidance_off", "subtitles", "subtitles+guidance_off"]
    assert variants_for("off", subtitles=False) == [Variant(subtitles=False, guided=False)]


def test_metric_names_from_category_values_are_valid_mlflow_keys():
    for parts in (("videomme", "sub_category", "Humanity & History"), ("mlvu", "task", ".."), ("x", "a/b", "")):
        _validate_metric_name(metric_name(*parts))
    assert metric_name("videomme", "sub_category", "Humanity & History") == "videomme/sub_category/Humanity_History"


def test_metrics_carry_each_accuracys_interval():
    records = [record(f"t{i % 2}", "A", "A" if i % 3 else "B", sample_id=f"q{i}", video=f"v{i}") for i in range(30)]
    summary = summarise(records, ("task",), task_field="task")
    metrics = metrics_of("mlvu", {"default": summary})
    assert metrics["mlvu/accuracy_ci_low"] == summary["accuracy_ci"]["low"]
    assert metrics["mlvu/accuracy_ci_high"] == summary["accuracy_ci"]["high"]
    assert metrics["mlvu/task_mean_ci_low"] < metrics["mlvu/task_mean"] < metrics["mlvu/task_mean_ci_high"]
    assert metrics["mlvu/task/t0_ci_low"] == summary["breakdown"]["task"]["t0"]["accuracy_ci"]["low"]
    assert metrics["mlvu/validity/valid/accuracy_ci_high"] == summary["validity"]["valid"]["accuracy_ci"]["high"]


def test_metrics_cover_each_variant_breakdown_and_validity_split_and_skip_empty_groups():
    summary = summarise([record("Humanity & History", "A", "A"), record("Sports", "A", "B", valid=False)],
                        ("task",), task_field="task")
    metrics = metrics_of("mlvu", {"default": summary, "guidance_off": summary})
    assert metrics["mlvu/accuracy"] == 0.5 and metrics["mlvu/guidance_off/accuracy"] == 0.5
    assert metrics["mlvu/task/Humanity_History"] == 1.0 and metrics["mlvu/task_mean"] == 0.5
    assert metrics["mlvu/validity/invalid/accuracy"] == 0.0 and metrics["mlvu/validity/valid/total"] == 1
    ci = summary["accuracy_ci"]  # one video: no interval, so no interval metrics
    assert ci["low"] is None and "mlvu/accuracy_ci_low" not in metrics
    empty = metrics_of("x", {"default": summarise([])})
    assert "x/accuracy" not in empty and empty["x/total"] == 0
