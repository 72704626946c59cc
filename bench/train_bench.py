"""Training throughput with and without the frozen-feature cache, and where a step spends its time.

    python bench/train_bench.py [--steps 30] [--repeats 3] [--micro-batch B] [--threads 1]

For the three training stages of the tiny profile (alignment, conditional pre-training, instruction
tuning), builds the model, optimizer groups and dataset as hicom.train.trainer does (towers from outputs/towers, LLM
tokenizer from outputs/tokenizer), then runs --steps micro-batches of real training (forward,
backward, AdamW every global_batch / micro_batch micro-batches, gradient clipping) in three arms
over the same sample indices, each an epoch of training as the trainer runs it:

    no cache      a later epoch without a cache: decode + vision tower (+ instruction tower for guided
                  stages) every time; the samples' token ids memoised by an untimed first pass, as the
                  trainer's dataset memoises them in its first epoch
    cache (cold)  the first epoch with a fresh FeatureCache in a temporary directory, on a fresh dataset:
                  tokenise + decode + towers + store
    cache (warm)  the next epoch on that dataset and cache: load the stored features (and encoded
                  guides), no decoding, no towers, no tokenising

One process, no DeepSpeed or torchrun: DeepSpeed adds the same per-step work to every arm, and
the point here is the per-sample work. Each repeat runs all three arms (a fresh cache each time;
the arm order alternates between repeats so drift affects both alike), and the report gives
medians over the repeats, all measured in this one run, so the warm/no-cache ratio is
comparable even where absolute speeds (a busy machine) are not. The project's target is a
ratio of at least 1.5x.

Breakdown (median ms per micro-batch): data = dataset[i] + collate (decode, preprocess,
tokenise, cache reads); vision = encode_frames; text = encode_guides (instruction tower);
compressor = every projector call; llm = the language model's decoder and LM head; backward = backward +
optimizer step (amortised); other = the rest of the step (splicing, cache writes, glue). They
are measured by wrapping the model instance's methods and hooking its modules in this script;
no library code is changed. Numbers also go to outputs/reports/train_bench.json.

Threads: 1 by default, as each rank of a multi-process torchrun gets (OMP_NUM_THREADS=1). With
more intra-op threads than idle cores, OpenMP threads wait on each other at every op and the
tiny model's steps get several times slower and far noisier (seen here: the vision tower 5x
slower with 2 threads while another job held one of the 2 cores).

Memory: glibc keeps freed memory for reuse, as `python -m hicom` has it for every stage
(hicom.core.allocator; the report's `freed_memory_kept`).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import transformers

from hicom.core.allocator import keep_freed_memory
from hicom.core.files import atomic_write_bytes
from hicom.data.dataset import ConversationDataset, RejectLog, SampleSettings, collate
from hicom.data.feature_cache import FeatureCache, FramePolicy
from hicom.data.mixture import load_mixture
from hicom.data.tokenizer import load_tokenizer
from hicom.data.video import FramePreprocessor
from hicom.model.build import build_model
from hicom.params import PARAMS_FILE, Params
from hicom.train.config import STAGES
from hicom.train.optim import build_optimizer, configure_trainable
from hicom.train.trainer import epoch_indices

sys.path.insert(0, str(Path(__file__).resolve().parent))
from goals import Goal, record  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PROFILE = "tiny"
BENCH_STAGES = ("align", "cond_pretrain", "sft")
ARMS = ("no cache", "cache (cold)", "cache (warm)")
PARTS = ("data", "vision", "text", "compressor", "llm", "backward", "other")
TARGET = 1.5
WORLD, TOKENIZER, TOWERS, CURATED = (ROOT / "outputs" / p for p in ("world", "tokenizer", "towers", "curated"))
REPORT = ROOT / "outputs" / "reports" / "train_bench.json"


def fail(message: str) -> None:
    print(f"train_bench: {message}", file=sys.stderr)
    raise SystemExit(2)


def check_inputs() -> None:
    """The DVC stages' outputs this benchmark reads; a clear message when one is missing."""
    needed = {
        WORLD: "the synthetic world (dvc stage `world`)",
        TOKENIZER: "the LLM tokenizer (dvc stage `tokenizer`)",
        TOWERS / "config.json": "the tiny SigLIP towers (dvc stage `towers`)",
        TOWERS / "preprocessor_config.json": "the towers' frame preprocessor (dvc stage `towers`)",
        ROOT / "configs/data/tiny_align.yaml": "the alignment mixture",
        ROOT / "configs/data/tiny_cond_pretrain.yaml": "the conditional pre-training mixture",
        ROOT / "configs/data/tiny_sft.yaml": "the instruction-tuning mixture",
    }
    missing = [f"{p.relative_to(ROOT)} ({what})" for p, what in needed.items() if not p.exists()]
    if not sorted(CURATED.glob("cond_pretrain-*.jsonl")):
        missing.append("outputs/curated/cond_pretrain-*.jsonl (the curated shards, dvc stage `curate`)")
    if missing:
        fail("missing inputs; run `make run` first (or wait for a rebuild in progress to finish):\n  "
             + "\n  ".join(missing))


