"""The paper's ablations (Tables A3-A5) and accuracy vs visual tokens, read from several runs' evaluation results.

Per variant: the accuracy of each seed, their mean and spread, and a pooled 95% interval (all seeds' answers
together, cluster bootstrap over videos). Per ablation: the paired difference (baseline - ablation) on the same
questions, seed i of the baseline with seed i of the ablation, and pooled over the seeds (every seed's pairs
together, videos as clusters, so a video's questions in every seed move together). Each claim of the paper gets
a verdict from the pooled paired interval: "reproduced" when it lies above 0 (the ablation loses accuracy, as the
paper says), "contradicted" when it lies below 0, else "inconclusive".

Pure computation and the report files (markdown, HTML, PNGs); flows/ablations.py runs the sweep, keeps each
run's results and logs the report to MLflow.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hicom.core.errors import ConfigError
from hicom.core.files import atomic_write_bytes, atomic_write_json
from hicom.core.stats import METHOD, cluster_bootstrap, mcnemar_exact
from hicom.evaluate.scoring import question_set_hash
from hicom.gate.decision import (
    Evaluation,
    Paired,
    paired_comparison,
    paired_differences,
    read_evaluation,
)
from hicom.pipeline_report import _html, _table, paired_verdict
from hicom.plots import ablation_variants_png, accuracy_vs_tokens_png

BASELINE = "baseline"
REPRODUCED, CONTRADICTED, INCONCLUSIVE = "reproduced", "contradicted", "inconclusive"
POOLED_METHOD = f"{METHOD}; seeds pooled (seed i of each variant with seed i of the baseline), videos as clusters"
RULE = ("reproduced when the pooled paired 95% interval of (baseline - ablation) lies above 0, contradicted when "
        "it lies below 0, otherwise inconclusive")


@dataclass(frozen=True)
class Claim:
    """One claim of the paper: removing what it credits (`ablation`) should cost accuracy."""

    name: str  # "A3"
    ablation: str  # the variant that removes it (a pipeline.ablations name)
    says: str  # "grouping helps"
    on_binding: bool = False  # also judged on the object-binding (clutter) families, and binding vs the others


@dataclass(frozen=True)
class RunResult:
    """One finished run of the sweep: its evaluation results (results.json content) and visual tokens."""

    variant: str
    seed: int
    results: dict
    visual_tokens: int | None = None
    run_id: str | None = None  # its MLflow pipeline (parent) run
    source: str = ""

    def evaluation(self) -> Evaluation:
        return read_evaluation(self.results, f"{self.variant} seed {self.seed}" +
                               (f" ({self.source})" if self.source else ""))


@dataclass(frozen=True)
class Comparison:
    """(baseline - ablation) on one slice of the questions: per seed and pooled, and the verdict."""

    label: str  # "overall", "binding families", "binding - other families"
    per_seed: dict[int, Paired]
    pooled: Paired | None
    verdict: str
    note: str = ""


@dataclass
class ClaimResult:
    claim: Claim
    comparisons: list[Comparison] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        """The claim's verdict: the overall comparison's."""
        return self.comparisons[0].verdict if self.comparisons else INCONCLUSIVE


def verdict_of(paired: Paired | None) -> str:
    """reproduced / contradicted / inconclusive from a paired (baseline - ablation) interval (pipeline_report's
    better / worse / inconclusive rule: the interval must exclude 0)."""
    if paired is None:
        return INCONCLUSIVE
    return {"better": REPRODUCED, "worse": CONTRADICTED}.get(paired_verdict(paired), INCONCLUSIVE)


def restrict(evaluation: Evaluation, ids: set[str], label: str) -> Evaluation:
    """The evaluation on a subset of its questions (e.g. some families), with that subset's accuracy and hash."""
    questions = [q for q in evaluation.questions if str(q["id"]) in ids]
    accuracy = sum(q["correct"] for q in questions) / len(questions) if questions else float("nan")
    return Evaluation(evaluation.benchmark, accuracy, question_set_hash(questions), questions,
                      f"{evaluation.source} [{label}]")


