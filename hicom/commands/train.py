"""`train`: one training stage on DeepSpeed (run under torchrun for several processes)."""
import dataclasses
from pathlib import Path

from hicom.core.errors import ConfigError

NAME = "train"
HELP = "one training stage on DeepSpeed (run under torchrun for several processes)"
TRACKED = True
STAGE_HELP = ("align: alignment (stage 1); cond_pretrain: conditional pre-training (stage 2); "
              "sft: instruction tuning (stage 3)")


def add_arguments(parser) -> None:
    parser.add_argument("--stage", required=True, choices=["align", "cond_pretrain", "sft"], help=STAGE_HELP)
    parser.add_argument("--profile", default=None)
    parser.add_argument("--out", required=True, help="stage output directory; rerunning resumes from its checkpoints")
    parser.add_argument("--init-from", default=None,
                        help="previous stage's output directory: its compressor initialises a fresh start")
    parser.add_argument("--towers", default=None, help="SigLIP directory (overrides the profile's vision/text path)")
    parser.add_argument("--llm", default=None, help="base LLM directory (overrides the profile's LLM path)")
    parser.add_argument("--tokenizer", default=None, help="LLM tokenizer directory (default: the LLM's directory)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override a train setting, e.g. max_steps=5")
    parser.add_argument("--feature-cache", default=None, metavar="DIR",
                        help="cache the frozen towers' outputs here, per video and per sample's questions "
                             "(reused across epochs and stages)")
    parser.add_argument("--experiment", default="hicom", help="MLflow experiment")
    parser.add_argument("--parent-run-id", default=None, help="MLflow parent run (a pipeline run)")
    parser.add_argument("--no-track", action="store_true", help="do not log to MLflow")


def run(args, params) -> int:
    import yaml

    from hicom.train.trainer import StageRun, train_stage

    profile = params.profile(args.profile)
    if args.towers:
        profile = dataclasses.replace(profile, vision=dataclasses.replace(profile.vision, path=args.towers),
                                      text=dataclasses.replace(profile.text, path=args.towers))
    if args.llm:
        profile = dataclasses.replace(profile, llm=dataclasses.replace(profile.llm, path=args.llm))
    overrides = {}
    for item in args.set or []:
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    cfg = params.train(profile.name, args.stage, overrides)
    tokenizer = args.tokenizer or profile.llm.path
    if not tokenizer:
        raise ConfigError(f"profile {profile.name!r} builds its LLM from a config: pass --tokenizer DIR")
    train_stage(StageRun(stage=args.stage, profile=profile, cfg=cfg, out_dir=Path(args.out),
                         tokenizer_dir=Path(tokenizer), init_from=Path(args.init_from) if args.init_from else None,
                         decoder=params.data.decoder, read_timeout_s=params.data.read_timeout_s,
                         read_limits=params.data.limits,
                         feature_cache=Path(args.feature_cache) if args.feature_cache else None,
                         track=not args.no_track, experiment=args.experiment, parent_run_id=args.parent_run_id))
    return 0
