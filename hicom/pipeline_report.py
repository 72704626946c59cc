"""Reports for team dashboards: one pipeline run as markdown + HTML + PNGs (also logged to the run),
and several pipeline runs (an ablation sweep) side by side as one table and one plot, with each run's
accuracy paired question by question against the first run's.

Everything is read back from MLflow through hicom.registry: the pipeline's parent run, its stage
child runs (loss histories, the register and promote decisions) and the evaluation `results.json` /
efficiency `profile.json` artifacts the stages logged. Files named on the command line take
precedence over artifacts, for stages that ran without tracking.
"""
from __future__ import annotations

import datetime
import math
from dataclasses import dataclass
from pathlib import Path

from hicom.core.errors import ConfigError
from hicom.core.files import atomic_write_bytes, read_json_object
from hicom.efficiency.fields import MODELS
from hicom.gate.decision import (
    ACCURACY_PREFIX,
    LATENCY,
    VISUAL_TOKENS,
    Paired,
    benchmark_keys,
    efficiency_metrics,
    eval_metrics,
    paired_comparison,
    profile_row,
    read_evaluation,
    results_file,
)
from hicom.plots import accuracy_vs_tokens_png, latency_breakdown_png, loss_curves_png
from hicom.registry import (
    RunRecord,
    json_artifacts,
    log_folder,
    metric_history,
    pipeline_runs,
)

TRAIN_STAGES = ("align", "cond_pretrain", "sft")  # loss curves in this order; other stages with a loss follow
A6_COLUMNS = (("visual_tokens", "visual tokens", "{:.0f}"), ("vision_ms", "vision ms", "{:.1f}"),
              ("compressor_ms", "compressor ms (incl. text)", "{:.1f}"), ("llm_ttft_ms", "LLM TTFT ms", "{:.1f}"),
              ("s_per_video", "s/video", "{:.3f}"), ("llm_prefill_flops", "prefill GFLOPs", "{:.2f}"),
              ("peak_memory_mb", "peak mem MB", "{:.1f}"))