def pooled_paired(pairs: list[tuple[Evaluation, Evaluation]]) -> Paired | None:
    """(new - old) over every pair of evaluations together (seed i with seed i): the mean difference over all
    pairs of answers, its cluster-bootstrap interval with videos as clusters (each video brings its questions of
    every seed), McNemar's exact p over all discordant pairs (treats them as independent: shown, not decided on)."""
    if not pairs:
        return None
    diffs, videos = [], []
    for new, old in pairs:
        for _, video, d in paired_differences(new, old):  # refuses different question sets, naming both hashes
            diffs.append(d)
            videos.append(str(video))
    if not diffs:
        return None
    bounds = cluster_bootstrap(diffs, videos)
    low, high = bounds if bounds is not None else (None, None)
    first = pairs[0][0]
    return Paired(first.benchmark, first.question_set, len(diffs), len(set(videos)),
                  statistics.fmean(n.accuracy for n, _ in pairs), statistics.fmean(o.accuracy for _, o in pairs),
                  sum(diffs) / len(diffs), low, high,
                  mcnemar_exact(sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)), POOLED_METHOD)


def difference_in_differences(pairs: list[tuple[Evaluation, Evaluation]], inside: set[str]) -> Paired | None:
    """(new - old) on the questions in `inside` minus (new - old) on the others, pooled over the pairs, with its
    cluster-bootstrap interval (videos as clusters): whether the difference is larger inside (e.g. the binding
    families). Computed as the bootstrap's mean over two strata of +diff inside and -diff outside, doubled."""
    diffs, videos, strata = [], [], []
    for new, old in pairs:
        for qid, video, d in paired_differences(new, old):
            side = str(qid) in inside
            diffs.append(d if side else -d)
            videos.append(str(video))
            strata.append("inside" if side else "outside")
    n_in, n_out = strata.count("inside"), strata.count("outside")
    if not n_in or not n_out:
        return None
    d_in = sum(d for d, s in zip(diffs, strata) if s == "inside") / n_in
    d_out = -sum(d for d, s in zip(diffs, strata) if s == "outside") / n_out
    bounds = cluster_bootstrap(diffs, videos, strata=strata)
    low, high = (2 * bounds[0], 2 * bounds[1]) if bounds is not None else (None, None)
    first = pairs[0][0]
    return Paired(first.benchmark, first.question_set, len(diffs), len(set(videos)), d_in, d_out, d_in - d_out,
                  low, high, float("nan"), f"{METHOD}; difference of the two slices' paired differences")


def compare(label: str, baseline: dict[int, Evaluation], ablation: dict[int, Evaluation],
            ids: set[str] | None = None) -> Comparison:
    """(baseline - ablation) per shared seed and pooled, on all questions or on `ids` only."""
    seeds = sorted(set(baseline) & set(ablation))
    by_seed = {}
    for seed in seeds:
        new, old = baseline[seed], ablation[seed]
        if ids is not None:
            new, old = restrict(new, ids, label), restrict(old, ids, label)
        if new.questions:
            by_seed[seed] = (new, old)
    per_seed = {seed: paired_comparison(n, o) for seed, (n, o) in by_seed.items()}
    pairs = list(by_seed.values())
    pooled = pooled_paired(pairs)
    note = "" if pairs else ("no seed finished for both" if not seeds else "no question in this slice")
    return Comparison(label, per_seed, pooled, verdict_of(pooled), note)


# -- the sweep's summary -------------------------------------------------------------------------
@dataclass
class VariantSummary:
    variant: str
    seeds: list[int]
    accuracies: list[float]  # per seed, in `seeds` order
    pooled_low: float | None
    pooled_high: float | None
    family_means: list[float]  # per seed: results' task_mean (the family mean), where present
    visual_tokens: int | None
    chance: float | None
    questions: int
    videos: int

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accuracies)

    @property
    def sd(self) -> float | None:
        return statistics.stdev(self.accuracies) if len(self.accuracies) > 1 else None


