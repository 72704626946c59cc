"""`promote`: the promotion gate, moving alias champion to a version that passes it."""
import json
from pathlib import Path

NAME = "promote"
HELP = "promotion gate: move alias champion to a version if it passes"
TRACKED = True


def add_arguments(parser) -> None:
    parser.add_argument("--name", default=None, help="registered model name (default: params registry.model_name)")
    parser.add_argument("--version", default=None, help="the version to judge (default: the challenger alias)")
    parser.add_argument("--out", required=True,
                        help="JSON file: promoted, outcome, reasons, comparisons, champion_version")
    parser.add_argument("--experiment", default="hicom", help="MLflow experiment (without --parent-run-id)")
    parser.add_argument("--parent-run-id", default=None, help="MLflow parent run (a pipeline run)")


def run(args, params) -> int:
    from hicom.core.files import atomic_write_bytes
    from hicom.registry import promote

    cfg = params.registry
    name = args.name or cfg.model_name
    result = promote(name=name, version=args.version, gate=cfg.gate, experiment=args.experiment,
                     parent_run_id=args.parent_run_id)
    atomic_write_bytes(Path(args.out), (json.dumps(result, indent=2) + "\n").encode())
    verdict = {"promoted": "promoted to champion", "rejected": "rejected", "unchanged": "not promoted",
               "inconclusive": "not promoted (inconclusive: champion kept)"}[result["outcome"]]
    print(f"promote: {name} version {result['challenger_version']} {verdict}; champion is version "
          f"{result['champion_version']}")
    for reason in result["reasons"]:
        print(f"promote:   {reason}")
    return 0
