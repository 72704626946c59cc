"""The promotion gate: a candidate's metrics from its evaluation and efficiency files, and the decision
against the champion's. Pure Python; hicom.registry does the MLflow side (versions, aliases, tags)."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from hicom.core.errors import ConfigError
from hicom.core.files import read_json_object

ACCURACY_PREFIX = "accuracy/"  # + benchmark name


EFFICIENCY_PREFIX = "efficiency/"  # + a numeric field of the profile row


VISUAL_TOKENS = "efficiency/visual_tokens"


LATENCY = "efficiency/s_per_video"


# profile.json (hicom.efficiency): {"rows": [{"model": "hicom" | "llava_ov", "frames": N, "visual_tokens": ...,
# "s_per_video": ..., "vision_ms": ..., ...}, ...]}; the gate reads the HICom row at the configured frame count.
PROFILE_MODEL = "hicom"


@dataclass(frozen=True)
class GateConfig:
    """How much worse than the champion a challenger may be and still be promoted."""

    accuracy_max_drop: float = 0.01  # per benchmark, absolute
    visual_tokens_max_increase: float = 0.0  # relative
    latency_max_increase: float = 0.25  # relative


@dataclass(frozen=True)
class RegistryConfig:
    """params.yaml `registry:`."""

    model_name: str = "hicom-video-qa"
    efficiency_frames: int = 32  # the profile row (HICom at this many frames) that gives tokens and latency
    prompt_template: str = "synthetic"  # how the served model lays out options (hicom.evaluate.benchmarks.BENCHMARKS)
    gate: GateConfig = dataclasses.field(default_factory=GateConfig)

    def __post_init__(self):
        from hicom.evaluate.benchmarks import BENCHMARKS

        if self.prompt_template not in BENCHMARKS:
            raise ConfigError(f"registry.prompt_template: {self.prompt_template!r} is not one of {sorted(BENCHMARKS)}")


# -- metrics of a candidate ----------------------------------------------------------------------
def results_file(path: str | Path) -> Path:
    """An evaluation output directory or its results.json."""
    path = Path(path)
    return path / "results.json" if path.is_dir() else path


def candidate_metrics(eval_paths, efficiency_file: str | Path | None,
                      efficiency_frames: int) -> tuple[dict[str, float], dict[str, Path]]:
    """The gate's metrics of a candidate and the files they came from ({artifact path: file}).

    eval_paths: evaluate stage outputs (or their results.json), one per benchmark; efficiency_file: the
    efficiency stage's profile.json, read at its HICom row of `efficiency_frames` frames."""
    metrics, attachments = {}, {}
    for path in eval_paths:
        file = results_file(path)
        results = read_json_object(file)
        found = eval_metrics(results, file)
        if set(found) & set(metrics):
            raise ConfigError(f"register: benchmark {results['benchmark']!r} is given twice (--eval {path})")
        metrics.update(found)
        attachments[f"eval/{results['benchmark']}"] = file
    if efficiency_file:
        row = profile_row(read_json_object(efficiency_file), efficiency_frames, efficiency_file)
        metrics.update(efficiency_metrics(row, efficiency_file))
        attachments["efficiency"] = Path(efficiency_file)
    return metrics, attachments


def eval_metrics(results: dict, source: str | Path = "results.json") -> dict[str, float]:
    """{"accuracy/<benchmark>": accuracy} from the content of an evaluation's results.json."""
    for key in ("benchmark", "accuracy"):
        if key not in results:
            raise ConfigError(f"{source}: no top-level {key!r} field (an evaluate stage's results.json?)")
    accuracy = results["accuracy"]
    if isinstance(accuracy, bool) or not isinstance(accuracy, (int, float)):
        raise ConfigError(f"{source}: accuracy must be a number (no question was scored?), got {accuracy!r}")
    return {f"{ACCURACY_PREFIX}{results['benchmark']}": float(accuracy)}


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


# -- the gate ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reasons: list[str]


def gate_decision(challenger: dict[str, float], champion: dict[str, float] | None, gate: GateConfig) -> GateDecision:
    """Compare a challenger's metrics with the champion's: accuracy per benchmark not lower (beyond the tolerance),
    visual tokens and latency not higher. Every comparison gives a reason; any failed one rejects."""
    if champion is None:
        return GateDecision(True, ["no champion yet: the first registered version becomes champion"])
    reasons, passed = [], True

    def check(key: str, ok: bool, detail: str) -> None:
        nonlocal passed
        passed &= ok
        reasons.append(f"{'pass' if ok else 'FAIL'} {key}: {detail}")

    for key in sorted(k for k in champion if k.startswith(ACCURACY_PREFIX)):
        if key not in challenger:
            check(key, False, f"challenger was not evaluated on it (champion {champion[key]:.4f})")
            continue
        new, old = challenger[key], champion[key]
        check(key, new >= old - gate.accuracy_max_drop - 1e-12,
              f"{new:.4f} vs champion {old:.4f} (may drop at most {gate.accuracy_max_drop:g})")
    for key in sorted(k for k in challenger if k.startswith(ACCURACY_PREFIX) and k not in champion):
        reasons.append(f"new {key}: {challenger[key]:.4f} (champion has none; not compared)")
    for key, tolerance in ((VISUAL_TOKENS, gate.visual_tokens_max_increase), (LATENCY, gate.latency_max_increase)):
        if key not in champion:
            reasons.append(f"skip {key}: champion has none; not compared")
            continue
        if key not in challenger:
            check(key, False, f"challenger has none (champion {champion[key]:g})")
            continue
        new, old = challenger[key], champion[key]
        limit = old * (1 + tolerance)
        check(key, new <= limit + 1e-12 * max(1.0, abs(limit)),
              f"{new:g} vs champion {old:g} (may rise at most {tolerance:.0%}, to {limit:g})")
    return GateDecision(passed, reasons)
