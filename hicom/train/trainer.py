"""One training stage on DeepSpeed: `python -m hicom train --stage align|cond_pretrain|sft`.

Run it under torchrun (gloo on the CPU, NCCL on GPUs); a plain `python -m hicom train` is a
world of one. Rerunning the same command after a crash resumes from the last complete
checkpoint; `--init-from` (the previous stage's compressor, and its LLM when it left one under llm/):
the compressor applies only to a fresh start, the LLM is what the model is built from either way.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import shutil
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from hicom.core.errors import ConfigError, DataError
from hicom.core.files import atomic_write_bytes, portable_path
from hicom.data.dataset import (
    ConversationDataset,
    RejectLog,
    SampleSettings,
    batch_to,
    collate,
)
from hicom.data.feature_cache import FeatureCache, FramePolicy
from hicom.data.mixture import load_mixture, samples_digest
from hicom.data.settings import ReadLimits
from hicom.data.tokenizer import load_tokenizer
from hicom.data.video import FramePreprocessor, decoder_info
from hicom.model.build import build_model
from hicom.model.checkpoint import load_compressor, save_compressor, save_model
from hicom.model.diagnostics import global_token_spread
from hicom.model.settings import ModelProfile
from hicom.train.checkpoints import (
    CHECKPOINTS,
    COMPLETE,
    FINAL_STATE,
    complete_checkpoints,
    load_rng,
    make_loads_safe,
    newest_verified,
    rng_file,
    save_rng,
    write_marker,
)
from hicom.train.config import STAGES, TrainConfig, trains_llm
from hicom.train.extensions import load_shm_comm_op
from hicom.train.optim import build_optimizer, configure_trainable

log = logging.getLogger("hicom.train")
ROOT = Path(__file__).resolve().parent.parent.parent


@dataclass
class StageRun:
    """Everything a stage needs beyond params.yaml: where things are."""

    stage: str
    profile: ModelProfile
    cfg: TrainConfig
    out_dir: Path
    tokenizer_dir: Path  # the LLM's tokenizer
    init_from: Path | None = None  # the previous stage's output: its compressor (and its LLM, when it has one)
    decoder: str = "decord"
    read_timeout_s: float = 60.0
    read_limits: ReadLimits = ReadLimits()  # params.yaml data.limits: bigger inputs are rejected, named
    feature_cache: Path | None = None  # frozen-tower outputs reused across epochs, turns and stages
    track: bool = True
    experiment: str = "hicom"
    parent_run_id: str | None = None
    extra_params: dict = field(default_factory=dict)


# -- distributed --------------------------------------------------------------------------------
def init_distributed() -> tuple[int, int]:
    import deepspeed

    if "RANK" not in os.environ:  # a plain `python -m hicom train`: a world of one
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if not torch.distributed.is_initialized():
        load_shm_comm_op()  # before DeepSpeed loads it: a lock file a killed load left would hang it
        deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def deepspeed_config(cfg: TrainConfig, world: int) -> dict:
    """infra/deepspeed/zero{N}.json with its "auto" values filled from the stage config."""
    template = ROOT / "infra" / "deepspeed" / f"zero{cfg.zero_stage}.json"
    if not template.is_file():
        raise ConfigError(f"train.zero_stage={cfg.zero_stage}: no DeepSpeed template at {template}")
    ds = json.loads(template.read_text())
    per_step = cfg.micro_batch * world
    if cfg.global_batch % per_step:
        raise ConfigError(f"train.global_batch={cfg.global_batch} is not a multiple of micro_batch "
                          f"({cfg.micro_batch}) x processes ({world})")
    bf16 = cfg.bf16 if cfg.bf16 != "auto" else (torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    ds.update(train_batch_size=cfg.global_batch, train_micro_batch_size_per_gpu=cfg.micro_batch,
              gradient_accumulation_steps=cfg.global_batch // per_step, gradient_clipping=cfg.grad_clip)
    ds["bf16"] = {"enabled": bool(bf16)}
    return ds


# -- checkpoints --------------------------------------------------------------------------------
def prune_checkpoints(ckpt_dir: Path, keep: int) -> None:
    """save_total_limit: the oldest complete checkpoints beyond `keep` go (incomplete ones stay)."""
    for path in complete_checkpoints(ckpt_dir)[:-keep]:
        shutil.rmtree(path)


# -- the stage ----------------------------------------------------------------------------------
def _gathered(engine, params):
    """Full parameters on every rank (a no-op unless ZeRO-3 partitions them)."""
    import contextlib

    import deepspeed

    if engine.zero_optimization_stage() == 3:
        return deepspeed.zero.GatheredParameters(list(params), modifier_rank=None)
    return contextlib.nullcontext()


def epoch_indices(n: int, epoch: int, seed: int, rank: int, world: int) -> list[int]:
    """This rank's sample order for an epoch: the same permutation on every rank, then strided."""
    sampler = torch.utils.data.DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    return list(sampler)