def summarise_variant(variant: str, runs: list[RunResult]) -> VariantSummary:
    runs = sorted(runs, key=lambda r: r.seed)
    evaluations = [r.evaluation() for r in runs]
    correct = [float(q["correct"]) for e in evaluations for q in e.questions]
    videos = [str(q["video"]) for e in evaluations for q in e.questions]
    bounds = cluster_bootstrap(correct, videos)
    tokens = {r.visual_tokens if r.visual_tokens is not None else r.results.get("visual_tokens") for r in runs}
    tokens.discard(None)
    chance = runs[0].results.get("chance")
    return VariantSummary(variant, [r.seed for r in runs], [e.accuracy for e in evaluations],
                          bounds[0] if bounds else None, bounds[1] if bounds else None,
                          [float(r.results["task_mean"]) for r in runs
                           if isinstance(r.results.get("task_mean"), (int, float))],
                          tokens.pop() if len(tokens) == 1 else None,
                          chance if isinstance(chance, (int, float)) else None,
                          len(evaluations[0].questions), evaluations[0].videos)


def family_ids(runs: list[RunResult], breakdown: str, families: set[str],
               groups: dict[str, str] | None = None) -> tuple[set[str], set[str]]:
    """(ids of the questions in `families`, the families the results have). A question's family is its record's own
    `breakdown` field where it has one, else `groups` (question id -> value, read from the benchmark's data)."""
    groups = groups or {}
    inside, present = set(), set()
    for run in runs:
        present |= set(((run.results.get("breakdown") or {}).get(breakdown) or {}))
        for q in run.results.get("questions") or []:
            value = q.get(breakdown, (q.get("groups") or {}).get(breakdown, groups.get(str(q.get("id")))))
            if value is not None:
                present.add(str(value))
                if str(value) in families:
                    inside.add(str(q["id"]))
    return inside, present


@dataclass
class SweepReport:
    benchmark: str
    breakdown: str
    binding_families: list[str]
    variants: dict[str, VariantSummary]
    claims: list[ClaimResult]
    token_variants: list[str]
    families: dict[str, dict[str, float | None]]  # family -> {variant: mean accuracy over seeds}, "chance"
    runs: list[RunResult]
    warnings: list[str]
    settings: dict[str, Any] = field(default_factory=dict)  # params every run of the sweep set (the baseline too)

    def to_dict(self) -> dict:
        """The numbers as JSON (summary.json; the README's table and the MLflow metrics come from it)."""
        def paired(p: Paired | None) -> dict | None:
            if p is None:
                return None
            return {"difference": p.difference, "ci_low": p.ci_low, "ci_high": p.ci_high, "n": p.n,
                    "videos": p.videos, "baseline": p.new, "ablation": p.old,
                    "mcnemar_p": None if math.isnan(p.mcnemar_p) else p.mcnemar_p, "method": p.method}

        return {
            "benchmark": self.benchmark, "breakdown": self.breakdown, "binding_families": self.binding_families,
            "rule": RULE, "settings": self.settings,
            "variants": {name: {"seeds": v.seeds, "accuracy": v.accuracies, "mean": v.mean, "sd": v.sd,
                                "pooled_ci": {"low": v.pooled_low, "high": v.pooled_high},
                                "family_mean": v.family_means, "visual_tokens": v.visual_tokens,
                                "questions": v.questions, "videos": v.videos}
                         for name, v in self.variants.items()},
            "claims": {c.claim.name: {"ablation": c.claim.ablation, "says": c.claim.says, "verdict": c.verdict,
                                      "comparisons": {cmp.label: {"verdict": cmp.verdict, "pooled": paired(cmp.pooled),
                                                                  "per_seed": {str(s): paired(p)
                                                                               for s, p in cmp.per_seed.items()},
                                                                  "note": cmp.note}
                                                      for cmp in c.comparisons}}
                       for c in self.claims},
            "accuracy_vs_tokens": [{"variant": name, "visual_tokens": self.variants[name].visual_tokens,
                                    "accuracy": self.variants[name].mean, "ci_low": self.variants[name].pooled_low,
                                    "ci_high": self.variants[name].pooled_high, "seeds": self.variants[name].seeds}
                                   for name in self.token_variants if name in self.variants],
            "families": self.families,
            "runs": [{"variant": r.variant, "seed": r.seed, "run_id": r.run_id, "source": r.source} for r in self.runs],
            "warnings": self.warnings,
        }


