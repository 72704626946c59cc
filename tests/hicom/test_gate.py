"""The promotion gate's rules without a store: paired non-inferiority per benchmark on the same questions,
tokens and latency, and the inputs it refuses. The per-question records are built here and scored by
hicom.evaluate.scoring, as an evaluation would."""

import pytest
from paired_answers import answers, flipped

from hicom.core.errors import ConfigError, DataError
from hicom.evaluate.scoring import summarise
from hicom.gate.decision import (
    Candidate,
    gate_decision,
    paired_comparison,
    read_evaluation,
)
from hicom.gate.settings import GateConfig

EFFICIENCY = {"efficiency/visual_tokens": 100.0, "efficiency/s_per_video": 1.0}


def results(correct: list[bool], per_video: int = 4, benchmark: str = "synthetic", answer: str = "A") -> dict:
    """results.json content for these answers: question i is about video i // per_video."""
    records = [{"id": f"q{i}", "video": f"v{i // per_video}", "answer": answer, "choice": "A" if right else "B",
                "correct": right, "num_options": 4, "groups": {}, "instruction_valid": True}
               for i, right in enumerate(correct)]
    return {"benchmark": benchmark, **summarise(records)}


def candidate(label: str, correct: list[bool], **metrics) -> Candidate:
    content = results(correct)
    evaluation = read_evaluation(content, label)
    return Candidate(label, {"accuracy/synthetic": content["accuracy"], **EFFICIENCY, **metrics},
                     {"synthetic": evaluation})




GATE = GateConfig(accuracy_margin=0.05, min_questions=50)


@pytest.mark.parametrize("n,worse,better,outcome,verdict", [
    (60, 7, 5, "inconclusive", "inconclusive"),  # slightly worse (-0.033) on a small set: cannot tell
    (2000, 300, 100, "rejected", "worse"),  # clearly worse (-0.10) on a large set
    (2000, 200, 200, "promoted", "pass"),  # equal on a large set, though 400 answers changed
])
def test_the_gate_decides_on_the_paired_interval_against_the_margin(n, worse, better, outcome, verdict):
    old = answers(n)
    decision = gate_decision(candidate("version 2", flipped(old, worse, better)), candidate("version 1", old), GATE)
    assert decision.outcome == outcome and decision.passed is (outcome == "promoted")
    numbers = decision.comparisons["synthetic"]
    assert numbers["verdict"] == verdict and numbers["n"] == n and numbers["videos"] == n // 4
    assert numbers["difference"] == pytest.approx((better - worse) / n)
    assert numbers["ci_low"] < numbers["difference"] < numbers["ci_high"]
    assert numbers["question_set"] == results(old)["question_set"] and "cluster bootstrap" in numbers["method"]
    reason = next(r for r in decision.reasons if "accuracy/synthetic" in r)
    assert reason.startswith({"pass": "pass", "worse": "FAIL", "inconclusive": "inconclusive"}[verdict])
    assert f"on {n} questions ({n // 4} videos)" in reason and "95% CI" in reason and "margin 0.05" in reason
    if verdict == "inconclusive":
        assert numbers["ci_low"] <= -0.05 <= numbers["ci_high"] and reason.endswith("champion kept")


def test_a_failed_efficiency_check_rejects_even_when_accuracy_cannot_be_told():
    old = answers(60)
    decision = gate_decision(candidate("version 2", flipped(old, 7, 5), **{"efficiency/visual_tokens": 101.0}),
                             candidate("version 1", old), GATE)
    assert decision.outcome == "rejected"
    assert [r.split(":")[0] for r in decision.reasons if r.startswith("FAIL")] == ["FAIL efficiency/visual_tokens"]


@pytest.mark.parametrize("change,passed", [
    ({"efficiency/s_per_video": 1.2}, True),  # within 25 %
    ({"efficiency/s_per_video": 1.3}, False),
    ({"efficiency/visual_tokens": 101.0}, False),
    ({"efficiency/visual_tokens": 50.0}, True),
])
def test_tokens_and_latency_keep_their_tolerances(change, passed):
    same = answers(400)
    gate = GateConfig(accuracy_margin=0.05, min_questions=50, visual_tokens_max_increase=0.0,
                      latency_max_increase=0.25)
    assert gate_decision(candidate("v2", same, **change), candidate("v1", same), gate).passed is passed


def test_the_first_model_becomes_champion():
    decision = gate_decision(candidate("version 1", answers(60)), None, GATE)
    assert decision.passed and decision.reasons == ["no champion yet: the first registered version becomes champion"]