LLM_DIR = "llm"  # a stage's LLM, when it trained one (or was handed one) and writes no whole model


def stage_profile(profile: ModelProfile, init_from: Path | None) -> ModelProfile:
    """The profile with the LLM that the previous stage trained (init_from/llm) in place of the base LLM, when that
    stage left one; otherwise the profile as it is."""
    if init_from is not None and (Path(init_from) / LLM_DIR).is_dir():
        return dataclasses.replace(profile, llm=dataclasses.replace(profile.llm, path=str(Path(init_from) / LLM_DIR)))
    return profile


def train_stage(run: StageRun) -> dict:
    import deepspeed
    from transformers import get_cosine_schedule_with_warmup

    from hicom.tracking import Tracker

    rank, world = init_distributed()
    stage, cfg, out = STAGES[run.stage], run.cfg, run.out_dir
    state_file = out / FINAL_STATE
    ckpt_dir = out / CHECKPOINTS
    if state_file.is_file():
        state = json.loads(state_file.read_text())
        if rank == 0:
            print(f"train[{run.stage}]: already complete in {out} (step {state['global_step']}); nothing to do")
            _drop_checkpoints(ckpt_dir, cfg)  # a crash between the final state and their removal left them
        return state
    resume_from = newest_verified(ckpt_dir)  # why newer ones were skipped is logged; none is deleted

    torch.manual_seed(cfg.seed)  # the same initial weights on every rank and every run
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    profile = stage_profile(run.profile, run.init_from)
    if rank == 0 and profile is not run.profile:
        print(f"train[{run.stage}]: the LLM is the one {run.init_from} trained ({profile.llm.path})")
    model = build_model(profile)
    model.set_guidance(stage.guided)
    if cfg.gradient_checkpointing:
        model.language_model.gradient_checkpointing_enable()
        if not trains_llm(stage, cfg):  # frozen LLM: inputs need grad so the compressor still receives it
            model.language_model.enable_input_require_grads()
    if run.init_from is not None and resume_from is None:
        load_compressor(model.projector, Path(run.init_from) / "compressor")
    groups = configure_trainable(model, stage, cfg)

    tokenizer = load_tokenizer(run.tokenizer_dir)
    vocab = model.config.llm_config.vocab_size
    if len(tokenizer) > vocab:
        raise ConfigError(f"tokenizer {run.tokenizer_dir} has {len(tokenizer)} tokens, more than the LLM's "
                          f"vocab_size={vocab}")
    guide_tokenizer = load_tokenizer(run.profile.text.path) if stage.guided else None
    preprocessor = FramePreprocessor.from_pretrained(run.profile.vision.path) if run.profile.vision.path \
        else FramePreprocessor(model.config.vision_config.image_size)
    samples = load_mixture(cfg.data, seed=cfg.seed)
    if not samples:
        raise ConfigError(f"{cfg.data}: the mixture selects no samples")
    rejects = RejectLog(out / "rejects.jsonl")
    settings = SampleSettings(num_frames=cfg.num_frames, guided=stage.guided,
                              guide_max_length=run.profile.guide_max_length, decoder=run.decoder, stage=run.stage,
                              read_timeout_s=run.read_timeout_s, limits=run.read_limits, max_length=cfg.max_length,
                              video_tokens=model.num_visual_tokens(cfg.num_frames, "video"),
                              image_tokens=model.num_visual_tokens(1, "image"))
    cache = None
    if run.feature_cache is not None:
        policy = FramePolicy.from_preprocessor(preprocessor, cfg.num_frames, run.decoder)
        cache = FeatureCache.for_model(run.feature_cache, model, policy, stage.guided)
    dataset = ConversationDataset(samples, tokenizer, preprocessor, settings, rejects, guide_tokenizer, cache)
    model.config.max_length = cfg.max_length
    standardizer = _fit_standardizer(model, dataset, tokenizer.pad_token_id)

    ds_config = deepspeed_config(cfg, world)
    accum = ds_config["gradient_accumulation_steps"]
    micro_per_epoch = math.ceil(len(samples) / world / cfg.micro_batch)
    steps_per_epoch = max(1, micro_per_epoch // accum)
    total_steps = min(cfg.max_steps or 10 ** 12, steps_per_epoch * cfg.epochs)
    optimizer = build_optimizer(groups, cfg.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, math.ceil(cfg.warmup_ratio * total_steps), total_steps)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                           config=ds_config)
    make_loads_safe(engine)

    global_step, epoch, micro_done = 0, 0, 0
    history: list[dict] = []
    run_id = None
    if resume_from is not None:
        _, client = engine.load_checkpoint(str(ckpt_dir), tag=resume_from.name)
        global_step, epoch, micro_done = client["global_step"], client["epoch"], client["micro_done"]
        history, run_id = client["history"], client.get("run_id")
        load_rng(rng_file(resume_from, rank))
        if rank == 0:
            print(f"train[{run.stage}]: resuming from {resume_from} (step {global_step})")
    out.mkdir(parents=True, exist_ok=True)

    tracker = Tracker(enabled=run.track, experiment=run.experiment, run_name=run.stage, rank=rank,
                      parent_run_id=None if run_id else run.parent_run_id, resume_run_id=run_id, queue_metrics=True,
                      tags={"stage": run.stage, "profile": run.profile.name, "paper_stage": stage.paper_name})
    with tracker:
        if resume_from is None:
            tracker.log_params({"stage": run.stage, "profile": run.profile.name, "train": asdict(cfg),
                                "model": {"compressor": run.profile.compressor.to_dict(),
                                          "preset": run.profile.preset},
                                "world_size": world, "deepspeed": ds_config, **decoder_info(run.decoder),
                                **({"standardizer": standardizer} if standardizer else {}), **run.extra_params})
            tracker.log_input(name=Path(cfg.data).stem, digest=samples_digest(samples)[:32],
                              source=str(cfg.data), context="train", num_rows=len(samples))
        history = _loop(engine, dataset, run, rank, world, accum, total_steps, tracker, ckpt_dir, tokenizer,
                        global_step, epoch, micro_done, history)
        result = _finish(engine, model, run, rank, history, tokenizer, guide_tokenizer, tracker, samples, dataset)
    return result