def build_report(runs: list[RunResult], claims: list[Claim], token_variants: list[str], *, breakdown: str,
                 binding_families: list[str], groups: dict[str, str] | None = None,
                 settings: dict[str, Any] | None = None) -> SweepReport:
    """Everything the report shows, from the finished runs (a variant or seed not yet run is left out, with a
    warning). All runs must be on one benchmark and one question set (else ConfigError naming both hashes).
    settings: the params every run of the sweep set, shown with the numbers they qualify."""
    if not runs:
        raise ConfigError("ablations: no finished run to report on")
    benchmarks = {str(r.results.get("benchmark")) for r in runs}
    if len(benchmarks) != 1:
        raise ConfigError(f"ablations: the runs were evaluated on different benchmarks ({', '.join(sorted(benchmarks))})")
    by_variant: dict[str, dict[int, RunResult]] = {}
    for run in runs:
        by_variant.setdefault(run.variant, {})[run.seed] = run
    evaluations = {v: {s: r.evaluation() for s, r in seeds.items()} for v, seeds in by_variant.items()}
    warnings = []
    baseline = evaluations.get(BASELINE, {})
    if not baseline:
        warnings.append("no baseline run finished: no claim can be judged")
    inside, present = family_ids(runs, breakdown, set(binding_families), groups)
    missing = sorted(set(binding_families) - present)
    if any(c.on_binding for c in claims) and missing:
        warnings.append(f"binding families {', '.join(missing)} (pipeline.ablation_sweep.binding_families) are not "
                        f"among the results' {breakdown!r} values ({', '.join(sorted(present)) or 'none'})")
    results = []
    for claim in claims:
        ablation = evaluations.get(claim.ablation, {})
        if not ablation:
            warnings.append(f"{claim.name}: no run of {claim.ablation!r} finished")
        result = ClaimResult(claim, [compare("overall", baseline, ablation)])
        if claim.on_binding:
            result.comparisons.append(compare("binding families", baseline, ablation, inside))
            pairs = [(baseline[s], ablation[s]) for s in sorted(set(baseline) & set(ablation))]
            did = difference_in_differences(pairs, inside) if pairs else None
            result.comparisons.append(Comparison("binding - other families", {}, did, verdict_of(did),
                                                 "" if did else "needs questions in and outside the binding families"))
        results.append(result)
    variants = {v: summarise_variant(v, list(seeds.values())) for v, seeds in by_variant.items()}
    families: dict[str, dict[str, float | None]] = {}
    for variant, seeds in by_variant.items():
        for run in seeds.values():
            for family, stats in ((run.results.get("breakdown") or {}).get(breakdown) or {}).items():
                entry = families.setdefault(str(family), {})
                entry.setdefault(variant, [])
                if isinstance(stats.get("accuracy"), (int, float)):
                    entry[variant].append(stats["accuracy"])
                if isinstance(stats.get("chance"), (int, float)):
                    entry["chance"] = stats["chance"]
    families = {f: {k: (statistics.fmean(v) if v else None) if isinstance(v, list) else v for k, v in e.items()}
                for f, e in sorted(families.items())}
    return SweepReport(next(iter(benchmarks)), breakdown, list(binding_families), variants, results,
                       list(token_variants), families, sorted(runs, key=lambda r: (r.variant, r.seed)), warnings,
                       dict(settings or {}))


