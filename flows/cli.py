"""`python -m flows run | ablations | serve | deploy | deps`: run the retrain flow here, run the ablation sweep
(params.yaml pipeline.ablation_sweep) and its report, serve its schedule, deploy prefect.yaml, or check/write
dvc.yaml's code deps."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from flows.dvc import DvcError
from flows.errors import PipelineError
from flows.executors import EXECUTORS
from flows.executors.base import StageFailed
from flows.prefect_server import ServerError, TemporaryServer, use_server
from flows.settings import PROJECT_ROOT, load_checked_params
from hicom.core.errors import ConfigError

WORK_POOLS = {"hicom-process": "process", "hicom-kubernetes": "kubernetes"}  # the pools prefect.yaml names
# The pools' base job templates (Prefect's default where none): the flow-run pod's namespace, service account,
# stack settings and data volume. `deploy` puts them on the server, so an existing pool gets the committed one too.
BASE_JOB_TEMPLATES = {"hicom-kubernetes": PROJECT_ROOT / "infra" / "k8s" / "prefect-base-job-template.json"}
DEFAULT_IMAGE = "hicom-ops:latest"  # the Kubernetes deployment's image ($HICOM_IMAGE)
DEFAULT_IMAGE_PROJECT_DIR = "/opt/hicom-ops"  # where the project lies inside that image ($HICOM_IMAGE_PROJECT_DIR)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """KEY=VALUE strings; values are YAML (2 -> int, false -> bool, "a" -> str)."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise PipelineError(f"--set {item!r}: expected KEY=VALUE (e.g. profiles.tiny.train.sft.epochs=2)")
        overrides[key] = yaml.safe_load(value)
    return overrides


def deployment_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment `prefect deploy` resolves prefect.yaml's {{ $HICOM_... }} values from: the schedule
    from params.yaml, this checkout's directory, the Kubernetes image (overridable)."""
    _, settings = load_checked_params(PROJECT_ROOT / "params.yaml")
    env = dict(os.environ if environ is None else environ)
    env.update(HICOM_RETRAIN_CRON=settings.schedule_cron, HICOM_RETRAIN_TIMEZONE=settings.schedule_timezone,
               HICOM_PROJECT_DIR=str(PROJECT_ROOT))
    env.setdefault("HICOM_IMAGE", DEFAULT_IMAGE)
    env.setdefault("HICOM_IMAGE_PROJECT_DIR", DEFAULT_IMAGE_PROJECT_DIR)
    return env


def deploy() -> None:
    """Create the work pools that are missing, then `prefect deploy --all` (prefect.yaml) against the server."""
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise PipelineError("deploy: deployments live on a Prefect server; start the team stack (`make stack-up`, "
                            "then load its env file) or set PREFECT_API_URL")
    env = {**deployment_env(), "PREFECT_API_URL": str(PREFECT_API_URL.value())}  # it may come from a profile
    prefect = str(Path(sys.executable).with_name("prefect"))

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([prefect, *args], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)

    for pool, kind in WORK_POOLS.items():
        template = ["--base-job-template", str(BASE_JOB_TEMPLATES[pool])] if pool in BASE_JOB_TEMPLATES else []
        if run("work-pool", "inspect", pool).returncode != 0:
            done, what = run("work-pool", "create", pool, "--type", kind, *template), "created"
        elif template:
            done, what = run("work-pool", "update", pool, *template), "given the base job template"
        else:
            continue
        if done.returncode != 0:
            raise PipelineError(f"deploy: work pool {pool!r} ({kind}) could not be {what}: "
                                f"{(done.stderr or done.stdout).strip()[-500:]}")
        print(f"deploy: work pool {pool!r} ({kind}) {what}" + (f" ({template[1]})" if template else ""))
    deployed = run("--no-prompt", "deploy", "--all")
    if deployed.returncode != 0:
        output = (deployed.stderr or deployed.stdout).strip()
        raise PipelineError(f"deploy: `prefect deploy --all` failed: {output[-800:]}")
    print(f"deploy: prefect.yaml deployed (schedule {env['HICOM_RETRAIN_CRON']} {env['HICOM_RETRAIN_TIMEZONE']}); "
          "start a worker with `prefect worker start --pool hicom-process`")


