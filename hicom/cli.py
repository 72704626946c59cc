"""`python -m hicom COMMAND`: one entry per stage. Only commands that work are listed."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hicom.config import PARAMS_FILE, ConfigError, load_profile


def cmd_report(args) -> int:
    from hicom.report import build_report, format_report

    print(format_report(build_report(load_profile(args.profile, args.params))))
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
    from hicom.model.tiny_towers import TowerTrainConfig, pretrain_towers

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
    from hicom.model.tiny_llm import LLMTrainConfig, pretrain_llm

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
    import json

    from transformers import SiglipTextModel, SiglipVisionModel

    from hicom.curate import CurateConfig, GroundTruthGenerator, OpenAIGenerator, run_curation
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
    import json

    from hicom.data.tokenizer import load_tokenizer
    from hicom.data.video import FramePreprocessor
    from hicom.evaluate.mcq import evaluate_mcq, read_mcq
    from hicom.model import HIComForCausalLM
    from hicom.model.checkpoint import atomic_write_bytes

    profile = load_profile(args.profile, args.params)
    towers = Path(args.towers or profile.text.path or "")
    model = HIComForCausalLM.from_pretrained(args.model).eval()
    tokenizer = load_tokenizer(args.model)
    guide_tokenizer = load_tokenizer(towers) if model.projector.uses_instruction else None
    preprocessor = FramePreprocessor.from_pretrained(towers) if (towers / "preprocessor_config.json").is_file() \
        else FramePreprocessor(model.config.vision_config.image_size)
    decoder = _section(args, "data").get("decoder") or "decord"
    rows = read_mcq(args.data)
    result = evaluate_mcq(model, rows, tokenizer, guide_tokenizer, preprocessor, profile.num_frames, decoder,
                          model.config.guide_max_length)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "predictions.jsonl",
                       "".join(json.dumps(p) + "\n" for p in result["predictions"]).encode())
    summary = {k: v for k, v in result.items() if k != "predictions"}
    atomic_write_bytes(out / "results.json", json.dumps(summary, indent=2).encode())
    print(f"evaluate[{args.benchmark}]: accuracy {summary['accuracy']:.3f} on {summary['total']} questions "
          f"(chance {summary['chance']:.3f}); unanswered {summary['unanswered']}; by kind {summary['by_kind']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hicom", description=__doc__)
    parser.add_argument("--params", default=str(PARAMS_FILE), help="params file (default: %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("report", help="parameters and visual tokens per component, on the meta device")
    rep.add_argument("--profile", default=None, help="profile name in params.yaml (default: its `profile:`)")
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
                     help="cache the frozen vision tower's outputs per video here (reused across epochs and stages)")
    trn.add_argument("--experiment", default="hicom", help="MLflow experiment")
    trn.add_argument("--parent-run-id", default=None, help="MLflow parent run (a pipeline run)")
    trn.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    trn.set_defaults(func=cmd_train)
    ev = sub.add_parser("evaluate", help="multiple-choice evaluation of a trained model")
    ev.add_argument("--benchmark", required=True, choices=["synthetic"],
                    help="synthetic: the held-out questions of a synthetic world (mcq_test.jsonl)")
    ev.add_argument("--profile", default=None)
    ev.add_argument("--model", required=True, help="a saved HICom model directory (e.g. the sft stage's model/)")
    ev.add_argument("--data", required=True, help="the benchmark's annotation file")
    ev.add_argument("--towers", default=None, help="SigLIP directory with the instruction tokenizer")
    ev.add_argument("--out", required=True)
    ev.set_defaults(func=cmd_evaluate)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors caused by input (params, data, checkpoints): reported in one line, without a traceback."""
    from hicom.data.mixture import DataError
    from hicom.data.video import VideoReadError
    from hicom.model.checkpoint import CheckpointError

    return ConfigError, DataError, VideoReadError, CheckpointError, FileNotFoundError


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    USER_ERRORS = _user_errors()
    try:
        return args.func(args)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
