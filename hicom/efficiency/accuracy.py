"""Accuracy beside the measurements: evaluation results read up front, each placed at its visual tokens."""
from __future__ import annotations

from pathlib import Path

from hicom.core.errors import DataError
from hicom.core.files import read_json_object
from hicom.model.modeling_hicom import HIComForCausalLM


def load_eval_results(paths: list[str | Path]) -> list[dict]:
    """Read evaluation results.json files (as `python -m hicom evaluate` writes them); each needs a numeric
    `accuracy` in [0, 1].

    Optional: `visual_tokens` (tokens per question); the frames, from `num_frames` or `settings.frames`;
    `accuracy_ci` (its low and high become the plot's error bar);
    `label` (else `benchmark`, else the file's folder name). Read before any profiling, so a wrong path
    fails in a second rather than after the measurements.
    """
    entries = []
    for path in map(Path, paths):
        data = read_json_object(path, DataError, "--eval-results: ")
        accuracy = data.get("accuracy")
        if isinstance(accuracy, bool) or not isinstance(accuracy, (int, float)) or not 0 <= accuracy <= 1:
            raise DataError(f"--eval-results: {path}: field 'accuracy' must be a number in [0, 1], got {accuracy!r}")
        settings = data.get("settings") if isinstance(data.get("settings"), dict) else {}
        counts = {"visual_tokens": data.get("visual_tokens"), "num_frames": data.get("num_frames"),
                  "settings.frames": settings.get("frames")}
        for key, value in counts.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise DataError(f"--eval-results: {path}: field {key!r} must be a positive integer, got {value!r}")
        label = data.get("label") or data.get("benchmark") or path.parent.name or path.stem
        ci = data.get("accuracy_ci") if isinstance(data.get("accuracy_ci"), dict) else {}
        entries.append({"path": str(path), "label": str(label), "accuracy": float(accuracy),
                        "visual_tokens": counts["visual_tokens"],
                        "num_frames": counts["num_frames"] or counts["settings.frames"], "chance": data.get("chance"),
                        "ci_low": ci.get("low"), "ci_high": ci.get("high")})
    return entries


def resolve_tokens(entries: list[dict], hicom: HIComForCausalLM, default_frames: int) -> list[dict]:
    """Visual tokens per entry: the file's own `visual_tokens`, else the profiled HICom model's count at the
    file's `num_frames` (default: the profile's num_frames, what `evaluate` samples), recorded as assumed."""
    out = []
    for entry in entries:
        entry = dict(entry)
        if entry["visual_tokens"] is not None:
            entry["tokens_source"] = "results file"
        else:
            frames = entry["num_frames"] or default_frames
            entry["visual_tokens"] = hicom.num_visual_tokens(frames)
            entry["tokens_source"] = f"assumed: the profiled HICom model at {frames} frames"
        out.append(entry)
    return out