# -- the report files ----------------------------------------------------------------------------
def _pct(value) -> str:
    return f"{100 * value:.1f}" if isinstance(value, (int, float)) and math.isfinite(value) else "-"


def _points(value) -> str:
    return f"{100 * value:+.1f}" if isinstance(value, (int, float)) and math.isfinite(value) else "-"


def _diff(p: Paired | None) -> str:
    """"+4.2 [+1.0, +7.5]" in accuracy points."""
    if p is None:
        return "-"
    if p.ci_low is None:
        return f"{_points(p.difference)} [no interval]"
    return f"{_points(p.difference)} [{_points(p.ci_low)}, {_points(p.ci_high)}]"


def _p(p: Paired | None) -> str:
    return "-" if p is None or math.isnan(p.mcnemar_p) else f"{p.mcnemar_p:.3g}"


def verdict_lines(report: SweepReport) -> list[str]:
    """One line per claim and slice: the README's and the console's summary."""
    lines = []
    for c in report.claims:
        for cmp in c.comparisons:
            scope = "" if cmp.label == "overall" else f" ({cmp.label})"
            lines.append(f"{c.claim.name} {c.claim.says}{scope}: {cmp.verdict.upper()}: baseline - {c.claim.ablation} = "
                         f"{_diff(cmp.pooled)} points, n={cmp.pooled.n if cmp.pooled else 0} pairs"
                         + (f" over {len(cmp.per_seed)} seed(s)" if cmp.per_seed else "")
                         + (f"; {cmp.note}" if cmp.note else ""))
    return lines