def test_a_champion_on_another_question_set_cannot_be_paired_and_is_kept_naming_both_hashes():
    old, new = answers(400, seed=1), answers(400, seed=2)
    champion = candidate("version 1", old)
    moved = Candidate("version 2", candidate("version 2", new).metrics,
                      {"synthetic": read_evaluation(results(new, answer="B"), "version 2")})
    decision = gate_decision(moved, champion, GATE)
    assert decision.outcome == "inconclusive"
    reason = next(r for r in decision.reasons if "accuracy/synthetic" in r)
    assert results(new, answer="B")["question_set"] in reason and results(old)["question_set"] in reason
    assert decision.comparisons["synthetic"]["verdict"] == "unpaired"


def test_a_champion_without_records_is_kept_and_says_why():
    same = answers(400)
    champion = Candidate("version 1", {"accuracy/synthetic": 0.5, **EFFICIENCY}, {},
                         {"synthetic": "no per-question records"})
    decision = gate_decision(candidate("version 2", same), champion, GATE)
    assert decision.outcome == "inconclusive"
    assert ("inconclusive accuracy/synthetic: champion version 1 cannot be paired: no per-question records; "
            "champion kept") in decision.reasons


def test_a_challenger_missing_a_benchmark_is_rejected_and_a_new_one_is_reported():
    same = answers(400)
    champion = candidate("v1", same)
    other = read_evaluation(results(same, benchmark="other"), "v1")
    champion = Candidate("v1", {**champion.metrics, "accuracy/other": 0.4}, {**champion.evaluations, "other": other})
    challenger = candidate("v2", same)
    decision = gate_decision(challenger, champion, GATE)
    assert decision.outcome == "rejected"
    assert "FAIL accuracy/other: challenger was not evaluated on it (champion 0.4000)" in decision.reasons
    decision = gate_decision(champion, challenger, GATE)  # the other way round: the extra one is only reported
    assert decision.passed and "new accuracy/other: 0.4000 (champion has none; not compared)" in decision.reasons


# -- inputs refused before any decision ----------------------------------------------------------
def test_a_set_smaller_than_the_minimum_fails_naming_the_key():
    with pytest.raises(ConfigError, match=r"registry.gate.min_questions: version 2 was evaluated on 60 synthetic "
                                          r"questions, fewer than the minimum 100"):
        gate_decision(candidate("version 2", answers(60)), None, GateConfig(accuracy_margin=0.05,
                                                                               min_questions=100))


@pytest.mark.parametrize("margin", [0.0, -0.02])
def test_a_margin_that_is_not_positive_fails_naming_the_key(margin):
    with pytest.raises(ConfigError, match=rf"registry.gate.accuracy_margin: must be above 0 .* got {margin}"):
        GateConfig(accuracy_margin=margin)


def test_a_challenger_without_records_fails_naming_it():
    challenger = Candidate("version 4", {"accuracy/synthetic": 0.5}, {},
                           {"synthetic": "its run r1 has no artifact eval/synthetic/results.json"})
    with pytest.raises(ConfigError, match="version 4: its run r1 has no artifact eval/synthetic/results.json"):
        gate_decision(challenger, None, GATE)


def test_results_without_records_edited_records_or_repeated_ids_are_named():
    content = results(answers(8))
    bare = {k: v for k, v in content.items() if k != "questions"}
    with pytest.raises(ConfigError, match=r"run r1: no per-question records .* re-run its evaluation"):
        read_evaluation(bare, "run r1")
    edited = {**content, "questions": [{**content["questions"][0], "answer": "D"}] + content["questions"][1:]}
    with pytest.raises(DataError, match=r"f.json: its questions hash to \w+, not the stored question_set"):
        read_evaluation(edited, "f.json")
    twice = {**content, "questions": content["questions"] + content["questions"][:1]}
    with pytest.raises(DataError, match="question ids repeat"):
        read_evaluation(twice, "f.json")
    broken = {**content, "questions": [{"id": "q0"}]}
    with pytest.raises(DataError, match=r"questions\[0\] needs id, video, answer"):
        read_evaluation(broken, "f.json")


def test_paired_comparison_refuses_two_question_sets_naming_both_hashes():
    a, b = results(answers(40)), results(answers(40), answer="C")
    with pytest.raises(ConfigError) as err:
        paired_comparison(read_evaluation(a, "run A"), read_evaluation(b, "run B"))
    assert (f"run A was evaluated on question set {a['question_set']}, run B on question set {b['question_set']}"
            in str(err.value))
