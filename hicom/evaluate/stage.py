"""The evaluate stage: load a saved model, evaluate one benchmark on this rank's share, merge, score, log.

The same call runs alone or under torchrun (one shard per rank; rank 0 merges, scores and logs to
MLflow through hicom.tracking). Rerunning it with the same arguments resumes: answered questions are
skipped by key, so a killed run loses at most the question in flight.
"""
from __future__ import annotations

import json
import os
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch

from hicom.core.errors import ConfigError, DataError
from hicom.core.files import atomic_write_bytes, file_digest
from hicom.data.settings import ReadLimits
from hicom.data.tokenizer import load_tokenizer
from hicom.data.video import FramePreprocessor, decoder_info
from hicom.evaluate.benchmarks import read_benchmark
from hicom.evaluate.mcq import (
    SAMPLES_FILE,
    Job,
    broadcast_from_rank0,
    distributed_context,
    gathered,
    merge_and_score,
    preflight,
    run_shard,
    variants_for,
)
from hicom.evaluate.settings import EvalConfig
from hicom.model.settings import ModelProfile

# Numbers of a variant's summary that become metrics (breakdowns and the validity split are added per value).
SUMMARY_METRICS = ("accuracy", "accuracy_answered", "accuracy_readable", "total", "answered", "unanswered", "missing",
                   "chance", "task_mean")
MISSING_VIDEOS_FILE = "missing_videos.json"  # the pre-flight's list, when it stops the run
AUDIT_COLUMNS = ("id", "video", "variant", "prompt", "reply", "option_scores", "extracted", "correct_letter", "correct")


@dataclass
class EvalRun:
    benchmark: str
    model_dir: Path
    data: Path
    out: Path
    profile: ModelProfile
    config: EvalConfig
    decoder: str = "decord"
    limits: ReadLimits = ReadLimits()  # params.yaml data.limits: bigger videos are unreadable, named
    videos: Path | None = None
    subtitles: Path | None = None
    towers: Path | None = None  # SigLIP directory: instruction tokenizer and preprocessor_config.json
    frames: int | None = None  # default: the profile's num_frames
    guidance: str = "on"  # on | off | both (Table A4: with and without instruction injection)
    protocol: str = "generate"  # comma-separated: generate, likelihood; the first is the headline result
    track: bool = True
    experiment: str = "hicom"
    parent_run_id: str | None = None
    allow_missing: bool = False  # go on past missing/unreadable videos, scoring their questions as wrong


def run_evaluation(run: EvalRun) -> dict | None:
    """results.json's content on rank 0 (None on the other ranks)."""
    rank, world, own_group = distributed_context(run.config.barrier_timeout_s)
    try:
        return _evaluate(run, rank, world)
    finally:
        if own_group:
            torch.distributed.destroy_process_group()