def code_deps(root: Path, write: bool) -> int:
    """Check (1 when any differ) or write dvc.yaml's code deps; each stage that differs is named."""
    from flows.code_deps import stage_code, write_code_deps

    stages = stage_code(root)
    if write:
        changed = write_code_deps(root, stages)
        print(f"deps: dvc.yaml code deps rewritten for {', '.join(changed)}" if changed
              else "deps: dvc.yaml code deps are current")
        return 0
    stale = [s for s in stages if set(s.listed) != set(s.derived)]
    for stage in stale:
        missing = stage.uncovered
        print(f"deps: stage {stage.name!r} lists {', '.join(stage.listed) or 'no code'}; its command imports "
              f"{', '.join(stage.derived)}" + (f" (not covered now: {', '.join(missing)})" if missing else ""),
              file=sys.stderr)
    if stale:
        print("deps: run `python -m flows deps --write` to rewrite them", file=sys.stderr)
        return 1
    print("deps: dvc.yaml code deps are current")
    return 0


def main(argv: list[str] | None = None, server: TemporaryServer | None = None) -> int:
    """server: the temporary Prefect server `python -m flows` started for this command (None: Prefect's settings);
    stopped by `use_server`, or at exit where a request fails its checks before a flow starts."""
    parser = argparse.ArgumentParser(prog="python -m flows", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run_cmd = sub.add_parser("run", help="run the retrain flow once, here")
    run_cmd.add_argument("--ablation", action="append", default=[], metavar="NAME",
                         help="an ablation from params.yaml pipeline.ablations (repeatable)")
    run_cmd.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                         help="override a params.yaml key for this run (repeatable)")
    run_cmd.add_argument("--executor", choices=list(EXECUTORS), default=None)
    sweep = sub.add_parser("ablations", help="the paper's ablations with seeds and accuracy vs visual tokens "
                                             "(params.yaml pipeline.ablation_sweep), then the comparison report; "
                                             "finished runs are reused")
    sweep.add_argument("--executor", choices=list(EXECUTORS), default=None)
    sweep.add_argument("--report-only", action="store_true",
                       help="run nothing: the report of the runs finished so far")
    sweep.add_argument("--project-dir", default=None, help="the project to run in (default: this checkout)")
    serve = sub.add_parser("serve", help="serve the scheduled retraining from this process (cron from params.yaml)")
    serve.add_argument("--name", default="retrain-served")
    sub.add_parser("deploy", help="create the work pools and deploy prefect.yaml (needs a Prefect server)")
    deps = sub.add_parser("deps", help="dvc.yaml code deps from what each stage's command imports")
    mode = deps.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="fail when a stage lists other code deps")
    mode.add_argument("--write", action="store_true", help="rewrite each stage's code deps in dvc.yaml")
    args = parser.parse_args(argv)
    try:
        if args.command == "deploy":
            deploy()
        elif args.command == "deps":
            return code_deps(PROJECT_ROOT, write=args.write)
        elif args.command == "ablations":
            from flows.ablations import ablations

            with use_server(server):
                ablations(project_dir=args.project_dir, executor=args.executor, report_only=args.report_only)
        elif args.command == "serve":
            from prefect.schedules import Cron

            from flows.retrain import retrain

            _, settings = load_checked_params(PROJECT_ROOT / "params.yaml")
            with use_server(server):
                retrain.serve(name=args.name, schedule=Cron(settings.schedule_cron, timezone=settings.schedule_timezone),
                              tags=["hicom", "retrain"],
                              description="Scheduled retraining (params.yaml pipeline.schedule)")
        else:
            from flows.retrain import plan_run, retrain

            overrides = parse_overrides(args.set)
            plan_run(PROJECT_ROOT, args.ablation, overrides, args.executor)  # fails fast, before the flow starts
            with use_server(server):
                retrain(ablations=args.ablation, overrides=overrides, executor=args.executor)
    except (ConfigError, StageFailed, DvcError, TimeoutError, ServerError) as exc:  # params, dvc.yaml, a stage, ...
        print(f"flows {args.command}: FAILED: {exc}", file=sys.stderr)
        return 1
    return 0