HTML_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:75em;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse;margin:0.5em 0}}th,td{{border:1px solid #ccc;padding:0.2em 0.6em;text-align:right}}
th:first-child,td:first-child{{text-align:left}}img{{max-width:100%}}code{{background:#f4f4f4}}</style>
</head><body>
{body}
</body></html>
"""


@dataclass
class PipelineData:
    """One pipeline run as read back from MLflow (plus files given explicitly)."""

    parent: RunRecord
    children: list[RunRecord]
    losses: dict[str, list[tuple[int, float]]]  # stage -> (step, loss)
    evals: list[dict]  # results.json contents, one per benchmark
    profile: dict | None  # profile.json content
    efficiency_frames: int  # which profile row stands for the model (registry.efficiency_frames)

    def child(self, stage: str) -> RunRecord | None:
        """The latest child run of a stage."""
        runs = [c for c in self.children if c.stage == stage]
        return runs[-1] if runs else None

    def hicom_row(self) -> dict | None:
        try:
            return profile_row(self.profile, self.efficiency_frames) if self.profile else None
        except ConfigError:
            return None

    def metrics(self) -> dict[str, float]:
        """The gate's view of this run: accuracy per benchmark, tokens and latency of the profiled HICom row."""
        out = {}
        for results in self.evals:
            if isinstance(results.get("accuracy"), (int, float)):
                out.update(eval_metrics(results))
        row = self.hicom_row()
        if row is not None:
            try:
                out.update(efficiency_metrics(row))
            except ConfigError:
                pass
        return out


def collect(run_id: str, *, eval_paths=(), profile_file: str | Path | None = None,
            efficiency_frames: int = 32) -> PipelineData:
    """Read a pipeline run: its children, each training stage's loss history, eval results and the profile."""
    parent, children = pipeline_runs(run_id)
    if parent.tags.get("mlflow.parentRunId"):
        raise ConfigError(f"run {run_id} is a stage run (its parent is {parent.tags['mlflow.parentRunId']}); "
                          "pass the pipeline's parent run")
    losses = {}
    for child in children:  # oldest first: a rerun of a stage replaces the earlier curve
        if "loss" in child.metrics:
            losses[child.stage or child.name] = metric_history(child.run_id, "loss")
    order = {stage: i for i, stage in enumerate(TRAIN_STAGES)}
    losses = dict(sorted(losses.items(), key=lambda item: order.get(item[0], len(order))))

    evals, benchmarks = [], set()

    def add_eval(results: dict) -> None:
        if isinstance(results, dict) and "benchmark" in results and results["benchmark"] not in benchmarks:
            benchmarks.add(results["benchmark"])
            evals.append(results)

    for path in eval_paths:
        results = read_json_object(results_file(path))
        if "benchmark" not in results:
            raise ConfigError(f"{results_file(path)}: no top-level 'benchmark' field "
                              "(an evaluate stage's results.json?)")
        add_eval(results)
    profile = read_json_object(profile_file) if profile_file else None
    for child in reversed(children):  # newest first: a retried stage's results win
        if "loss" in child.metrics:
            continue  # training runs log checkpoints, not results
        for path, content in json_artifacts(child.run_id, ("results.json", "profile.json")):
            if path.endswith("results.json"):
                add_eval(content)
            elif profile is None and isinstance(content.get("rows"), list):
                profile = content
    return PipelineData(parent, children, losses, sorted(evals, key=lambda r: str(r["benchmark"])), profile,
                        efficiency_frames)


# -- formatting ----------------------------------------------------------------------------------
def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|"]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def _pct(value) -> str:
    return f"{100 * value:.1f}%" if isinstance(value, (int, float)) and math.isfinite(value) else "-"


def _pct_ci(value, ci) -> str:
    """"48.3% [36.0, 60.1]": an accuracy with its 95% interval, where it has one."""
    ci = ci if isinstance(ci, dict) else {}
    if not isinstance(ci.get("low"), (int, float)) or not isinstance(ci.get("high"), (int, float)):
        return _pct(value)
    return f"{_pct(value)} [{100 * ci['low']:.1f}, {100 * ci['high']:.1f}]"


def _num(value, fmt: str = "{:g}") -> str:
    return fmt.format(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def _when(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def eval_section(evals: list[dict]) -> list[str]:
    if not evals:
        return ["No evaluation results: no stage logged a results.json and none was given (--eval)."]
    lines = _table(["benchmark", "accuracy [95% CI]", "task mean", "accuracy (answered)", "questions", "videos",
                    "unanswered", "missing", "chance"],
                   [[r["benchmark"], _pct_ci(r.get("accuracy"), r.get("accuracy_ci")),
                     _pct_ci(r.get("task_mean"), r.get("task_mean_ci")),
                     _pct_ci(r.get("accuracy_answered"), r.get("accuracy_answered_ci")), _num(r.get("total")),
                     _num((r.get("accuracy_ci") or {}).get("videos")), _num(r.get("unanswered")),
                     _num(r.get("missing")), _pct(r.get("chance"))] for r in evals])
    lines += ["", "Intervals: 95%, " + (next((r["interval"]["method"] for r in evals if "interval" in r),
                                              "none recorded (results from before intervals were kept)")) + "."]
    for r in evals:
        groups = dict(r.get("breakdown") or {})
        if any((s or {}).get("total") for s in (r.get("validity") or {}).values()):
            groups["instruction (Table A4)"] = r["validity"]
        for name, values in groups.items():
            rows = [[value, _pct_ci(s.get("accuracy"), s.get("accuracy_ci")), _pct(s.get("chance")),
                     _num(s.get("total")), _num(s.get("unanswered"))]
                    for value, s in values.items() if isinstance(s, dict) and s.get("total")]
            if rows:
                lines += ["", f"**{r['benchmark']}** by {name}:", ""]
                lines += _table([name, "accuracy [95% CI]", "chance", "questions", "unanswered"], rows)
    return lines


def efficiency_section(profile: dict | None) -> list[str]:
    if not profile:
        return ["No efficiency profile: no stage logged a profile.json and none was given (--efficiency)."]
    rows = profile["rows"]
    lines = _table(["model", "frames"] + [title for _, title, _ in A6_COLUMNS],
                   [[MODELS.get(r.get("model"), str(r.get("model"))), _num(r.get("frames"))]
                    + [_num(r.get(key) / 1e9 if key == "llm_prefill_flops" and isinstance(r.get(key), (int, float))
                            else r.get(key), fmt) for key, _, fmt in A6_COLUMNS] for r in rows])
    env = profile.get("environment") or {}
    if env:
        lines += ["", f"Device: {env.get('device', '?')} ({env.get('device_name', '?')}), "
                      f"dtype {env.get('dtype', '?')}. "
                      "Times are medians; s/video includes video loading."]
    return lines


def accuracy_points(data: PipelineData, label: str | None = None) -> list[dict]:
    """Points for hicom.plots.accuracy_vs_tokens_png: one per benchmark, at the visual tokens of the frame
    count it was evaluated at. The profile stage resolves them when it was given the results (its
    `accuracy_vs_tokens`); otherwise a benchmark is placed at the profiled HICom row of its `settings.frames`."""
    points = list((data.profile or {}).get("accuracy_vs_tokens") or [])
    if not points:
        rows = {r.get("frames"): r for r in (data.profile or {}).get("rows", []) if r.get("model") == "hicom"}
        for r in data.evals:
            row = rows.get((r.get("settings") or {}).get("frames"))
            if row is not None and isinstance(r.get("accuracy"), (int, float)):
                ci = r.get("accuracy_ci") or {}
                points.append({"label": str(r["benchmark"]), "visual_tokens": row["visual_tokens"],
                               "accuracy": r["accuracy"], "chance": r.get("chance"),
                               "ci_low": ci.get("low"), "ci_high": ci.get("high")})
    return [{**p, "label": f"{label}: {p['label']}" if label else p["label"]} for p in points]


# -- one pipeline run ----------------------------------------------------------------------------
def write_pipeline_report(data: PipelineData, out_dir: str | Path) -> dict[str, Path]:
    """report.md, report.html and the PNGs it shows, written atomically into out_dir."""
    out = Path(out_dir)
    parent = data.parent
    files: dict[str, Path] = {}

    def figure(name: str, content: bytes, title: str) -> str:
        files[name] = out / name
        atomic_write_bytes(files[name], content)
        return f"![{title}]({name})"

    lines = [f"# Pipeline run `{parent.name}`", "",
             f"Run `{parent.run_id}`, {parent.status.lower()}, started {_when(parent.start_time)}. "
             f"Profile `{parent.tags.get('profile', '?')}`, git `{parent.tags.get('env.git_commit', 'unknown')[:12]}`"
             + (" (uncommitted changes)" if parent.tags.get("env.git_dirty") == "true" else "") + "."]
    tags = {k: v for k, v in sorted(parent.tags.items()) if not k.startswith(("mlflow.", "env."))}
    if tags:
        lines += [""] + _table(["tag", "value"], [[k, v.replace("\n", " ")] for k, v in tags.items()])

    lines += ["", "## Model registry", ""]
    register, promote = data.child("register"), data.child("promote")
    if register is None:
        lines.append("No register stage under this run.")
    else:
        lines.append(f"Registered `{register.tags.get('registered_model', '?')}` version "
                     f"{register.tags.get('registered_model_version', '?')} (run `{register.run_id}`), alias "
                     f"`challenger`.")
    if promote is not None:
        outcome = promote.tags.get("promotion", "?")
        before = promote.tags.get("champion_version_before", "?")
        lines += ["", f"Promotion: **{outcome}** (champion before: {before})."]
        lines += [f"- {reason}" for reason in promote.tags.get("promotion.reasons", "").splitlines() if reason]

    lines += ["", "## Evaluation", ""] + eval_section(data.evals)
    lines += ["", "## Efficiency (Table A6)", ""] + efficiency_section(data.profile)

    lines += ["", "## Stages", ""]
    lines += _table(["stage", "run", "status", "started", "final loss", "steps"],
                    [[c.stage or c.name, f"`{c.name}`", c.status.lower(), _when(c.start_time) if c.start_time else "-",
                      _num(c.metrics.get("loss"), "{:.4f}"), _num(len(data.losses[c.stage or c.name]))
                      if "loss" in c.metrics else "-"] for c in data.children])

    lines += ["", "## Plots", ""]
    if data.losses:
        lines.append(figure("loss_curves.png", loss_curves_png(data.losses), "loss curves per stage"))
    else:
        lines.append("Loss curves: no stage run with a `loss` metric under this run.")
    points = accuracy_points(data)
    if points:
        lines += ["", figure("accuracy_vs_tokens.png", accuracy_vs_tokens_png(points), "accuracy vs visual tokens")]
    else:
        lines += ["", "Accuracy vs visual tokens: not drawn (needs evaluation results and the visual tokens at their "
                      "frame count: the profile's accuracy_vs_tokens, or a profiled HICom row at that count)."]
    if data.profile:
        lines += ["", figure("latency_breakdown.png", latency_breakdown_png(data.profile["rows"]), "latency breakdown")]
    else:
        lines += ["", "Latency breakdown: not drawn (no profile)."]
    markdown_text = "\n".join(lines) + "\n"
    files["report.md"] = out / "report.md"
    atomic_write_bytes(files["report.md"], markdown_text.encode())
    files["report.html"] = out / "report.html"
    atomic_write_bytes(files["report.html"], _html(markdown_text, f"Pipeline run {parent.name}").encode())
    return files


def pipeline_report(run_id: str, out_dir: str | Path, *, eval_paths=(), profile_file=None,
                    efficiency_frames: int = 32, log: bool = True) -> dict[str, Path]:
    """Write the report of a pipeline run and (log=True) log it as the run's `report/` artifacts."""
    data = collect(run_id, eval_paths=eval_paths, profile_file=profile_file, efficiency_frames=efficiency_frames)
    files = write_pipeline_report(data, out_dir)
    if log:
        log_folder(run_id, out_dir, "report")
    return files


def _html(markdown_text: str, title: str) -> str:
    import html

    import markdown

    return HTML_PAGE.format(title=html.escape(title), body=markdown.markdown(markdown_text, extensions=["tables"]))


# -- several runs --------------------------------------------------------------------------------
def compare_runs(run_ids: list[str], out_dir: str | Path, efficiency_frames: int = 32) -> tuple[str, dict[str, Path]]:
    """One table (accuracy with its interval per benchmark, tokens, latency, final losses, the params that differ),
    each later run's accuracy paired with the first run's on the same questions, and one plot (accuracy vs
    visual tokens, with error bars). Returns (markdown, files).

    Refused (ConfigError, before anything is written) when two runs of one benchmark were evaluated on different
    question sets (both hashes named) or a run's results have no per-question records (the run named)."""
    if len(run_ids) < 2:
        raise ConfigError(f"compare: give at least two pipeline runs, got {len(run_ids)}")
    runs = [collect(run_id, efficiency_frames=efficiency_frames) for run_id in run_ids]
    paired = paired_rows(runs)
    benchmarks = sorted({key for data in runs for key in benchmark_keys(data.metrics())})
    stages = [s for s in TRAIN_STAGES if any(s in data.losses for data in runs)]
    param_keys = sorted({k for data in runs for k in data.parent.params})
    differing = [k for k in param_keys if len({data.parent.params.get(k) for data in runs}) > 1]
    headers = (["run", "run id"] + differing + [f"{b[len(ACCURACY_PREFIX):]} [95% CI]" for b in benchmarks]
               + [f"visual tokens @{efficiency_frames}f", f"s/video @{efficiency_frames}f"]
               + [f"{s} final loss" for s in stages] + ["model version", "promotion"])
    rows = []
    for data in runs:
        metrics, register, promote = data.metrics(), data.child("register"), data.child("promote")
        results = {str(r["benchmark"]): r for r in data.evals}
        rows.append([f"`{data.parent.name}`", f"`{data.parent.run_id[:12]}`"]
                    + [data.parent.params.get(k, "-") for k in differing]
                    + [_pct_ci(metrics.get(b), (results.get(b[len(ACCURACY_PREFIX):]) or {}).get("accuracy_ci"))
                       for b in benchmarks]
                    + [_num(metrics.get(VISUAL_TOKENS), "{:.0f}"), _num(metrics.get(LATENCY), "{:.3f}")]
                    + [_num(data.losses[s][-1][1], "{:.4f}") if data.losses.get(s) else "-" for s in stages]
                    + [register.tags.get("registered_model_version", "-") if register else "-",
                       promote.tags.get("promotion", "-") if promote else "-"])
    out = Path(out_dir)
    files = {}
    lines = [f"# {len(runs)} pipeline runs side by side", ""] + _table(headers, rows)
    lines += ["", f"## Paired differences against `{runs[0].parent.name}`", ""]
    if paired:
        lines += _table(["run", "benchmark", "difference [95% CI]", "questions (videos)", "McNemar p", "verdict"],
                        [[f"`{name}`", p.benchmark, p.interval_text(), f"{p.n} ({p.videos})", f"{p.mcnemar_p:.3g}",
                          paired_verdict(p)] for name, p in paired])
        lines += ["", f"Difference = run - `{runs[0].parent.name}` on the same questions (question set "
                      f"{', '.join(sorted({p.question_set for _, p in paired}))}); interval: {paired[0][1].method}; "
                      "McNemar's exact test treats questions as independent and is shown, not decided on. "
                      "\"inconclusive\": the interval includes 0."]
    else:
        lines.append("No benchmark was evaluated in the first run and another, so nothing is paired.")
    points = [p for data in runs for p in accuracy_points(data, data.parent.name)]
    if points:
        files["compare.png"] = out / "compare.png"
        atomic_write_bytes(files["compare.png"], accuracy_vs_tokens_png(points))
        lines += ["", "![accuracy vs visual tokens](compare.png)"]
    else:
        lines += ["", "Accuracy vs visual tokens: not drawn (no run has evaluation results with the visual tokens "
                      "at their frame count)."]
    markdown_text = "\n".join(lines) + "\n"
    files["compare.md"] = out / "compare.md"
    atomic_write_bytes(files["compare.md"], markdown_text.encode())
    files["compare.html"] = out / "compare.html"
    atomic_write_bytes(files["compare.html"], _html(markdown_text, "Pipeline runs side by side").encode())
    return markdown_text, files


def paired_rows(runs: list[PipelineData]) -> list[tuple[str, Paired]]:
    """(run name, paired comparison with the first run) per later run and benchmark both evaluated."""
    def evaluation(data: PipelineData, results: dict):
        return read_evaluation(results, f"run {data.parent.run_id} (`{data.parent.name}`) on {results['benchmark']}")

    reference = {str(r["benchmark"]): r for r in runs[0].evals}
    rows = []
    for data in runs[1:]:
        for results in data.evals:
            if str(results["benchmark"]) in reference:
                old = evaluation(runs[0], reference[str(results["benchmark"])])
                rows.append((data.parent.name, paired_comparison(evaluation(data, results), old)))
    return rows


def paired_verdict(paired: Paired) -> str:
    """better / worse when the interval excludes 0, else inconclusive."""
    if paired.ci_low is not None and paired.ci_low > 0:
        return "better"
    if paired.ci_high is not None and paired.ci_high < 0:
        return "worse"
    return "inconclusive"
