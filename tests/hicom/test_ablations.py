"""The ablation sweep's report (hicom/ablations.py) on constructed results with known differences."""
import json
import random

import pytest

from hicom.ablations import (
    BASELINE,
    CONTRADICTED,
    INCONCLUSIVE,
    REPRODUCED,
    Claim,
    RunResult,
    build_report,
    write_report,
)
from hicom.core.errors import ConfigError
from hicom.evaluate.scoring import summarise

FAMILIES = ("colour_seen", "colour_of_shape", "motion_of_object")  # the last two: binding
BINDING = ["colour_of_shape", "motion_of_object"]


def results(p_right: dict[str, float], seed: int, videos: int = 120, per_video: int = 3, visual_tokens=None) -> dict:
    """results.json of a run whose answers are right with probability p_right[family] (drawn per seed), made by the
    evaluation's own summarise with a `family` breakdown; questions carry no family (read from `groups`)."""
    rng = random.Random(f"{seed}/{sorted(p_right.items())}")
    records = []
    for v in range(videos):
        for k in range(per_video):
            family = FAMILIES[(v + k) % len(FAMILIES)]
            correct = rng.random() < p_right[family]
            records.append({"id": f"v{v}-q{k}", "video": f"v{v}", "answer": "A", "choice": "A" if correct else "B",
                            "correct": correct, "num_options": 4, "groups": {"family": family},
                            "instruction_valid": True})
    out = summarise(records, breakdowns=("family",), task_field="family")
    out["benchmark"] = "synthetic"
    if visual_tokens is not None:
        out["visual_tokens"] = visual_tokens
    return out


def groups(videos: int = 120, per_video: int = 3) -> dict[str, str]:
    return {f"v{v}-q{k}": FAMILIES[(v + k) % len(FAMILIES)] for v in range(videos) for k in range(per_video)}


def runs(variants: dict[str, dict[str, float]], seeds=(0, 1, 2), **kwargs) -> list[RunResult]:
    return [RunResult(name, seed, results(p, seed, **kwargs)) for name, p in variants.items() for seed in seeds]


def flat(p: float) -> dict[str, float]:
    return dict.fromkeys(FAMILIES, p)


CLAIMS = [Claim("A3", "no_grouping", "grouping helps"),
          Claim("A4", "no_injection", "injection helps, most on binding", on_binding=True),
          Claim("A5", "two_stage", "three stages beat two")]


def report_of(variants, seeds=(0, 1, 2), **kwargs):
    return build_report(runs(variants, seeds, **kwargs), CLAIMS, [BASELINE, "no_grouping"], breakdown="family",
                        binding_families=BINDING, groups=groups(**kwargs))


def test_clear_loss_is_reproduced_clear_gain_contradicted_and_equal_accuracy_inconclusive():
    report = report_of({BASELINE: flat(0.7), "no_grouping": flat(0.4), "two_stage": flat(0.9),
                        "no_injection": flat(0.69)})
    verdicts = {c.claim.name: c.verdict for c in report.claims}
    assert verdicts == {"A3": REPRODUCED, "A4": INCONCLUSIVE, "A5": CONTRADICTED}
    a3 = report.claims[0].comparisons[0]
    assert set(a3.per_seed) == {0, 1, 2} and a3.pooled.n == 3 * 360
    assert 0.2 < a3.pooled.difference < 0.4 and 0 < a3.pooled.ci_low < a3.pooled.difference < a3.pooled.ci_high
    # the pooled difference is the mean of the per-seed ones (same number of questions per seed)
    assert a3.pooled.difference == pytest.approx(sum(p.difference for p in a3.per_seed.values()) / 3)
    a4 = report.claims[1].comparisons[0]
    assert a4.pooled.ci_low < 0 < a4.pooled.ci_high


def test_a_tiny_set_is_inconclusive_even_with_a_visible_difference():
    report = report_of({BASELINE: flat(0.8), "no_grouping": flat(0.3), "two_stage": flat(0.8),
                        "no_injection": flat(0.8)}, seeds=(0,), videos=3, per_video=1)
    a3 = report.claims[0].comparisons[0]
    assert a3.pooled.n == 3 and a3.verdict == INCONCLUSIVE


