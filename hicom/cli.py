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


def cmd_curate(args) -> int:
    import json

    from transformers import SiglipTextModel, SiglipVisionModel

    from hicom.curate import CurateConfig, GroundTruthGenerator, OpenAIGenerator, run_curation
    from hicom.data.tokenizer import load_tokenizer
    from hicom.data.video import FramePreprocessor

    profile = load_profile(args.profile, args.params)
    cfg = CurateConfig.from_dict(_section(args, "curate"))
    towers = Path(args.towers or profile.vision.path or "")
    if not towers.is_dir():
        raise ConfigError(f"curate: SigLIP towers directory {str(towers)!r} not found (pass --towers DIR)")
    if args.world:
        world = Path(args.world)
        test_ids = {json.loads(l)["id"] for l in (world / "mcq_test.jsonl").read_text().splitlines() if l.strip()}
        ids = [json.loads(l)["id"] for l in (world / "scenes.jsonl").read_text().splitlines() if l.strip()]
        videos = [{"id": i, "video": str(world / "videos" / f"{i}.mp4")} for i in ids if i not in test_ids]
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
    vision = SiglipVisionModel.from_pretrained(towers).eval()
    text = SiglipTextModel.from_pretrained(towers).eval()
    manifest = run_curation(videos, cfg, args.out, vision, text, load_tokenizer(towers),
                            FramePreprocessor.from_pretrained(towers), generator, data_root,
                            text.config.max_position_embeddings)
    print(f"curate: {manifest['candidates']} candidates, {manifest['selected']} selected, {manifest['written']} "
          f"written ({manifest['pairs']} pairs), {manifest['rejects']} rejected; per category: "
          f"{manifest['per_category']}")
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
    cur = sub.add_parser("curate", help="HICom-248K curation: score, select, generate instruction-description pairs")
    cur.add_argument("--profile", default=None)
    src = cur.add_mutually_exclusive_group(required=True)
    src.add_argument("--world", help="a synthetic world directory (candidates = its training clips)")
    src.add_argument("--pool", help="a LLaVA JSON/JSONL of candidate videos (paths relative to its folder)")
    cur.add_argument("--towers", default=None, help="SigLIP directory (default: the profile's vision path)")
    cur.add_argument("--out", required=True)
    cur.set_defaults(func=cmd_curate)
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
