"""`python -m hicom COMMAND`: one entry per stage. Only commands that work are listed."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hicom.config import PARAMS_FILE, load_profile
from hicom.core.errors import ConfigError
from hicom.core.files import read_json_object


def cmd_report(args) -> int:
    from hicom.report import build_report, format_report

    text = format_report(build_report(load_profile(args.profile, args.params)))
    if args.out:
        from hicom.core.files import atomic_write_bytes

        atomic_write_bytes(Path(args.out), (text + "\n").encode())
    else:
        print(text)
    return 0


def cmd_smoke(args) -> int:
    from hicom.smoke import run_smoke

    profile = load_profile(args.profile, args.params)
    r = run_smoke(profile, steps=args.steps)
    print(f"smoke: profile {profile.name!r}: {r['frames']}-frame clip -> {r['visual_tokens']} visual tokens; "
          f"{r['trainable_params']:,} trainable (compressor) / {r['frozen_params']:,} frozen parameters")
    print(f"smoke: loss {r['loss_first']:.4f} -> {r['loss_last']:.4f} after {args.steps} compressor-only steps "
          f"({r['seconds']:.1f}s); gradients reached every compressor parameter: {r['compressor_grads']}")
    if not r["compressor_grads"] or not r["loss_last"] < r["loss_first"]:
        print("smoke: FAILED (no gradient to the compressor, or the loss did not go down)", file=sys.stderr)
        return 1
    return 0


def _section(args, name: str) -> dict:
    from hicom.config import load_params

    return load_params(args.params).get(name) or {}


def cmd_synth(args) -> int:
    from hicom.data.synthetic import WorldConfig, generate_world

    cfg = WorldConfig.from_dict((_section(args, "data").get("synthetic") or {}), "data.synthetic")
    manifest = generate_world(cfg, args.out)
    print(f"synth: {manifest['num_videos']} clips in {args.out}; samples per file: {manifest['counts']}")
    return 0


def world_texts(world: Path):
    """Every caption, question and answer of a synthetic world, for tokenizer training."""
    import json

    from hicom.data.mixture import read_annotations

    for path in sorted(world.glob("*.jsonl")):
        if path.name == "scenes.jsonl":
            continue
        if path.name == "mcq_test.jsonl":
            for line in path.read_text().splitlines():
                row = json.loads(line)
                yield row["question"]
                yield from row["options"]
            continue
        for sample in read_annotations(path):
            for turn in sample["conversations"]:
                yield turn["value"].replace("<video>", "").replace("<image>", "")


def cmd_tokenizer(args) -> int:
    from hicom.data.tokenizer import train_tokenizer

    vocab = int((_section(args, "data").get("tokenizer") or {}).get("vocab_size", 1024))
    tok = train_tokenizer(world_texts(Path(args.world)), vocab, args.out)
    print(f"tokenizer: byte-level BPE with {len(tok)} tokens trained on {args.world}, saved to {args.out}")
    return 0


def cmd_towers(args) -> int:
    from hicom.data.tokenizer import load_tokenizer
    from hicom.pretrain.towers import TowerTrainConfig, pretrain_towers

    profile = load_profile(args.profile, args.params)
    if profile.vision.path:
        raise ConfigError(f"profile {profile.name!r} loads SigLIP from {profile.vision.path}; "
                          "tower pre-training is for profiles built from configs (tiny)")
    cfg = TowerTrainConfig(**(_section(args, "towers")))
    result = pretrain_towers(profile, args.world, load_tokenizer(args.tokenizer), args.out, cfg)
    if result["retrieval_top1_after"] <= 2 * result["chance"]:
        print("towers: FAILED: retrieval is not clearly above chance", file=sys.stderr)
        return 1
    return 0


def cmd_llm(args) -> int:
    from hicom.data.tokenizer import load_tokenizer
    from hicom.pretrain.llm import LLMTrainConfig, pretrain_llm

    profile = load_profile(args.profile, args.params)
    if profile.llm.path:
        raise ConfigError(f"profile {profile.name!r} loads its LLM from {profile.llm.path}; "
                          "LLM pre-training is for profiles built from configs (tiny)")
    cfg = LLMTrainConfig(**(_section(args, "llm")))
    result = pretrain_llm(profile, Path(args.world), load_tokenizer(args.tokenizer), args.out, cfg)
    if not result["perplexity_after"] < result["perplexity_before"] / 2:
        print("llm: FAILED: held-out perplexity did not fall", file=sys.stderr)
        return 1
    return 0


def cmd_curate(args) -> int:

    from transformers import SiglipTextModel, SiglipVisionModel

    from hicom.curate import (
        CurateConfig,
        GroundTruthGenerator,
        OpenAIGenerator,
        run_curation,
    )
    from hicom.data.tokenizer import load_tokenizer
    from hicom.data.video import FramePreprocessor
    from hicom.model.build import quiet_transformers

    profile = load_profile(args.profile, args.params)
    cfg = CurateConfig.from_dict(_section(args, "curate"))
    towers = Path(args.towers or profile.vision.path or "")
    if not towers.is_dir():
        raise ConfigError(f"curate: SigLIP towers directory {str(towers)!r} not found (pass --towers DIR)")
    if args.world:
        from hicom.data.synthetic import read_world

        world = Path(args.world)
        scenes, test_ids = read_world(world)
        videos = [{"id": s.id, "video": str(world / "videos" / f"{s.id}.mp4")} for s in scenes if s.id not in test_ids]
        data_root = world
    else:
        from hicom.data.mixture import read_annotations

        pool = Path(args.pool)
        data_root = pool.parent
        videos = [{"id": str(s.get("id", i)), "video": str(data_root / s["video"])}
                  for i, s in enumerate(read_annotations(pool)) if "video" in s]
    if cfg.generator == "groundtruth":
        if not args.world:
            raise ConfigError("curate: the groundtruth generator needs --world (synthetic scenes)")
        generator = GroundTruthGenerator(Path(args.world) / "scenes.jsonl", cfg.pairs_per_video, cfg.seed)
    else:
        generator = OpenAIGenerator(cfg.openai, cfg.pairs_per_video, Path(args.out) / "cache", cfg.decoder)
    with quiet_transformers():
        vision = SiglipVisionModel.from_pretrained(towers).eval()
        text = SiglipTextModel.from_pretrained(towers).eval()
    manifest = run_curation(videos, cfg, args.out, vision, text, load_tokenizer(towers),
                            FramePreprocessor.from_pretrained(towers), generator, data_root,
                            text.config.max_position_embeddings)
    print(f"curate: {manifest['candidates']} candidates, {manifest['selected']} selected, {manifest['written']} "
          f"written ({manifest['pairs']} pairs), {manifest['rejects']} rejected; per category: "
          f"{manifest['per_category']}")
    return 0


def cmd_train(args) -> int:
    import dataclasses

    from hicom.train.config import load_train_config
    from hicom.train.trainer import StageRun, train_stage

    profile = load_profile(args.profile, args.params)
    if args.towers:
        profile = dataclasses.replace(profile, vision=dataclasses.replace(profile.vision, path=args.towers),
                                      text=dataclasses.replace(profile.text, path=args.towers))
    if args.llm:
        profile = dataclasses.replace(profile, llm=dataclasses.replace(profile.llm, path=args.llm))
    import yaml

    overrides = {}
    for item in args.set or []:
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    cfg = load_train_config(profile.name, args.stage, args.params, overrides)
    tokenizer = args.tokenizer or profile.llm.path
    if not tokenizer:
        raise ConfigError(f"profile {profile.name!r} builds its LLM from a config: pass --tokenizer DIR")
    decoder = (_section(args, "data").get("decoder")) or "decord"
    train_stage(StageRun(stage=args.stage, profile=profile, cfg=cfg, out_dir=Path(args.out),
                         tokenizer_dir=Path(tokenizer), init_from=Path(args.init_from) if args.init_from else None,
                         decoder=decoder, feature_cache=Path(args.feature_cache) if args.feature_cache else None,
                         track=not args.no_track, experiment=args.experiment,
                         parent_run_id=args.parent_run_id))
    return 0


def cmd_evaluate(args) -> int:
    from hicom.evaluate.mcq import EvalConfig
    from hicom.evaluate.stage import EvalRun, run_evaluation

    profile = load_profile(args.profile, args.params)
    optional = {name: Path(getattr(args, name)) if getattr(args, name) else None
                for name in ("videos", "subtitles", "towers")}
    results = run_evaluation(EvalRun(
        benchmark=args.benchmark, model_dir=Path(args.model), data=Path(args.data), out=Path(args.out),
        profile=profile, config=EvalConfig.from_dict(_section(args, "evaluate")),
        decoder=_section(args, "data").get("decoder") or "decord", frames=args.frames, guidance=args.guidance,
        protocol=args.protocol, track=not args.no_track, experiment=args.experiment,
        parent_run_id=args.parent_run_id, **optional))
    if results is None:  # a torchrun rank other than 0: rank 0 reports
        return 0

    def share(value) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    for name, r in results["variants"].items():
        valid, invalid = r["validity"]["valid"], r["validity"]["invalid"]
        extra = f"; mean over tasks {share(r['task_mean'])}" if "task_mean" in r else ""
        print(f"evaluate[{args.benchmark}/{name}]: accuracy {share(r['accuracy'])} on {r['total']} questions "
              f"(chance {share(r['chance'])}); unanswered {r['unanswered']}; unreadable videos' questions "
              f"{r['missing']}{extra}; valid/invalid instructions {share(valid['accuracy'])} ({valid['total']}) / "
              f"{share(invalid['accuracy'])} ({invalid['total']})")
    print(f"evaluate[{args.benchmark}]: predictions and results in {args.out}")
    return 0


def cmd_profile(args) -> int:
    import dataclasses
    import tempfile

    from hicom.data.tokenizer import load_tokenizer
    from hicom.data.video import FramePreprocessor
    from hicom.model import HIComForCausalLM, build_model
    from hicom.efficiency.accuracy import load_eval_results
    from hicom.efficiency.fields import MODELS
    from hicom.efficiency.inputs import (
        model_pair,
        random_prompt,
        render_clips,
        resolve_device,
        resolve_dtype,
        tokenised_prompt,
    )
    from hicom.efficiency.outputs import log_to_tracker, write_outputs
    from hicom.efficiency.run import measure_efficiency
    from hicom.efficiency.settings import EfficiencySettings
    from hicom.tracking import Tracker

    profile = load_profile(args.profile, args.params)
    overrides = {key: value for key, value in (("frames", args.frames), ("samples", args.samples),
                                               ("warmup", args.warmup), ("repeats", args.repeats)) if value is not None}
    settings = EfficiencySettings.from_dict({**_section(args, "efficiency"), **overrides})
    eval_entries = load_eval_results(args.eval_results or [])  # a wrong path fails before the measurements
    decoder = _section(args, "data").get("decoder") or "decord"
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    if args.threads is not None:
        import torch

        if args.threads < 1:
            raise ConfigError(f"profile: --threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    towers = Path(args.towers) if args.towers else None
    if args.model:
        hicom = HIComForCausalLM.from_pretrained(args.model)
        towers = towers or (Path(profile.text.path) if profile.text.path else None)
        guide_tokenizer = None
        if hicom.projector.uses_instruction:
            if towers is None or not towers.is_dir():
                raise ConfigError(f"profile: the model in {args.model} is guided by the instruction: pass --towers DIR "
                                  f"(the SigLIP directory with its tokenizer); got {towers}")
            guide_tokenizer = load_tokenizer(towers)
        prompt = tokenised_prompt(load_tokenizer(args.model), guide_tokenizer, hicom.config.guide_max_length)
        source = f"trained HICom from {args.model}; baseline: its towers and LLM with a LLaVA-OV projector"
    else:
        if towers:
            profile = dataclasses.replace(profile, vision=dataclasses.replace(profile.vision, path=str(towers)),
                                          text=dataclasses.replace(profile.text, path=str(towers)))
        hicom = build_model(profile)
        prompt = random_prompt(hicom.config, settings.prompt_tokens)
        source = (f"profile {profile.name!r} built from its config (random init"
                  f"{f', towers from {towers}' if towers else ''}); baseline: the same towers and LLM with a "
                  f"LLaVA-OV projector")
    preprocessor = FramePreprocessor.from_towers(towers, hicom.config.vision_config.image_size)
    models = model_pair(hicom, device, dtype)
    with tempfile.TemporaryDirectory(prefix="hicom_profile_clips_") as tmp:
        if args.videos:
            clips, clips_source = [Path(v) for v in args.videos], f"{len(args.videos)} given video file(s)"
        else:
            c = settings.clips
            clips = render_clips(c, Path(tmp))
            clips_source = (f"{c.count} synthetic clips ({c.num_frames} frames, {c.size}x{c.size}, {c.fps} fps, "
                            f"lossless mp4) rendered by hicom.data.synthetic")
        result = measure_efficiency(models, profile_name=profile.name, model_source=source, clips=clips,
                                    clips_source=clips_source, prompt=prompt, preprocessor=preprocessor,
                                    settings=settings, decoder=decoder, device=device, eval_entries=eval_entries,
                                    default_frames=profile.num_frames, log=print)
    files = write_outputs(result, args.out)
    # Opened after measuring, so the run's system-metrics sampler cannot disturb the timings.
    with Tracker(enabled=not args.no_track, experiment=args.experiment, run_name="profile",
                 parent_run_id=args.parent_run_id) as tracker:
        log_to_tracker(tracker, result, files)
    by_key = {(r["model"], r["frames"]): r for r in result["rows"]}
    for q in result["ratios"]:
        hicom_row, base_row = by_key[("hicom", q["frames"])], by_key[("llava_ov", q["frames"])]
        print(f"profile: {q['frames']} frames: visual tokens {MODELS['llava_ov']} {base_row['visual_tokens']} vs "
              f"HICom {hicom_row['visual_tokens']} ({q['visual_tokens']:.2f}x); LLM prefill time "
              f"{q['llm_ttft_ms']:.2f}x, prefill FLOPs {q['llm_prefill_flops']:.2f}x; s/video {q['s_per_video']:.2f}x")
    print(f"profile: wrote {', '.join(sorted(files))} to {args.out}; accuracy vs tokens: {result['accuracy_plot']}")
    return 0


def _registry_config(args):
    from hicom.registry import RegistryConfig

    return RegistryConfig.from_dict(_section(args, "registry"))


def cmd_register(args) -> int:
    import json

    from hicom.core.files import atomic_write_bytes
    from hicom.evaluate.mcq import EvalConfig
    from hicom.pipeline_report import results_file
    from hicom.registry import (
        efficiency_metrics,
        eval_metrics,
        profile_row,
        register_model,
    )

    cfg = _registry_config(args)
    profile = load_profile(args.profile, args.params)
    towers = Path(args.towers or profile.text.path or "")
    if not towers.is_dir():
        raise ConfigError(f"register: towers directory {str(towers)!r} not found (pass --towers DIR: the SigLIP "
                          "directory with the instruction tokenizer and preprocessor_config.json)")
    metrics, attachments = {}, {}
    for path in args.eval or []:
        file = results_file(path)
        results = read_json_object(file)
        found = eval_metrics(results, file)
        if set(found) & set(metrics):
            raise ConfigError(f"register: benchmark {results['benchmark']!r} is given twice (--eval {path})")
        metrics.update(found)
        attachments[f"eval/{results['benchmark']}"] = file
    if args.profile_results:
        row = profile_row(read_json_object(args.profile_results), cfg.efficiency_frames, args.profile_results)
        metrics.update(efficiency_metrics(row, args.profile_results))
        attachments["profile"] = Path(args.profile_results)
    model_config = read_json_object(Path(args.model) / "config.json")
    settings = {"num_frames": profile.num_frames, "decoder": _section(args, "data").get("decoder") or "decord",
                "guide_max_length": model_config.get("guide_max_length", profile.guide_max_length),
                "max_new_tokens": EvalConfig.from_dict(_section(args, "evaluate")).max_new_tokens,
                "template": cfg.prompt_template}
    name = args.name or cfg.model_name
    result = register_model(model_dir=args.model, towers_dir=towers, name=name, metrics=metrics, settings=settings,
                            attachments=attachments, experiment=args.experiment, parent_run_id=args.parent_run_id,
                            profile=profile.name)
    atomic_write_bytes(Path(args.out), (json.dumps(result, indent=2) + "\n").encode())
    shown = ", ".join(f"{k} {v:g}" for k, v in sorted(metrics.items())) or "no metrics (no --eval/--profile-results)"
    print(f"register: {name} version {result['version']} (alias challenger) from {args.model}: {shown}; "
          f"wrote {args.out}")
    return 0


def cmd_promote(args) -> int:
    import json

    from hicom.core.files import atomic_write_bytes
    from hicom.registry import promote

    cfg = _registry_config(args)
    name = args.name or cfg.model_name
    result = promote(name=name, version=args.version, gate=cfg.gate, experiment=args.experiment,
                     parent_run_id=args.parent_run_id)
    atomic_write_bytes(Path(args.out), (json.dumps(result, indent=2) + "\n").encode())
    verdict = "promoted to champion" if result["promoted"] else "not promoted"
    print(f"promote: {name} version {result['challenger_version']} {verdict}; champion is version "
          f"{result['champion_version']}")
    for reason in result["reasons"]:
        print(f"promote:   {reason}")
    return 0


def cmd_pipeline_report(args) -> int:
    from hicom.pipeline_report import pipeline_report

    files = pipeline_report(args.run_id, args.out, eval_paths=args.eval or [], profile_file=args.profile_results,
                            efficiency_frames=_registry_config(args).efficiency_frames, log=not args.no_log)
    logged = "" if args.no_log else f"; logged to run {args.run_id} under report/"
    print(f"pipeline-report: wrote {', '.join(sorted(files))} to {args.out}{logged}")
    return 0


def cmd_compare(args) -> int:
    from hicom.pipeline_report import compare_runs

    table, files = compare_runs(args.runs, args.out, _registry_config(args).efficiency_frames)
    print(table)
    print(f"compare: wrote {', '.join(sorted(files))} to {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hicom", description=__doc__)
    parser.add_argument("--params", default=str(PARAMS_FILE), help="params file (default: %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("report", help="parameters and visual tokens per component, on the meta device")
    rep.add_argument("--profile", default=None, help="profile name in params.yaml (default: its `profile:`)")
    rep.add_argument("--out", default=None, help="write the report to this file instead of stdout")
    rep.set_defaults(func=cmd_report)
    smk = sub.add_parser("smoke", help="tiny forward/backward of a profile's model on a drawn clip")
    smk.add_argument("--profile", default=None)
    smk.add_argument("--steps", type=int, default=5)
    smk.set_defaults(func=cmd_smoke)
    syn = sub.add_parser("synth", help="render the synthetic video world (clips + LLaVA annotations)")
    syn.add_argument("--out", required=True)
    syn.set_defaults(func=cmd_synth)
    tok = sub.add_parser("tokenizer", help="train the tiny profile's BPE tokenizer on a synthetic world's text")
    tok.add_argument("--world", required=True)
    tok.add_argument("--out", required=True)
    tok.set_defaults(func=cmd_tokenizer)
    tow = sub.add_parser("towers", help="sigmoid-loss pre-training of the tiny SigLIP towers on a synthetic world")
    tow.add_argument("--profile", default=None)
    tow.add_argument("--world", required=True)
    tow.add_argument("--tokenizer", required=True)
    tow.add_argument("--out", required=True)
    tow.set_defaults(func=cmd_towers)
    llm = sub.add_parser("llm", help="language-model pre-training of the tiny LLM on a synthetic world's text")
    llm.add_argument("--profile", default=None)
    llm.add_argument("--world", required=True)
    llm.add_argument("--tokenizer", required=True)
    llm.add_argument("--out", required=True)
    llm.set_defaults(func=cmd_llm)
    cur = sub.add_parser("curate", help="HICom-248K curation: score, select, generate instruction-description pairs")
    cur.add_argument("--profile", default=None)
    src = cur.add_mutually_exclusive_group(required=True)
    src.add_argument("--world", help="a synthetic world directory (candidates = its training clips)")
    src.add_argument("--pool", help="a LLaVA JSON/JSONL of candidate videos (paths relative to its folder)")
    cur.add_argument("--towers", default=None, help="SigLIP directory (default: the profile's vision path)")
    cur.add_argument("--out", required=True)
    cur.set_defaults(func=cmd_curate)
    trn = sub.add_parser("train", help="one training stage on DeepSpeed (run under torchrun for several processes)")
    trn.add_argument("--stage", required=True, choices=["align", "cond_pretrain", "sft"],
                     help="align: alignment (stage 1); cond_pretrain: conditional pre-training (stage 2); "
                          "sft: instruction tuning (stage 3)")
    trn.add_argument("--profile", default=None)
    trn.add_argument("--out", required=True, help="stage output directory; rerunning resumes from its checkpoints")
    trn.add_argument("--init-from", default=None,
                     help="previous stage's output directory: its compressor initialises a fresh start")
    trn.add_argument("--towers", default=None, help="SigLIP directory (overrides the profile's vision/text path)")
    trn.add_argument("--llm", default=None, help="base LLM directory (overrides the profile's LLM path)")
    trn.add_argument("--tokenizer", default=None, help="LLM tokenizer directory (default: the LLM's directory)")
    trn.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a train setting, e.g. max_steps=5")
    trn.add_argument("--feature-cache", default=None, metavar="DIR",
                     help="cache the frozen towers' outputs here, per video and per sample's questions "
                          "(reused across epochs and stages)")
    trn.add_argument("--experiment", default="hicom", help="MLflow experiment")
    trn.add_argument("--parent-run-id", default=None, help="MLflow parent run (a pipeline run)")
    trn.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    trn.set_defaults(func=cmd_train)
    ev = sub.add_parser("evaluate", help="multiple-choice video QA on a benchmark (run under torchrun to shard)")
    ev.add_argument("--benchmark", required=True, choices=["videomme", "mvbench", "egoschema", "mlvu", "synthetic"],
                    help="videomme: the test parquet; mvbench: its json/ folder of 20 task files; egoschema: "
                         "questions.json (subset_answers.json beside it is scored); mlvu: its dev json/ folder; "
                         "synthetic: a synthetic world's mcq_test.jsonl")
    ev.add_argument("--profile", default=None)
    ev.add_argument("--model", required=True, help="a saved HICom model directory (e.g. the sft stage's model/)")
    ev.add_argument("--data", required=True, help="the benchmark's annotation file or folder")
    ev.add_argument("--videos", default=None,
                    help="video folder (default: where the benchmark's release puts it beside --data)")
    ev.add_argument("--subtitles", default=None,
                    help="Video-MME only: folder of <videoID>.srt; every question is also asked with subtitles")
    ev.add_argument("--towers", default=None, help="SigLIP directory with the instruction tokenizer")
    ev.add_argument("--frames", type=int, default=None, help="frames per video (default: the profile's)")
    ev.add_argument("--guidance", default="on", choices=["on", "off", "both"],
                    help="instruction injection: on, off (same model, injection disabled) or both (Table A4)")
    ev.add_argument("--protocol", default="generate", metavar="LIST",
                    help="how answers are read, comma-separated, the first is the headline: generate (greedy reply, "
                         "letter extracted; the benchmarks' protocol), likelihood (the option likeliest as a short "
                         "answer to the bare question). Default: %(default)s")
    ev.add_argument("--out", required=True, help="output folder; rerunning into it resumes")
    ev.add_argument("--experiment", default="hicom", help="MLflow experiment")
    ev.add_argument("--parent-run-id", default=None, help="MLflow parent run (a pipeline run)")
    ev.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    ev.set_defaults(func=cmd_evaluate)
    prof = sub.add_parser("profile", help="efficiency profile of HICom vs the LLaVA-OV baseline (Table A6)")
    prof.add_argument("--profile", default=None)
    prof.add_argument("--model", default=None,
                      help="a saved HICom model directory (default: build the profile's model, random init)")
    prof.add_argument("--towers", default=None,
                      help="SigLIP directory: instruction tokenizer, preprocessor and, without --model, the towers")
    prof.add_argument("--frames", type=int, nargs="+", default=None, help="frame counts (default: params efficiency)")
    prof.add_argument("--samples", type=int, default=None, help="questions per model and frame count for s/video")
    prof.add_argument("--warmup", type=int, default=None, help="untimed warm-up runs")
    prof.add_argument("--repeats", type=int, default=None, help="timed repeats (medians are reported)")
    prof.add_argument("--videos", nargs="+", default=None,
                      help="video files to read (default: render synthetic clips)")
    prof.add_argument("--eval-results", nargs="+", default=None, metavar="FILE",
                      help="evaluation results.json files (with `accuracy`) for the accuracy-vs-tokens plot")
    prof.add_argument("--device", default="auto", help="auto (GPU if present), cpu, cuda, cuda:N")
    prof.add_argument("--dtype", default="auto", help="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16")
    prof.add_argument("--threads", type=int, default=None,
                      help="torch intra-op threads (default: torch's); 1 gives steadier timings on busy shared CPUs")
    prof.add_argument("--out", required=True)
    prof.add_argument("--experiment", default="hicom", help="MLflow experiment")
    prof.add_argument("--parent-run-id", default=None, help="MLflow parent run (a pipeline run)")
    prof.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    prof.set_defaults(func=cmd_profile)
    reg = sub.add_parser("register", help="log the final model (MLflow pyfunc) and register it with alias challenger")
    reg.add_argument("--profile", default=None)
    reg.add_argument("--model", required=True, help="a saved HICom model directory (the sft stage's model/)")
    reg.add_argument("--name", default=None, help="registered model name (default: params registry.model_name)")
    reg.add_argument("--towers", default=None,
                     help="SigLIP directory: instruction tokenizer and preprocessor (default: the profile's text path)")
    reg.add_argument("--eval", nargs="+", default=None, metavar="DIR",
                     help="evaluate stage outputs (or their results.json): accuracy per benchmark for the gate")
    reg.add_argument("--profile-results", default=None, metavar="FILE",
                     help="the profile stage's profile.json: visual tokens and s/video for the gate")
    reg.add_argument("--out", required=True, help="JSON file: name, version, run_id, model_uri")
    reg.add_argument("--experiment", default="hicom", help="MLflow experiment (without --parent-run-id)")
    reg.add_argument("--parent-run-id", default=None, help="MLflow parent run (a pipeline run)")
    reg.set_defaults(func=cmd_register)
    pro = sub.add_parser("promote", help="promotion gate: move alias champion to a version if it passes")
    pro.add_argument("--name", default=None, help="registered model name (default: params registry.model_name)")
    pro.add_argument("--version", default=None, help="the version to judge (default: the challenger alias)")
    pro.add_argument("--out", required=True, help="JSON file: promoted, reasons, champion_version")
    pro.add_argument("--experiment", default="hicom", help="MLflow experiment (without --parent-run-id)")
    pro.add_argument("--parent-run-id", default=None, help="MLflow parent run (a pipeline run)")
    pro.set_defaults(func=cmd_promote)
    rpt = sub.add_parser("pipeline-report", help="markdown + HTML report with plots of one pipeline run")
    rpt.add_argument("--run-id", required=True, help="the pipeline's MLflow parent run")
    rpt.add_argument("--out", required=True, help="output folder: report.md, report.html, PNGs")
    rpt.add_argument("--eval", nargs="+", default=None, metavar="DIR",
                     help="evaluation outputs to use instead of the runs' logged results.json")
    rpt.add_argument("--profile-results", default=None, metavar="FILE",
                     help="profile.json to use instead of the profile run's artifact")
    rpt.add_argument("--no-log", action="store_true", help="do not log the report to the parent run")
    rpt.set_defaults(func=cmd_pipeline_report)
    cmp = sub.add_parser("compare", help="several pipeline runs (an ablation sweep) side by side: one table, one plot")
    cmp.add_argument("--runs", nargs="+", required=True, metavar="RUN_ID", help="pipeline parent run ids")
    cmp.add_argument("--out", default="outputs/compare", help="output folder (default: %(default)s)")
    cmp.set_defaults(func=cmd_compare)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors caused by input (params, data, checkpoints): reported in one line, without a traceback."""
    from hicom.core.errors import DataError
    from hicom.data.video import VideoReadError
    from hicom.model.checkpoint import CheckpointError

    return ConfigError, DataError, VideoReadError, CheckpointError, FileNotFoundError


def main(argv: list[str] | None = None) -> int:
    from hicom.config import load_params, validate_params

    args = build_parser().parse_args(argv)
    USER_ERRORS = _user_errors()
    try:
        # The whole params file, and the profile asked for, are checked before any command starts work.
        validate_params(load_params(args.params), args.params, getattr(args, "profile", None))
        return args.func(args)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