def test_injection_helping_only_on_the_binding_families_shows_there_and_in_the_difference_of_differences():
    base = {"colour_seen": 0.8, "colour_of_shape": 0.8, "motion_of_object": 0.8}
    unguided = {"colour_seen": 0.8, "colour_of_shape": 0.4, "motion_of_object": 0.4}
    report = report_of({BASELINE: base, "no_injection": unguided})
    a4 = {c.label: c for c in report.claims[1].comparisons}
    assert [c for c in a4] == ["overall", "binding families", "binding - other families"]
    assert a4["binding families"].verdict == REPRODUCED and a4["binding families"].pooled.n == 3 * 240
    did = a4["binding - other families"]
    assert did.verdict == REPRODUCED and did.pooled.difference == pytest.approx(
        a4["binding families"].pooled.difference - did.pooled.old)
    assert 0.3 < did.pooled.difference < 0.5
    # A3/A5 have no run of their ablation: inconclusive, said so
    assert report.claims[0].verdict == INCONCLUSIVE and "A3: no run of 'no_grouping' finished" in report.warnings
    assert report.families["colour_of_shape"]["no_injection"] == pytest.approx(0.4, abs=0.06)


def test_a_binding_family_missing_from_the_results_is_named():
    report = build_report(runs({BASELINE: flat(0.7), "no_injection": flat(0.5)}, seeds=(0,)), CLAIMS[1:2], [],
                          breakdown="family", binding_families=["colour_of_shape", "size"], groups=groups())
    assert any("size" in w and "pipeline.ablation_sweep.binding_families" in w for w in report.warnings)


def test_runs_on_different_question_sets_are_refused_naming_both_hashes():
    baseline = RunResult(BASELINE, 0, results(flat(0.7), 0))
    other = RunResult("no_grouping", 0, results(flat(0.7), 0, videos=100))
    with pytest.raises(ConfigError, match=rf"question set {baseline.results['question_set']}.*question set "
                                          rf"{other.results['question_set']}"):
        build_report([baseline, other], CLAIMS[:1], [], breakdown="family", binding_families=BINDING)


def test_the_report_files_carry_the_numbers(tmp_path):
    variants = {BASELINE: flat(0.7), "no_grouping": flat(0.4), "two_stage": flat(0.9), "no_injection": flat(0.7)}
    tokens = {BASELINE: 34, "no_grouping": 34, "two_stage": 34, "no_injection": 34}
    rows = [RunResult(name, seed, results(p, seed, visual_tokens=tokens[name]), run_id=f"run-{name}-{seed}")
            for name, p in variants.items() for seed in (0, 1, 2)]
    report = build_report(rows, CLAIMS, [BASELINE, "no_grouping"], breakdown="family", binding_families=BINDING,
                          groups=groups())
    files = write_report(report, tmp_path / "report")
    assert {p.name for p in (tmp_path / "report").iterdir()} == {
        "ablations.md", "ablations.html", "ablations.png", "accuracy_vs_tokens.png", "summary.json"}
    summary = json.loads(files["summary.json"].read_text())
    a3 = summary["claims"]["A3"]
    assert a3["verdict"] == REPRODUCED and a3["comparisons"]["overall"]["pooled"]["n"] == 1080
    base = summary["variants"][BASELINE]
    assert base["seeds"] == [0, 1, 2] and base["mean"] == pytest.approx(sum(base["accuracy"]) / 3)
    assert base["pooled_ci"]["low"] < base["mean"] < base["pooled_ci"]["high"]
    markdown = files["ablations.md"].read_text()
    pooled = a3["comparisons"]["overall"]["pooled"]
    assert (f"{100 * pooled['difference']:+.1f} [{100 * pooled['ci_low']:+.1f}, {100 * pooled['ci_high']:+.1f}]"
            in markdown)
    assert "**reproduced**" in markdown and "**contradicted**" in markdown and "**inconclusive**" in markdown
    assert f"| `baseline` | 0, 1, 2 | {', '.join(f'{100 * a:.1f}' for a in base['accuracy'])} |" in markdown
    assert "`run-no_grouping-2`" in markdown and "colour_of_shape (binding)" in markdown
    assert "<table>" in files["ablations.html"].read_text()
    assert files["accuracy_vs_tokens.png"].read_bytes()[:4] == b"\x89PNG"