def check_media(stage: str) -> None:
    """Fail before any timing when a stage's mixture points at no existing media (stale shards)."""
    cfg = Params.load(PARAMS_FILE).train(PROFILE, stage)
    samples = load_mixture(cfg.data, seed=cfg.seed)
    media = [s.get("video") or s.get("image") for s in samples]
    present = sum(isinstance(m, str) and Path(m).exists() for m in media)
    if present == 0:
        example = f" (e.g. {Path(media[0]).resolve()})" if media and isinstance(media[0], str) else ""
        fail(f"{stage}: none of the {len(media)} samples of {Path(cfg.data).relative_to(ROOT)} has an existing "
             f"media file{example}; its data looks stale or still being rebuilt - rerun `make run`")


# -- timing instrumentation -----------------------------------------------------------------------
class Clock:
    """Per-micro-batch seconds for each part; the wrappers and hooks add to `current`."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.current = dict.fromkeys((*PARTS, "cache_put"), 0.0)

    def add(self, part: str, seconds: float) -> None:
        self.current[part] += seconds

    def timed(self, part: str, fn):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(part, time.perf_counter() - t0)
        return wrapper

    def hook(self, part: str, module: torch.nn.Module) -> list:
        starts: list[float] = []  # a stack, should a module ever be re-entered

        def pre(_module, _args):
            starts.append(time.perf_counter())

        def post(_module, _args, _output):
            self.add(part, time.perf_counter() - starts.pop())

        return [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]


def instrument(model, clock: Clock) -> None:
    """Instance-level wrappers (encode_frames, encode_guides) and hooks (projector, decoder, LM head)."""
    model.encode_frames = clock.timed("vision", model.encode_frames)
    model.encode_guides = clock.timed("text", model.encode_guides)
    clock.hook("compressor", model.projector)
    clock.hook("llm", model.language_model.model)  # decoder layers; the training loss calls them and the
    clock.hook("llm", model.language_model.lm_head)  # LM head (supervised rows only) directly


# -- one stage ------------------------------------------------------------------------------------
class StageBench:
    def __init__(self, stage: str, micro_batch: int | None, decoder: str, workdir: Path):
        self.stage = stage
        spec = STAGES[stage]
        overrides = {"micro_batch": micro_batch} if micro_batch else None
        params = Params.load(PARAMS_FILE)
        self.cfg = cfg = params.train(PROFILE, stage, overrides)
        profile = params.profile(PROFILE)
        profile = dataclasses.replace(profile, vision=dataclasses.replace(profile.vision, path=str(TOWERS)),
                                      text=dataclasses.replace(profile.text, path=str(TOWERS)))
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        self.model = model = build_model(profile)
        model.set_guidance(spec.guided)
        if cfg.gradient_checkpointing:
            model.language_model.gradient_checkpointing_enable()
            if not spec.trains_llm:
                model.language_model.enable_input_require_grads()
        groups = configure_trainable(model, spec, cfg)
        self.trainable = [p for g in groups for _, p in g.params]
        self.optimizer = build_optimizer(groups, cfg.weight_decay)
        model.config.max_length = cfg.max_length
        model.train()

        self.tokenizer = load_tokenizer(TOKENIZER)
        if len(self.tokenizer) > model.config.llm_config.vocab_size:
            fail(f"{TOKENIZER} has {len(self.tokenizer)} tokens, more than the LLM's vocab_size")
        self.guide_tokenizer = load_tokenizer(TOWERS) if spec.guided else None
        self.preprocessor = FramePreprocessor.from_pretrained(TOWERS)
        self.samples = load_mixture(cfg.data, seed=cfg.seed)
        if not self.samples:
            fail(f"{cfg.data}: the mixture selects no samples")
        self.settings = SampleSettings(num_frames=cfg.num_frames, guided=spec.guided,
                                       guide_max_length=profile.guide_max_length, decoder=decoder, stage=stage)
        self.rejects = RejectLog(workdir / f"{stage}-rejects.jsonl")
        self.policy = FramePolicy.from_preprocessor(self.preprocessor, cfg.num_frames, decoder)
        self.accum = max(1, cfg.global_batch // cfg.micro_batch)  # a world of one
        self.clock = Clock()
        instrument(model, self.clock)

    def indices(self, steps: int) -> list[list[int]]:
        """The trainer's epoch-0 order (world of one), cut into `steps` micro-batches; wraps if short."""
        order = epoch_indices(len(self.samples), 0, self.cfg.seed, 0, 1)
        need = steps * self.cfg.micro_batch
        order = (order * (need // len(order) + 1))[:need]
        batches = [order[i:i + self.cfg.micro_batch] for i in range(0, need, self.cfg.micro_batch)]
        media = [self.samples[i].get("video") or self.samples[i].get("image") for i in order]
        present = sum(isinstance(m, str) and Path(m).exists() for m in media)
        if present == 0:
            fail(f"{self.stage}: none of the {len(media)} selected samples' media exist (e.g. {media[0]}); "
                 f"the data of {self.cfg.data} looks stale - rebuild it (make run)")
        if present < len(media):
            print(f"  note: {len(media) - present} of {len(media)} selected samples have no media file; "
                  "they are rejected as in training", flush=True)
        return batches

    def dataset(self, cache: FeatureCache | None) -> ConversationDataset:
        """A dataset as the trainer builds one for a stage: it tokenises each sample on first use only."""
        return ConversationDataset(self.samples, self.tokenizer, self.preprocessor, self.settings, self.rejects,
                                   self.guide_tokenizer, cache)

    def run_pass(self, batches: list[list[int]], dataset: ConversationDataset) -> dict:
        """One timed pass (an epoch) over the micro-batches; returns samples/s and per-micro-batch part times."""
        model, clock, cache = self.model, self.clock, dataset.feature_cache
        pad_id = self.tokenizer.pad_token_id
        rows, samples, losses = [], 0, []
        self.optimizer.zero_grad(set_to_none=True)
        began = time.perf_counter()
        for b, ids in enumerate(batches):
            clock.reset()
            t0 = time.perf_counter()
            batch = collate([dataset[i] for i in ids], pad_id)
            t1 = time.perf_counter()
            if batch is None:  # every sample rejected: a zero step, as the trainer does
                loss = sum((p * 0).sum() for p in self.trainable)
            else:
                if cache is not None:
                    batch["visual_items"] = cache.complete(model, batch["visual_items"])
                loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                             labels=batch["labels"], visual_items=batch["visual_items"]).loss
                samples += len(batch["ids"])
            t2 = time.perf_counter()
            (loss / self.accum).backward()
            if (b + 1) % self.accum == 0 or b + 1 == len(batches):
                torch.nn.utils.clip_grad_norm_(self.trainable, self.cfg.grad_clip)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            t3 = time.perf_counter()
            losses.append(float(loss.detach()))
            row = dict(clock.current)
            row["data"] = t1 - t0
            row["backward"] = t3 - t2
            row["other"] = (t2 - t1) - sum(row[p] for p in ("vision", "text", "compressor", "llm"))
            row["total"] = t3 - t0
            rows.append(row)
        elapsed = time.perf_counter() - began
        return {"samples": samples, "seconds": elapsed, "samples_per_s": samples / elapsed, "rows": rows,
                "mean_loss": float(np.mean(losses)) if losses else None,
                "cache": cache.stats() if cache is not None else None}


def median_ms(rows: list[dict], part: str) -> float:
    return 1000.0 * statistics.median(r[part] for r in rows)


def bench_stage(stage: str, args, decoder: str, workdir: Path) -> dict:
    t_build = time.perf_counter()
    sb = StageBench(stage, args.micro_batch, decoder, workdir)
    batches = sb.indices(args.steps)
    print(f"[{stage}] model + data built in {time.perf_counter() - t_build:.1f}s: {len(sb.samples)} samples, "
          f"micro-batch {sb.cfg.micro_batch}, {args.steps} micro-batches/pass, {sb.cfg.num_frames} frames, "
          f"optimizer step every {sb.accum}", flush=True)
    # Not timed: the no-cache arm's first epoch, which tokenises its samples (and warms the allocator and
    # first-call paths), so that its timed passes are later epochs, as the warm arm's are.
    uncached = sb.dataset(None)
    sb.run_pass(batches, uncached)
    passes: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    for r in range(args.repeats):
        cache_dir = Path(tempfile.mkdtemp(prefix=f"{stage}-cache{r}-", dir=workdir))
        cache = FeatureCache.for_model(cache_dir, sb.model, sb.policy, STAGES[stage].guided)
        cache.put = sb.clock.timed("cache_put", cache.put)  # inside the forward: counted under "other" too
        cached = sb.dataset(cache)  # fresh each repeat: cold is its first epoch, warm its second
        order = [("no cache", uncached), ("cache (cold)", cached), ("cache (warm)", cached)]
        if r % 2:  # alternate: the cache arms first on odd repeats (cold must precede warm)
            order = order[1:] + order[:1]
        for arm, dataset in order:
            result = sb.run_pass(batches, dataset)
            c = dataset.feature_cache
            passes[arm].append(result)
            extra = ""
            if c is not None:
                st = result["cache"]
                extra = f"  (cache hits {st['hits']}, misses {st['misses']}, {st['entries']} entries"
                if c.guide_directory is not None:
                    extra += f"; guides: hits {st['guide_hits']}, misses {st['guide_misses']}"
                extra += ")"
                c.hits = c.misses = c.guide_hits = c.guide_misses = 0
            print(f"[{stage}] repeat {r + 1}/{args.repeats} {arm:<13} {result['samples_per_s']:7.1f} samples/s "
                  f"({result['samples']} samples in {result['seconds']:.2f}s){extra}", flush=True)
    out = {"micro_batch": sb.cfg.micro_batch, "num_frames": sb.cfg.num_frames, "accum": sb.accum,
           "num_samples": len(sb.samples), "micro_batches": args.steps,
           "rejected": len(sb.rejects.read()), "arms": {}}
    for arm, results in passes.items():
        rows = [row for res in results for row in res["rows"]]
        out["arms"][arm] = {
            "samples_per_s": statistics.median(res["samples_per_s"] for res in results),
            "samples_per_s_repeats": [res["samples_per_s"] for res in results],
            "samples_per_pass": [res["samples"] for res in results],
            "ms_per_micro_batch": {p: median_ms(rows, p) for p in (*PARTS, "cache_put", "total")},
            "mean_loss": [res["mean_loss"] for res in results],
            "cache": results[-1]["cache"],
        }
    arms = out["arms"]
    base = arms["no cache"]["samples_per_s"]
    out["ratio_warm_vs_no_cache"] = arms["cache (warm)"]["samples_per_s"] / base
    out["ratio_cold_vs_no_cache"] = arms["cache (cold)"]["samples_per_s"] / base
    # per-repeat ratios: each repeat's arms ran back to back, so these show the spread
    out["ratio_warm_vs_no_cache_repeats"] = [w["samples_per_s"] / n["samples_per_s"] for w, n in
                                             zip(passes["cache (warm)"], passes["no cache"])]
    out["meets_target"] = out["ratio_warm_vs_no_cache"] >= TARGET
    del sb
    return out


def print_table(results: dict) -> None:
    head = f"{'stage':<14} {'arm':<13} {'samples/s':>9}" + "".join(f" {p:>{max(len(p), 6)}}" for p in PARTS)
    print()
    print(head + "   (median ms/micro-batch)")
    for stage, res in results.items():
        for arm, a in res["arms"].items():
            ms = a["ms_per_micro_batch"]
            print(f"{stage:<14} {arm:<13} {a['samples_per_s']:9.1f}"
                  + "".join(f" {ms[p]:>{max(len(p), 6)}.1f}" for p in PARTS))
        spread = ", ".join(f"{x:.2f}" for x in res["ratio_warm_vs_no_cache_repeats"])
        print(f"{stage:<14} ratio warm/no-cache: {res['ratio_warm_vs_no_cache']:.2f}x "
              f"(repeats {spread}; cold/no-cache {res['ratio_cold_vs_no_cache']:.2f}x) "
              f"target >= {TARGET}x: {'met' if res['meets_target'] else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="micro-batches per timed pass (default 30)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of every arm (default 3)")
    parser.add_argument("--micro-batch", type=int, default=None,
                        help="samples per micro-batch (default: the stage's train.micro_batch)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1, as one torchrun rank of several)")
    parser.add_argument("--stages", default=",".join(BENCH_STAGES),
                        help=f"comma-separated subset of {','.join(BENCH_STAGES)} (default: all)")
    args = parser.parse_args()
    if min(args.steps, args.repeats, args.threads) < 1 or (args.micro_batch is not None and args.micro_batch < 1):
        parser.error("--steps, --repeats, --threads and --micro-batch must be >= 1")
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in BENCH_STAGES]
    if unknown or not stages:
        parser.error(f"--stages: choose from {', '.join(BENCH_STAGES)}")
    check_inputs()
    for stage in stages:
        check_media(stage)
    torch.set_num_threads(args.threads)
    kept = keep_freed_memory()  # as `python -m hicom` sets it for every stage it runs
    transformers.logging.set_verbosity_error()  # the towers' load reports are noise here
    transformers.logging.disable_progress_bar()
    decoder = Params.load(PARAMS_FILE).data.decoder
    began = time.perf_counter()
    print(f"train_bench: profile {PROFILE}, stages {', '.join(stages)}, {args.steps} micro-batches x "
          f"{args.repeats} repeats per arm, decoder {decoder}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, freed memory kept for reuse: {kept}", flush=True)
    results = {}
    with tempfile.TemporaryDirectory(prefix="train_bench_") as tmp:
        for stage in stages:
            results[stage] = bench_stage(stage, args, decoder, Path(tmp))
    print_table(results)
    report = {"profile": PROFILE, "micro_batch_override": args.micro_batch, "steps": args.steps, "repeats": args.repeats, "decoder": decoder,
              "target_ratio": TARGET, "torch": torch.__version__, "threads": torch.get_num_threads(),
              "freed_memory_kept": kept,
              "python": platform.python_version(), "wall_s": time.perf_counter() - began, "stages": results}
    atomic_write_bytes(REPORT, (json.dumps(report, indent=2) + "\n").encode())
    print(f"\ntrain_bench: wrote {REPORT.relative_to(ROOT)} ({report['wall_s']:.0f}s)")
    record("train_bench", [Goal(f"{stage}: training throughput, warm feature cache / no cache", res["ratio_warm_vs_no_cache"],
                                ">=", TARGET, "x", f"{args.steps} micro-batches x {args.repeats} repeats")
                           for stage, res in results.items()])


if __name__ == "__main__":
    main()