def _evaluate(run: EvalRun, rank: int, world: int) -> dict | None:
    from hicom.model.build import quiet_transformers
    from hicom.model.modeling_hicom import HIComForCausalLM
    from hicom.tracking import Tracker

    frames = run.frames or run.profile.num_frames
    if frames < 1:
        raise ConfigError(f"--frames: must be at least 1, got {frames}")
    samples, missing, issues = _checked_samples(run, rank, world)
    device = torch.device("cpu")
    if torch.cuda.is_available():  # one GPU per rank
        device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
        torch.cuda.set_device(device)
    torch.manual_seed(run.config.seed)
    if not (run.model_dir / "config.json").is_file():
        raise FileNotFoundError(f"--model {run.model_dir}: no saved model (config.json) there")
    with quiet_transformers():
        model = HIComForCausalLM.from_pretrained(run.model_dir, dtype=run.config.torch_dtype(device)).to(device).eval()
    variants = variants_for(run.guidance, run.subtitles is not None, run.protocol)
    injects = model.config.compressor_config.uses_instruction
    if not injects and run.guidance != "on":
        raise ConfigError(f"--guidance {run.guidance}: the model in {run.model_dir} injects no instruction, "
                          "so there is nothing to switch off")
    tokenizer = load_tokenizer(run.model_dir)
    towers = run.towers or (Path(run.profile.text.path) if run.profile.text.path else None)
    guide_tokenizer = None
    if injects and any(v.guided for v in variants):
        if towers is None:
            raise ConfigError("the model injects the instruction: pass --towers DIR (the SigLIP directory with "
                              "the instruction tokenizer)")
        guide_tokenizer = load_tokenizer(towers)
    preprocessor = FramePreprocessor.from_towers(towers, model.config.vision_config.image_size)
    model_version = broadcast_from_rank0(file_digest(run.model_dir)[:16] if rank == 0 else None, world)
    job = Job(benchmark=run.benchmark, samples=samples, out=run.out, frames=frames, decoder=run.decoder,
              limits=run.limits,
              config=run.config, model_version=model_version, variants=variants, data_issues=issues,
              preflight_missing=missing)

    tracker = Tracker(enabled=run.track, experiment=run.experiment, run_name=f"evaluate-{run.benchmark}", rank=rank,
                      parent_run_id=run.parent_run_id, tags={"stage": "evaluate", "benchmark": run.benchmark})
    with tracker:
        data_digest = file_digest(run.data) if rank == 0 else ""
        tracker.log_params(_params(run, job, model_version, data_digest, world, str(model.dtype)))
        tracker.log_input(name=run.benchmark, digest=data_digest, source=str(run.data), context="eval",
                          num_rows=len(samples))
        if rank == 0:
            print(f"evaluate[{run.benchmark}]: {len(samples)} questions x {len(variants)} variant(s) "
                  f"({', '.join(v.name for v in variants)}), {frames} frames, {world} process(es)", flush=True)
        counts = run_shard(model, job, tokenizer, guide_tokenizer, preprocessor, rank, world, device,
                           progress=rank == 0)
        # wall time per question, here and over every rank's answers (to the tracker): a run's time is not an output
        seconds = list(counts["seconds"].values())
        print(f"evaluate[{run.benchmark}]: rank {rank}: answered {counts['answered']}"
              + (f" ({statistics.mean(seconds):.3f} s a question)" if seconds else "")
              + f", already done {counts['skipped']}, unreadable videos' questions {counts['missing']}", flush=True)
        spent = gathered((sum(seconds), len(seconds)), world)  # every rank has finished its shard
        if rank != 0:
            return None
        results = merge_and_score(job, world)
        answered = sum(n for _, n in spent)
        timing = {f"{run.benchmark}/seconds_per_question": sum(s for s, _ in spent) / answered} if answered else {}
        tracker.log_metrics({**metrics_of(run.benchmark, results["variants"]),
                             f"{run.benchmark}/data_issues": len(results["data_issues"]), **timing})
        for name in ["predictions.jsonl", "results.json", SAMPLES_FILE,
                     *(f for s in results["variants"].values() if "submission" in s for f in s["submission"]["files"])]:
            tracker.log_artifact(run.out / name)
        tracker.log_table(audit_table(run.out / SAMPLES_FILE), "samples_table.json")
    return results