# Logged and printed, not kept in the history: the stage's outputs (trainer_state.json) stay the same bytes when a
# rerun trains the same weights.
TIMINGS = ("tokens_per_s", "samples_per_s", "data_s")


def _loop(engine, dataset, run: StageRun, rank, world, accum, total_steps, tracker, ckpt_dir, tokenizer,
          global_step, epoch, micro_done, history):
    cfg = run.cfg
    pad_id = tokenizer.pad_token_id
    window = {"loss": 0.0, "tokens": 0, "samples": 0, "micro": 0, "data_s": 0.0, "start": time.perf_counter()}
    while global_step < total_steps and epoch < cfg.epochs:
        order = epoch_indices(len(dataset), epoch, cfg.seed, rank, world)
        batches = [order[i:i + cfg.micro_batch] for i in range(0, len(order), cfg.micro_batch)]
        usable = len(batches) - len(batches) % accum  # whole optimizer steps only
        for b in range(micro_done, usable):
            t0 = time.perf_counter()
            batch = collate([dataset[i] for i in batches[b]], pad_id)
            if batch is not None:
                batch = batch_to(batch, engine.device)
            window["data_s"] += time.perf_counter() - t0
            if batch is None:  # every sample of this micro-batch was rejected: a zero step keeps ranks in step
                loss = sum((p * 0).sum() for p in engine.module.parameters() if p.requires_grad)
            else:
                batch["visual_items"] = _completed(engine.module, dataset, batch["visual_items"])
                out = engine(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                             labels=batch["labels"], visual_items=batch["visual_items"])
                loss = out.loss
                window["tokens"] += int(batch["attention_mask"].sum())
                window["samples"] += len(batch["ids"])
            engine.backward(loss)
            engine.step()
            window["loss"] += float(loss.detach())
            window["micro"] += 1
            if (b + 1) % accum:
                continue
            global_step += 1
            stats = torch.tensor([window["loss"] / window["micro"], window["tokens"], window["samples"]])
            torch.distributed.all_reduce(stats)
            elapsed = time.perf_counter() - window["start"]
            metrics = {"loss": stats[0].item() / world, "tokens_per_s": stats[1].item() / elapsed,
                       "samples_per_s": stats[2].item() / elapsed, "data_s": window["data_s"],
                       "epoch": epoch + (b + 1) / max(usable, 1)}
            grad_norm = engine.get_global_grad_norm()
            if grad_norm is not None:
                metrics["grad_norm"] = float(grad_norm)
            for group in engine.optimizer.param_groups:
                metrics[f"lr_{group.get('name', 'group')}"] = group["lr"]
            metrics["samples"] = stats[2].item()
            history.append({"step": global_step, **{k: v for k, v in metrics.items() if k not in TIMINGS}})
            if global_step % cfg.log_steps == 0:
                tracker.log_metrics(metrics, step=global_step)
                if rank == 0:
                    print(f"train[{run.stage}] step {global_step}/{total_steps} loss {metrics['loss']:.4f} "
                          f"{metrics['samples_per_s']:.1f} samples/s", flush=True)
            window = {"loss": 0.0, "tokens": 0, "samples": 0, "micro": 0, "data_s": 0.0,
                      "start": time.perf_counter()}
            # The last step's checkpoint would be deleted as soon as _finish has written the final state (at
            # paper scale the optimizer states of a 7B model), so it is saved only where train.keep_checkpoints
            # keeps it; a crash before the final state resumes from the last periodic one.
            last = global_step == total_steps
            if (last and cfg.keep_checkpoints) or (not last and global_step % cfg.save_steps == 0):
                _save_checkpoint(engine, ckpt_dir, rank, global_step, epoch, b + 1, history, tracker.run_id, cfg)
            if global_step >= total_steps:
                return history
        epoch += 1
        micro_done = 0
    return history


