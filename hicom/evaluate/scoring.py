"""Scores from prediction records: overall, every breakdown a benchmark defines, and the Table A4 split.

accuracy counts an unanswered question as wrong (correct / questions scored); accuracy_answered is the
reference's Video-MME statistic (correct / answered), reported beside it, never instead. Both are None
(null) for an empty group rather than a made-up 0. A question whose video could not be read arrives with no
reply, so it counts as unanswered (wrong); hicom.evaluate.mcq reports `missing` and the accuracy without them.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable

from hicom.core.files import atomic_write_bytes


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


def _stats(records: list[dict]) -> dict:
    total = len(records)
    correct = sum(bool(r["correct"]) for r in records)
    answered = sum(r["choice"] is not None for r in records)
    return {"accuracy": correct / total if total else None, "total": total, "correct": correct,
            "answered": answered, "unanswered": total - answered,
            "accuracy_answered": correct / answered if answered else None}


def summarise(records: list[dict], breakdowns: Iterable[str] = (), task_field: str | None = None) -> dict:
    """Scores of the records that have a known answer (EgoSchema's private ones are left out).

    task_field: also report `task_mean`, the unweighted mean of the per-task accuracies (MLVU's M-Avg;
    MVBench's per-task average), beside the micro `accuracy`.
    """
    scored = [r for r in records if r["answer"] is not None]
    out = _stats(scored)
    out["chance"] = sum(1 / r["num_options"] for r in scored) / len(scored) if scored else None
    out["choice_counts"] = dict(sorted(Counter(r["choice"] or "none" for r in scored).items()))
    out["breakdown"] = {}
    for name in breakdowns:
        values = sorted({r["groups"][name] for r in scored})
        out["breakdown"][name] = {v: _stats([r for r in scored if r["groups"][name] == v]) for v in values}
    if task_field is not None:
        tasks = out["breakdown"].get(task_field) or {}
        out["task_mean"] = sum(t["accuracy"] for t in tasks.values()) / len(tasks) if tasks else None
    out["validity"] = {name: _stats([r for r in scored if r["instruction_valid"] is flag])
                       for name, flag in (("valid", True), ("invalid", False))}
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
