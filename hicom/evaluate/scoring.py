"""Scores from prediction records: overall, every breakdown a benchmark defines, and the Table A4 split.

accuracy counts an unanswered question as wrong (correct / questions scored); accuracy_answered is the
reference's Video-MME statistic (correct / answered), reported beside it, never instead. Both are None
(null) for an empty group rather than a made-up 0. A question whose video could not be read arrives with no
reply, so it counts as unanswered (wrong); hicom.evaluate.mcq reports `missing` and the accuracy without them.

Every accuracy has an interval beside it (`<name>_ci`: low, high, and the n questions and videos it rests
on), from a cluster bootstrap over videos (hicom.core.stats). The per-question records (`questions`) and
the hash of the question set (`question_set`: ids and correct answers) let two runs on the same questions
be paired (hicom.gate.decision.paired_comparison).
"""
from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable

from hicom.core.errors import DataError
from hicom.core.files import atomic_write_bytes
from hicom.core.stats import CONFIDENCE, METHOD, RESAMPLES, SEED, cluster_bootstrap

# How every interval in a summary was made (its `interval` field).
INTERVAL = {"method": METHOD, "confidence": CONFIDENCE, "resamples": RESAMPLES, "seed": SEED, "cluster": "video"}


class InstructionFilter:
    """Tags generic, video-agnostic instructions ("What is this video mainly about?") as invalid (Table A4).

    Patterns are case-insensitive regular expressions searched in the whitespace-normalised question.
    """

    def __init__(self, patterns: Iterable[str]):
        self.patterns = list(patterns)
        compiled = []
        for p in self.patterns:
            try:
                compiled.append(re.compile(p, re.IGNORECASE))
            except re.error as exc:
                raise ValueError(f"evaluate.invalid_instructions: pattern {p!r} is not a regular expression ({exc})") \
                    from None
        self._compiled = compiled

    def is_valid(self, question: str) -> bool:
        text = " ".join(question.split())
        return not any(p.search(text) for p in self._compiled)


def question_set_hash(questions: Iterable[dict]) -> str:
    """The identity of a scored question set: its ids with their correct answers, in any order."""
    pairs = sorted([str(q["id"]), str(q["answer"])] for q in questions)
    return hashlib.sha256(json.dumps(pairs).encode()).hexdigest()[:16]


def interval(records: list[dict], weights: list[float] | None = None, strata: list | None = None) -> dict:
    """{low, high, n, videos} of correct / weights (default: per question) over these records; low and high
    are None when fewer than two videos leave no spread to estimate."""
    videos = [r["video"] for r in records]
    bounds = cluster_bootstrap([bool(r["correct"]) for r in records], videos, weights=weights, strata=strata)
    n = len(records) if weights is None else int(sum(weights))
    low, high = bounds if bounds is not None else (None, None)
    return {"low": low, "high": high, "n": n, "videos": len(set(videos))}


def _stats(records: list[dict]) -> dict:
    total = len(records)
    correct = sum(bool(r["correct"]) for r in records)
    answered = sum(r["choice"] is not None for r in records)
    return {"accuracy": correct / total if total else None, "accuracy_ci": interval(records),
            "chance": sum(1 / r["num_options"] for r in records) / total if total else None,
            "total": total, "correct": correct, "answered": answered, "unanswered": total - answered,
            "accuracy_answered": correct / answered if answered else None,
            "accuracy_answered_ci": interval(records, [float(r["choice"] is not None) for r in records])}


def summarise(records: list[dict], breakdowns: Iterable[str] = (), task_field: str | None = None) -> dict:
    """Scores of the records that have a known answer (EgoSchema's private ones are left out).

    Each record needs id, video (the bootstrap's cluster), answer, choice, correct, num_options, groups and
    instruction_valid. task_field: also report `task_mean`, the unweighted mean of the per-task accuracies
    (MLVU's M-Avg; MVBench's per-task average), beside the micro `accuracy`.
    """
    scored = [r for r in records if r["answer"] is not None]
    for r in scored:
        if "video" not in r:
            raise DataError(f"prediction record {r.get('id')!r} has no 'video' (the interval resamples videos)")
    out = _stats(scored)
    out["choice_counts"] = dict(sorted(Counter(r["choice"] or "none" for r in scored).items()))
    out["breakdown"] = {}
    for name in breakdowns:
        values = sorted({r["groups"][name] for r in scored})
        out["breakdown"][name] = {v: _stats([r for r in scored if r["groups"][name] == v]) for v in values}
    if task_field is not None:
        tasks = out["breakdown"].get(task_field) or {}
        out["task_mean"] = sum(t["accuracy"] for t in tasks.values()) / len(tasks) if tasks else None
        out["task_mean_chance"] = sum(t["chance"] for t in tasks.values()) / len(tasks) if tasks else None
        out["task_mean_ci"] = interval(scored, strata=[r["groups"][task_field] for r in scored])
    out["validity"] = {name: _stats([r for r in scored if r["instruction_valid"] is flag])
                       for name, flag in (("valid", True), ("invalid", False))}
    out["interval"] = INTERVAL
    out["question_set"] = question_set_hash(scored)
    out["questions"] = [{"id": r["id"], "video": r["video"], "answer": r["answer"], "correct": bool(r["correct"])}
                        for r in scored]
    return out


def egoschema_submission(records: list[dict], path) -> int:
    """The full-set submission CSV (q_uid,answer as option index); -1 where no option was chosen.

    Returns how many rows carry -1, so the caller can report them.
    """
    lines = ["q_uid,answer"]
    unanswered = 0
    for r in records:
        index = -1 if r["choice"] is None else ord(r["choice"]) - ord("A")
        unanswered += index < 0
        lines.append(f"{r['id']},{index}")
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
    return unanswered


def egoschema_submission_json(records: list[dict], path) -> int:
    """The JSON that EgoSchema's validate.py posts to its server: {q_uid: option index 0..4} for every question.

    An unanswered question holds -1 (what lmms-eval's egoschema task submits for a reply it cannot parse), so
    the server counts it wrong over all 5,031 questions instead of the file silently lacking it. Returns how
    many hold -1.
    """
    submission = {r["id"]: -1 if r["choice"] is None else ord(r["choice"]) - ord("A") for r in records}
    atomic_write_bytes(path, (json.dumps(submission, indent=1) + "\n").encode())
    return sum(index < 0 for index in submission.values())