def _save_checkpoint(engine, ckpt_dir: Path, rank, global_step, epoch, micro_done, history, run_id, cfg):
    tag = f"step-{global_step:07d}"
    client = {"global_step": global_step, "epoch": epoch, "micro_done": micro_done, "history": history,
              "run_id": run_id}
    if rank == 0:  # a step saved again (after resuming from an older one): its old marker no longer holds
        (ckpt_dir / tag / COMPLETE).unlink(missing_ok=True)
    torch.distributed.barrier()
    engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state=client)
    save_rng(rng_file(ckpt_dir / tag, rank))
    torch.distributed.barrier()
    if rank == 0:  # written last, listing every file's hash: a checkpoint that does not match it is never loaded
        write_marker(ckpt_dir / tag, global_step)
        prune_checkpoints(ckpt_dir, cfg.save_total_limit)
    torch.distributed.barrier()


def _drop_checkpoints(ckpt_dir: Path, cfg: TrainConfig) -> None:
    """A completed stage's checkpoints go unless train.keep_checkpoints keeps them (see TrainConfig)."""
    if not cfg.keep_checkpoints and ckpt_dir.is_dir():
        shutil.rmtree(ckpt_dir)


def _completed(model, dataset, items):
    """The items with the towers' outputs the feature cache missed computed (and stored); as they are without one."""
    return dataset.feature_cache.complete(model, items) if dataset.feature_cache is not None else items


STANDARDIZER_ITEMS = 64  # visual items the compressor's feature standardisation is fitted on