def write_report(report: SweepReport, out_dir: str | Path) -> dict[str, Path]:
    """ablations.md, ablations.html, ablations.png, accuracy_vs_tokens.png and summary.json, written atomically."""
    out = Path(out_dir)
    files: dict[str, Path] = {}
    v = report.variants
    base = v.get(BASELINE)
    lines = [f"# The paper's ablations (Tables A3-A5) on `{report.benchmark}`", ""]
    if base is not None:
        lines.append(f"{base.questions} questions on {base.videos} videos per run (question set "
                     f"`{report.runs[0].results.get('question_set')}`); seeds {', '.join(map(str, base.seeds))} of the "
                     "baseline. Accuracies and differences in points (percent).")
    if report.settings:
        lines += ["", "Every run of the sweep, the baseline's included, set (`pipeline.ablation_sweep.set`): "
                  + ", ".join(f"`{key}` = {value!r}" for key, value in report.settings.items())
                  + ". The verdicts hold for models trained so."]
    lines += ["", f"Verdict rule: {RULE}. Intervals are 95%: {POOLED_METHOD}. McNemar's exact test treats "
                  "questions as independent: shown, not decided on.", ""]
    for warning in report.warnings:
        lines.append(f"> **Warning:** {warning}")
    lines += ["", "## Verdicts", ""]
    rows = []
    for c in report.claims:
        for cmp in c.comparisons:
            seeds = ", ".join(f"{s}: {_points(p.difference)}" for s, p in sorted(cmp.per_seed.items())) or "-"
            rows.append([f"{c.claim.name}" if cmp.label == "overall" else "", c.claim.says if cmp.label == "overall"
                         else "", f"baseline - `{c.claim.ablation}` ({cmp.label})", _diff(cmp.pooled),
                         f"{cmp.pooled.n} ({cmp.pooled.videos})" if cmp.pooled else "-", _p(cmp.pooled), seeds,
                         f"**{cmp.verdict}**" + (f" ({cmp.note})" if cmp.note else "")])
    lines += _table(["claim", "the paper says", "comparison", "pooled difference [95% CI]", "pairs (videos)",
                     "McNemar p", "per seed", "verdict"], rows)
    lines += ["", "\"binding - other families\": how much larger the ablation's loss is on the object-binding "
                  f"(clutter) families ({', '.join(report.binding_families) or 'none set'}) than on the others; "
                  "reproduced when that interval lies above 0."]

    lines += ["", "## Per variant", ""]
    rows = []
    for name, s in v.items():
        rows.append([f"`{name}`", ", ".join(map(str, s.seeds)), ", ".join(_pct(a) for a in s.accuracies),
                     _pct(s.mean), f"{_pct(min(s.accuracies))}-{_pct(max(s.accuracies))}"
                     + (f" (sd {100 * s.sd:.1f})" if s.sd is not None else ""),
                     f"[{_pct(s.pooled_low)}, {_pct(s.pooled_high)}]",
                     _pct(statistics.fmean(s.family_means)) if s.family_means else "-",
                     s.visual_tokens if s.visual_tokens is not None else "-"])
    lines += _table(["variant", "seeds", "accuracy per seed", "mean", "seed spread (min-max)",
                     "pooled 95% CI", "family mean", "visual tokens"], rows)
    lines += ["", "Mean: over seeds; seed spread: the seeds' range and standard deviation (training noise); pooled "
                  "95% CI: every seed's answers together, cluster bootstrap over videos (question sampling). Family "
                  "mean: results' `task_mean`, each family weighted equally, mean over seeds."]

    if report.families:
        names = list(v)
        lines += ["", f"## Per {report.breakdown} (mean over seeds)", ""]
        lines += _table([report.breakdown, "chance"] + [f"`{n}`" for n in names],
                        [[f + (" (binding)" if f in report.binding_families else ""), _pct(e.get("chance"))]
                         + [_pct(e.get(n)) for n in names] for f, e in report.families.items()])

    lines += ["", "## Plots", ""]
    bars = [{"label": name, "seeds": s.accuracies, "mean": s.mean, "ci_low": s.pooled_low, "ci_high": s.pooled_high,
             "chance": s.chance} for name, s in v.items()]
    files["ablations.png"] = out / "ablations.png"
    atomic_write_bytes(files["ablations.png"], ablation_variants_png(bars))
    lines.append("![accuracy per variant](ablations.png)")
    points = [{"label": name, "visual_tokens": v[name].visual_tokens, "accuracy": v[name].mean,
               "ci_low": v[name].pooled_low, "ci_high": v[name].pooled_high, "chance": v[name].chance}
              for name in report.token_variants if name in v and v[name].visual_tokens is not None]
    lines += ["", "### Accuracy vs visual tokens", ""]
    if points:
        lines += _table(["variant", "visual tokens per video", "accuracy (mean)", "pooled 95% CI", "seeds"],
                        [[f"`{p['label']}`", p["visual_tokens"], _pct(p["accuracy"]),
                          f"[{_pct(p['ci_low'])}, {_pct(p['ci_high'])}]", len(v[p["label"]].seeds)] for p in points])
        files["accuracy_vs_tokens.png"] = out / "accuracy_vs_tokens.png"
        atomic_write_bytes(files["accuracy_vs_tokens.png"], accuracy_vs_tokens_png(points))
        lines += ["", "Visual tokens per video at the evaluated frame count; error bars: pooled 95% CI.", "",
                  "![accuracy vs visual tokens](accuracy_vs_tokens.png)"]
    else:
        lines.append("Not drawn: no token-budget variant finished with a known visual-token count.")

    lines += ["", "## Runs", ""]
    lines += _table(["variant", "seed", "accuracy", "MLflow run", "results"],
                    [[f"`{r.variant}`", r.seed, _pct(r.results.get("accuracy")), f"`{r.run_id or '-'}`",
                      f"`{r.source}`"] for r in report.runs])
    markdown_text = "\n".join(lines) + "\n"
    files["ablations.md"] = out / "ablations.md"
    atomic_write_bytes(files["ablations.md"], markdown_text.encode())
    files["ablations.html"] = out / "ablations.html"
    atomic_write_bytes(files["ablations.html"], _html(markdown_text, "The paper's ablations").encode())
    files["summary.json"] = out / "summary.json"
    atomic_write_json(files["summary.json"], report.to_dict())
    return files
