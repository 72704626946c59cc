"""`register`: log the final model (MLflow pyfunc) and register it with alias challenger."""
import json
from pathlib import Path

from hicom.core.errors import ConfigError

NAME = "register"
HELP = "log the final model (MLflow pyfunc) and register it with alias challenger"
TRACKED = True


def add_arguments(parser) -> None:
    parser.add_argument("--profile", default=None)
    parser.add_argument("--model", required=True, help="a saved HICom model directory (the sft stage's model/)")
    parser.add_argument("--name", default=None, help="registered model name (default: params registry.model_name)")
    parser.add_argument("--towers", default=None, help="SigLIP directory: instruction tokenizer and preprocessor "
                                                       "(default: the profile's text path)")
    parser.add_argument("--eval", nargs="+", default=None, metavar="DIR",
                        help="evaluate stage outputs (or their results.json): accuracy and per-question records "
                             "per benchmark for the gate")
    parser.add_argument("--efficiency", default=None, metavar="FILE",
                        help="the efficiency stage's profile.json: visual tokens and s/video for the gate")
    parser.add_argument("--out", required=True, help="JSON file: name, version, run_id, model_uri")
    parser.add_argument("--experiment", default="hicom", help="MLflow experiment (without --parent-run-id)")
    parser.add_argument("--parent-run-id", default=None, help="MLflow parent run (a pipeline run)")


def run(args, params) -> int:
    from hicom.core.files import atomic_write_bytes, read_json_object
    from hicom.gate.decision import candidate_metrics
    from hicom.registry import register_model

    cfg = params.registry
    profile = params.profile(args.profile)
    towers = Path(args.towers or profile.text.path or "")
    if not towers.is_dir():
        raise ConfigError(f"register: towers directory {str(towers)!r} not found (pass --towers DIR: the SigLIP "
                          "directory with the instruction tokenizer and preprocessor_config.json)")
    metrics, question_sets, attachments = candidate_metrics(args.eval or [], args.efficiency, cfg.efficiency_frames)
    model_config = read_json_object(Path(args.model) / "config.json")
    settings = {"num_frames": profile.num_frames, "decoder": params.data.decoder,
                "guide_max_length": model_config.get("guide_max_length", profile.guide_max_length),
                "max_new_tokens": params.evaluate.max_new_tokens, "template": cfg.prompt_template,
                "protocol": serving_protocol(args.eval or [], cfg.prompt_template)}
    name = args.name or cfg.model_name
    result = register_model(model_dir=args.model, towers_dir=towers, name=name, metrics=metrics, settings=settings,
                            question_sets=question_sets, attachments=attachments, experiment=args.experiment,
                            parent_run_id=args.parent_run_id, profile=profile.name)
    atomic_write_bytes(Path(args.out), (json.dumps(result, indent=2) + "\n").encode())
    shown = ", ".join(f"{k} {v:g}" for k, v in sorted(metrics.items())) or "no metrics (no --eval/--efficiency)"
    print(f"register: {name} version {result['version']} (alias challenger) from {args.model}: {shown}; "
          f"wrote {args.out}")
    return 0


def serving_protocol(eval_paths, template: str) -> str:
    """How the served model answers: as the evaluation it is gated and promoted on read its answers (results.json's
    headline protocol, `generate` or `likelihood`), that of the served template's benchmark, else the first given;
    `generate` without an evaluation."""
    from hicom.core.files import read_json_object
    from hicom.evaluate.mcq import PROTOCOLS
    from hicom.gate.decision import results_file

    found = {}
    for path in eval_paths:
        file = results_file(path)
        results = read_json_object(file)
        protocol = results.get("protocol", "generate")
        if protocol not in PROTOCOLS:
            raise ConfigError(f"{file}: protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")
        found.setdefault(str(results.get("benchmark")), protocol)
    return found.get(template) or next(iter(found.values()), "generate")