def _fit_standardizer(model, dataset, pad_id: int) -> dict | None:
    """Fit the compressor's feature standardisation (compressor.standardize) on the first visual items of the
    stage's data, once: a compressor that comes fitted (init_from, or a checkpoint resumed later) keeps its
    statistics. Every rank reads the same items, so every rank fits the same numbers."""
    standardizer = getattr(model.projector, "standardizer", None)
    if standardizer is None or standardizer.fitted:
        return None
    picked = []
    for i in range(len(dataset)):
        if len(picked) == STANDARDIZER_ITEMS:
            break
        if dataset.samples[i].get("video") or dataset.samples[i].get("image"):
            item = dataset[i]
            if item is not None:
                picked.append(item)
    batch = collate(picked, pad_id)
    if batch is None:
        raise DataError("compressor.standardize: the stage's data has no readable image or video to fit the "
                        "feature standardisation on")
    with torch.no_grad():
        features = [f for f, _ in model.tower_outputs(_completed(model, dataset, batch["visual_items"]))]
    return standardizer.fit(features)


SPREAD_SAMPLES = 16  # video samples the global-token spread is measured on at the end of a stage


def _global_spread(model, dataset, pad_id: int) -> dict[str, float] | None:
    """The global level's token spread (hicom.model.diagnostics) on the first video samples of the stage's data."""
    picked = []
    for i in range(len(dataset)):
        if len(picked) == SPREAD_SAMPLES:
            break
        if "video" in dataset.samples[i]:
            picked.append(dataset[i])
    batch = collate(picked, pad_id)
    if batch is None:
        return None
    batch = batch_to(batch, next(model.parameters()).device)
    items = _completed(model, dataset, batch["visual_items"])
    was_training = model.training
    model.eval()
    try:
        return global_token_spread(model, items)
    finally:
        model.train(was_training)


def _finish(engine, model, run: StageRun, rank, history, tokenizer, guide_tokenizer, tracker, samples,
            dataset) -> dict:
    out = run.out_dir
    with _gathered(engine, model.projector.parameters()):
        if rank == 0:
            save_compressor(model.projector, out / "compressor", extra={"stage": run.stage})
    if STAGES[run.stage].trains_llm:
        with _gathered(engine, model.parameters()):
            if rank == 0:
                save_model(model, out / "model", tokenizer=tokenizer)
    elif trains_llm(STAGES[run.stage], run.cfg) or stage_profile(run.profile, run.init_from) is not run.profile:
        # the next stage starts from this LLM (stage_profile), whether trained here or handed on frozen
        with _gathered(engine, model.language_model.parameters()):
            if rank == 0:
                save_model(model.language_model, out / LLM_DIR, tokenizer=tokenizer)
    torch.distributed.barrier()
    if history and sum(h["samples"] for h in history) == 0:
        raise DataError(f"train[{run.stage}]: every sample was rejected; see {out / 'rejects.jsonl'}")
    final = history[-1] if history else {}
    result = {"stage": run.stage, "global_step": final.get("step", 0), "final_loss": final.get("loss"),
              "first_loss": history[0]["loss"] if history else None, "samples": len(samples),
              "rejected": len(RejectLog(out / "rejects.jsonl").read()), "history": history}
    with _gathered(engine, model.parameters()):  # every rank measures (ZeRO-3 gathers collectively); rank 0 logs
        spread = _global_spread(engine.module, dataset, tokenizer.pad_token_id)
    if spread:
        result.update(spread)
    if rank == 0:
        if spread:
            tracker.log_metrics(spread, step=result["global_step"])
        atomic_write_bytes(out / "config.json", json.dumps(
            {"stage": run.stage, "profile": run.profile.name,
             "train": {**asdict(run.cfg), "data": portable_path(run.cfg.data)},
             "compressor": run.profile.compressor.to_dict(),
             "init_from": portable_path(run.init_from) if run.init_from else ""},
            indent=2, default=str).encode())
        metrics = {k: v for k, v in result.items() if k != "history"}
        atomic_write_bytes(out / "metrics.json", json.dumps(metrics, indent=2).encode())
        tracker.log_artifact(out / "config.json")
        tracker.log_artifact(out / "metrics.json")
        tracker.log_artifact(out / "compressor", artifact_path="compressor")
        atomic_write_bytes(out / FINAL_STATE, json.dumps(result, indent=2).encode())
        _drop_checkpoints(out / CHECKPOINTS, run.cfg)  # after the final state: a crash before it still resumes
        print(f"train[{run.stage}]: done, {result['global_step']} steps, loss {result['first_loss']:.4f} -> "
              f"{result['final_loss']:.4f}; outputs in {out}")
    torch.distributed.barrier()
    return result
