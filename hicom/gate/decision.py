"""The promotion gate: a candidate's metrics and per-question records from its evaluation and efficiency
files, the paired comparison of two evaluations on the same questions, and the decision against the
champion. Pure Python; hicom.registry does the MLflow side (versions, aliases, tags, artifacts).

Accuracy is judged as non-inferiority on evidence: per benchmark, the paired cluster-bootstrap interval of
(challenger - champion) on the same questions must lie above -accuracy_margin. When it lies entirely below,
the challenger is worse (rejected); when it straddles -margin, the set cannot tell (inconclusive: the
champion is kept).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from hicom.core.errors import ConfigError, DataError
from hicom.core.files import read_json_object
from hicom.core.stats import METHOD, cluster_bootstrap, mcnemar_exact
from hicom.evaluate.scoring import question_set_hash
from hicom.gate.settings import GateConfig

ACCURACY_PREFIX = "accuracy/"  # + benchmark name; + "/ci_low", "/ci_high", "/n" for its interval


QUESTION_SET_PREFIX = "question_set/"  # version tag: + benchmark name -> the hash of its question set


GATE_PREFIX = "gate/"  # a decision's numbers as tags: gate/<benchmark>/<field>


EFFICIENCY_PREFIX = "efficiency/"  # + a numeric field of the profile row


VISUAL_TOKENS = "efficiency/visual_tokens"


LATENCY = "efficiency/s_per_video"


# profile.json (hicom.efficiency): {"rows": [{"model": "hicom" | "llava_ov", "frames": N, "visual_tokens": ...,
# "s_per_video": ..., "vision_ms": ..., ...}, ...]}; the gate reads the HICom row at the configured frame count.
PROFILE_MODEL = "hicom"



# -- metrics of a candidate ----------------------------------------------------------------------
def results_file(path: str | Path) -> Path:
    """An evaluation output directory or its results.json."""
    path = Path(path)
    return path / "results.json" if path.is_dir() else path


def benchmark_keys(metrics: dict) -> list[str]:
    """The headline "accuracy/<benchmark>" keys (not their interval's)."""
    return sorted(k for k in metrics if k.startswith(ACCURACY_PREFIX) and "/" not in k[len(ACCURACY_PREFIX):])


@dataclass(frozen=True)
class Evaluation:
    """One benchmark's scored questions, as results.json keeps them; `source` names where they came from."""

    benchmark: str
    accuracy: float
    question_set: str
    questions: list[dict]  # {id, video, answer, correct}
    source: str

    @property
    def videos(self) -> int:
        return len({q["video"] for q in self.questions})


def headline_accuracy(results: dict, source: str | Path) -> float:
    """results.json's headline accuracy, after checking it is an evaluate stage's results (errors name the source)."""
    for key in ("benchmark", "accuracy"):
        if key not in results:
            raise ConfigError(f"{source}: no top-level {key!r} field (an evaluate stage's results.json?)")
    accuracy = results["accuracy"]
    if isinstance(accuracy, bool) or not isinstance(accuracy, (int, float)):
        raise ConfigError(f"{source}: accuracy must be a number (no question was scored?), got {accuracy!r}")
    return accuracy


def read_evaluation(results: dict, source: str) -> Evaluation:
    """An Evaluation from results.json's content; errors name the source and what is wrong or missing."""
    accuracy = headline_accuracy(results, source)
    questions, stored = results.get("questions"), results.get("question_set")
    if not isinstance(questions, list) or not isinstance(stored, str):
        raise ConfigError(f"{source}: no per-question records ('questions' and 'question_set'; evaluated before "
                          "they were kept?): re-run its evaluation to compare or gate on it")
    for i, q in enumerate(questions):
        if not isinstance(q, dict) or not {"id", "video", "answer", "correct"} <= set(q) \
                or not isinstance(q["correct"], bool):
            raise DataError(f"{source}: questions[{i}] needs id, video, answer and a true/false correct, got {q!r}")
    if len({q["id"] for q in questions}) != len(questions):
        raise DataError(f"{source}: question ids repeat, so answers cannot be paired by id")
    if question_set_hash(questions) != stored:
        raise DataError(f"{source}: its questions hash to {question_set_hash(questions)}, not the stored "
                        f"question_set {stored} (the file was edited?)")
    return Evaluation(str(results["benchmark"]), float(accuracy), stored, questions, source)


def candidate_metrics(eval_paths, efficiency_file: str | Path | None,
                      efficiency_frames: int) -> tuple[dict[str, float], dict[str, str], dict[str, Path]]:
    """The gate's metrics of a candidate, its question sets ({benchmark: hash}) and the files they came from
    ({artifact path: file}).

    eval_paths: evaluate stage outputs (or their results.json), one per benchmark, each with its per-question
    records; efficiency_file: the efficiency stage's profile.json, read at its HICom row of `efficiency_frames`."""
    metrics, question_sets, attachments = {}, {}, {}
    for path in eval_paths:
        file = results_file(path)
        results = read_json_object(file)
        evaluation = read_evaluation(results, str(file))
        if evaluation.benchmark in question_sets:
            raise ConfigError(f"register: benchmark {evaluation.benchmark!r} is given twice (--eval {path})")
        metrics.update(eval_metrics(results, file))
        question_sets[evaluation.benchmark] = evaluation.question_set
        attachments[f"eval/{evaluation.benchmark}"] = file
    if efficiency_file:
        row = profile_row(read_json_object(efficiency_file), efficiency_frames, efficiency_file)
        metrics.update(efficiency_metrics(row, efficiency_file))
        attachments["efficiency"] = Path(efficiency_file)
    return metrics, question_sets, attachments


def eval_metrics(results: dict, source: str | Path = "results.json") -> dict[str, float]:
    """{"accuracy/<benchmark>": accuracy, and its interval's ci_low, ci_high, n where known} from results.json."""
    accuracy = headline_accuracy(results, source)
    key = f"{ACCURACY_PREFIX}{results['benchmark']}"
    ci = results.get("accuracy_ci") or {}
    extra = {f"{key}/ci_low": ci.get("low"), f"{key}/ci_high": ci.get("high"), f"{key}/n": ci.get("n")}
    return {key: float(accuracy), **{k: float(v) for k, v in extra.items() if isinstance(v, (int, float))}}


def profile_row(profile: dict, frames: int, source: str | Path = "profile.json") -> dict:
    """The HICom row of a profile at `frames` frames."""
    rows = profile.get("rows") if isinstance(profile, dict) else None
    if not isinstance(rows, list):
        raise ConfigError(f"{source}: expected a top-level `rows` list")
    for row in rows:
        if row.get("model") == PROFILE_MODEL and row.get("frames") == frames:
            return row
    found = sorted({(r.get("model"), r.get("frames")) for r in rows}, key=str)
    raise ConfigError(f"{source}: no row with model {PROFILE_MODEL!r} at frames={frames} (rows: {found}); "
                      f"set registry.efficiency_frames to a profiled frame count")


def efficiency_metrics(row: dict, source: str | Path = "profile.json") -> dict[str, float]:
    """Every numeric field of a profile row as "efficiency/<field>"; tokens and latency must be among them."""
    metrics = {f"{EFFICIENCY_PREFIX}{k}": float(v) for k, v in row.items()
               if k != "frames" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
    for key in (VISUAL_TOKENS, LATENCY):
        if key not in metrics:
            raise ConfigError(f"{source}: the {PROFILE_MODEL} row has no numeric {key[len(EFFICIENCY_PREFIX):]!r}")
    return metrics


# -- paired comparison ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Paired:
    """(new - old) accuracy on the same questions, with its cluster-bootstrap interval (None: fewer than 2 videos)."""

    benchmark: str
    question_set: str
    n: int
    videos: int
    new: float
    old: float
    difference: float
    ci_low: float | None
    ci_high: float | None
    mcnemar_p: float  # exact, treating questions as independent; shown, not decided on
    method: str = METHOD

    def interval_text(self) -> str:
        if self.ci_low is None:
            return f"{self.difference:+.3f} [no interval: fewer than 2 videos]"
        return f"{self.difference:+.3f} [95% CI {self.ci_low:+.3f}, {self.ci_high:+.3f}]"

    def describe(self) -> str:
        return (f"{self.interval_text()} on {self.n} questions ({self.videos} videos), McNemar p={self.mcnemar_p:.3g}, "
                f"question set {self.question_set}")


def paired_differences(new: Evaluation, old: Evaluation) -> list[tuple[str, str, int]]:
    """(question id, video, new - old correct) per question of `new`; refused (ConfigError naming both hashes)
    when the two were evaluated on different question sets."""
    if new.benchmark != old.benchmark:
        raise ConfigError(f"{new.source} is {new.benchmark!r}, {old.source} is {old.benchmark!r}: not comparable")
    if new.question_set != old.question_set:
        raise ConfigError(f"{new.benchmark}: {new.source} was evaluated on question set {new.question_set}, "
                          f"{old.source} on question set {old.question_set}; a paired comparison needs the same "
                          "questions (evaluate both on one set)")
    old_correct = {q["id"]: q["correct"] for q in old.questions}
    return [(q["id"], q["video"], int(q["correct"]) - int(old_correct[q["id"]])) for q in new.questions]


def paired_comparison(new: Evaluation, old: Evaluation) -> Paired:
    """Pair two evaluations question by question (paired_differences).

    The interval resamples videos (as grouped in `new`) with both runs' answers to their questions together."""
    paired = paired_differences(new, old)
    diffs = [d for _, _, d in paired]
    interval = cluster_bootstrap(diffs, [video for _, video, _ in paired])
    low, high = interval if interval is not None else (None, None)
    n = len(paired)
    return Paired(new.benchmark, new.question_set, n, new.videos, new.accuracy, old.accuracy,
                  sum(diffs) / n if n else 0.0, low, high,
                  mcnemar_exact(sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)))


# -- the gate ------------------------------------------------------------------------------------
PROMOTED, REJECTED, INCONCLUSIVE, UNCHANGED = "promoted", "rejected", "inconclusive", "unchanged"


@dataclass(frozen=True)
class Candidate:
    """A model version as the gate sees it: metrics, each benchmark's evaluation, and why any is unavailable."""

    label: str  # "version 3"
    metrics: dict[str, float]
    evaluations: dict[str, Evaluation]
    unavailable: dict[str, str] = dataclasses.field(default_factory=dict)  # benchmark -> why no records


@dataclass(frozen=True)
class GateDecision:
    outcome: str  # promoted | rejected | inconclusive (champion kept) | unchanged
    reasons: list[str]
    comparisons: dict[str, dict] = dataclasses.field(default_factory=dict)  # benchmark -> verdict and numbers

    @property
    def passed(self) -> bool:
        return self.outcome == PROMOTED


def check_set_sizes(candidate: Candidate, gate: GateConfig) -> None:
    """Refuse, before any decision, a candidate without records or with a set below registry.gate.min_questions."""
    for benchmark in (key[len(ACCURACY_PREFIX):] for key in benchmark_keys(candidate.metrics)):
        if benchmark in candidate.unavailable:
            raise ConfigError(f"{candidate.label}: {candidate.unavailable[benchmark]}")
        n = len(candidate.evaluations[benchmark].questions)
        if n < gate.min_questions:
            raise ConfigError(f"registry.gate.min_questions: {candidate.label} was evaluated on {n} {benchmark} "
                              f"questions, fewer than the minimum {gate.min_questions}; too few to decide on")


def accuracy_verdict(paired: Paired, margin: float) -> str:
    """pass: the interval's low end is above -margin; worse: its high end is below -margin; else inconclusive."""
    if paired.ci_low is None:
        return "inconclusive"
    if paired.ci_low > -margin:
        return "pass"
    return "worse" if paired.ci_high < -margin else "inconclusive"


def gate_decision(challenger: Candidate, champion: Candidate | None, gate: GateConfig) -> GateDecision:
    """Compare a challenger with the champion: per benchmark a paired non-inferiority test on the same questions;
    visual tokens and latency not higher beyond their tolerance. Any failed check rejects; otherwise any
    benchmark that cannot be decided (interval straddles -margin, or no paired records) keeps the champion.

    Raises ConfigError (before deciding anything) when the challenger lacks records or has too few questions."""
    check_set_sizes(challenger, gate)
    if champion is None:
        return GateDecision(PROMOTED, ["no champion yet: the first registered version becomes champion"])
    reasons, comparisons, failed, undecided = [], {}, False, False
    margin = gate.accuracy_margin
    for key in benchmark_keys(champion.metrics):
        benchmark = key[len(ACCURACY_PREFIX):]
        if benchmark not in challenger.evaluations:
            failed = True
            reasons.append(f"FAIL {key}: challenger was not evaluated on it (champion {champion.metrics[key]:.4f})")
            continue
        new = challenger.evaluations[benchmark]
        if benchmark in champion.unavailable:
            undecided = True
            reasons.append(f"inconclusive {key}: champion {champion.label} cannot be paired: "
                           f"{champion.unavailable[benchmark]}; champion kept")
            comparisons[benchmark] = {"verdict": "unpaired", "question_set": new.question_set}
            continue
        old = champion.evaluations[benchmark]
        if new.question_set != old.question_set:
            undecided = True
            reasons.append(f"inconclusive {key}: challenger's question set {new.question_set} is not the champion's "
                           f"{old.question_set}, so they cannot be paired; champion kept (evaluate both on one set)")
            comparisons[benchmark] = {"verdict": "unpaired", "question_set": new.question_set}
            continue
        paired = paired_comparison(new, old)
        verdict = accuracy_verdict(paired, margin)
        comparisons[benchmark] = {"verdict": verdict, **dataclasses.asdict(paired), "margin": margin}
        numbers = (f"challenger {paired.new:.4f} - champion {paired.old:.4f} = {paired.describe()}; "
                   f"margin {margin:g}")
        if verdict == "pass":
            reasons.append(f"pass {key}: {numbers}: the interval lies above -{margin:g} (non-inferior)")
        elif verdict == "worse":
            failed = True
            reasons.append(f"FAIL {key}: {numbers}: the interval lies below -{margin:g} (worse)")
        else:
            undecided = True
            reasons.append(f"inconclusive {key}: {numbers}: the interval reaches below -{margin:g}, too few "
                           "questions to tell; champion kept")
    for key in benchmark_keys(challenger.metrics):
        if key not in champion.metrics:
            reasons.append(f"new {key}: {challenger.metrics[key]:.4f} (champion has none; not compared)")
    for key, tolerance in ((VISUAL_TOKENS, gate.visual_tokens_max_increase), (LATENCY, gate.latency_max_increase)):
        if key not in champion.metrics:
            reasons.append(f"skip {key}: champion has none; not compared")
            continue
        if key not in challenger.metrics:
            failed = True
            reasons.append(f"FAIL {key}: challenger has none (champion {champion.metrics[key]:g})")
            continue
        new_value, old_value = challenger.metrics[key], champion.metrics[key]
        limit = old_value * (1 + tolerance)
        ok = new_value <= limit + 1e-12 * max(1.0, abs(limit))
        failed |= not ok
        reasons.append(f"{'pass' if ok else 'FAIL'} {key}: {new_value:g} vs champion {old_value:g} "
                       f"(may rise at most {tolerance:.0%}, to {limit:g})")
    outcome = REJECTED if failed else INCONCLUSIVE if undecided else PROMOTED
    return GateDecision(outcome, reasons, comparisons)