def _checked_samples(run: EvalRun, rank: int, world: int) -> tuple[list, list[dict], list[dict]]:
    """Rank 0 reads the benchmark and runs the pre-flight (before any model is loaded); every rank gets its
    result. Missing or unreadable videos stop the run, listed, unless --allow-missing."""
    found = None
    if rank == 0:
        issues: list[dict] = []
        samples = read_benchmark(run.benchmark, run.data, run.videos, run.subtitles, issues)
        samples, missing, subtitle_issues = preflight(samples, run.decoder, run.limits, run.config.read_timeout_s,
                                                      run.subtitles is not None)
        found = (samples, missing, issues + subtitle_issues)
        run.out.mkdir(parents=True, exist_ok=True)
        print(f"evaluate[{run.benchmark}]: pre-flight: {len(samples)} questions, {len(missing)} with a missing or "
              f"unreadable video, {len(found[2])} data issue(s) (results.json: data_issues)", flush=True)
        if missing and not run.allow_missing:
            atomic_write_bytes(run.out / MISSING_VIDEOS_FILE, json.dumps(missing, indent=1).encode())
    samples, missing, issues = broadcast_from_rank0(found, world)
    if missing and not run.allow_missing:
        shown = "\n".join(f"  {m['id']}: {m['reason']}" for m in missing[:20])
        more = f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else ""
        raise DataError(f"{run.benchmark}: {len(missing)} question(s) have a missing or unreadable video (all listed "
                        f"in {run.out / MISSING_VIDEOS_FILE}):\n{shown}{more}\nFix the download, or pass "
                        f"--allow-missing to score them as wrong")
    return samples, missing, issues


def audit_table(path: Path) -> dict[str, list]:
    """samples.jsonl as MLflow table columns (option scores as JSON text)."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    table = {c: [r[c] for r in rows] for c in AUDIT_COLUMNS}
    table["option_scores"] = [None if x is None else json.dumps(x) for x in table["option_scores"]]
    return table


def _params(run: EvalRun, job: Job, model_version: str, data_digest: str, world: int, dtype: str) -> dict:
    template = job.template
    return {
        "benchmark": run.benchmark, "variants": ",".join(v.name for v in job.variants), "guidance": run.guidance,
        "protocol": run.protocol,
        "profile": run.profile.name, "frames": job.frames, **decoder_info(run.decoder),
        "model": {"dir": str(run.model_dir), "version": model_version, "dtype": dtype},
        "prompt": {"template": template.text(), "template_hash": template.digest()},
        "generation": {"do_sample": False, "num_beams": 1, "max_new_tokens": run.config.max_new_tokens},
        "seed": run.config.seed, "world_size": world,
        "data": {"path": str(run.data), "digest": data_digest, "videos": str(run.videos or "default"),
                 "subtitles": str(run.subtitles or "none")},
        "invalid_instructions": json.dumps(list(run.config.invalid_instructions)),
    }


def metrics_of(benchmark: str, summaries: dict[str, dict]) -> dict[str, float]:
    """benchmark[/variant]/accuracy, .../<breakdown>/<value>, .../validity/<valid|invalid>/accuracy, ..."""
    from hicom.tracking import metric_name

    metrics: dict[str, float] = {}

    def put(value: float | None, *parts) -> None:
        if value is None:  # an empty group has no accuracy
            return
        name = metric_name(*parts)
        while name in metrics:  # two values that sanitise alike ("A & B", "A B") keep both numbers
            name += "_"
        metrics[name] = float(value)

    def put_interval(ci: dict | None, *parts) -> None:  # <name>_ci_low / _ci_high beside each accuracy
        if ci:
            put(ci["low"], *parts[:-1], f"{parts[-1]}_ci_low")
            put(ci["high"], *parts[:-1], f"{parts[-1]}_ci_high")

    for variant, summary in summaries.items():
        prefix = (benchmark,) if variant == "default" else (benchmark, variant)
        for key in SUMMARY_METRICS:
            if key in summary:
                put(summary[key], *prefix, key)
            put_interval(summary.get(f"{key}_ci"), *prefix, key)
        for field, values in summary["breakdown"].items():
            for value, stats in values.items():
                put(stats["accuracy"], *prefix, field, value)
                put_interval(stats.get("accuracy_ci"), *prefix, field, value)
        for split, stats in summary["validity"].items():
            put(stats["accuracy"], *prefix, "validity", split, "accuracy")
            put_interval(stats.get("accuracy_ci"), *prefix, "validity", split, "accuracy")
            put(stats["total"], *prefix, "validity", split, "total")
    return metrics
