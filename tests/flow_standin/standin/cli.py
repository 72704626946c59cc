"""Stand-in stages: each appends its name to calls.log (what really ran), reads its params key and its inputs,
and writes outputs derived from them. STANDIN_FAIL="STAGE:CODE[:TIMES]" makes STAGE exit with CODE (the
first TIMES calls, default all); STANDIN_SLEEP="STAGE:SECONDS" makes it write its pid to sleep-STAGE.pid and
sleep that long first. STANDIN_STEPS="STAGE:STEPS:SECONDS" makes STAGE train: STEPS steps of SECONDS each,
a checkpoint (checkpoints/step-N/complete.json, as hicom's trainer marks them) after each, resuming from the
newest one; meanwhile a "rank" runs in a session of its own, as torchrun starts ranks, and both pids are
appended to pids-STAGE. Unless it fails (STANDIN_FAIL), it then writes trainer_state.json and deletes its
checkpoints, as hicom's trainer does when a stage completes; a rerun that finds that state trains nothing.
STANDIN_LINGER="STAGE:SECONDS" makes STAGE wait that long after its final state, before it exits.
STANDIN_FAIL_IF="TEXT" makes any stage whose command line contains TEXT exit with 1 (e.g. one variant's stages).
STANDIN_QUESTIONS=N makes evaluate write N scored questions (3 per video, two families) with per-question records,
as hicom's results.json keeps them: question i is right when (37 * i) % 10 is below the trained model's value.
STANDIN_REGISTRY=mlflow makes register create a model version on $MLFLOW_TRACKING_URI
and promote set alias champion on the version it is given (failing, as hicom's does, where it does not exist)."""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml
from tqdm import tqdm

from standin.commands import COMMANDS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m standin")
    parser.add_argument("--params", default="params.yaml")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        cmd = sub.add_parser(name)
        cmd.add_argument("--stage", default=name)
        cmd.add_argument("--in", dest="inputs", nargs="*", default=[])
        cmd.add_argument("--value", help="a params.yaml key whose value goes into the output")
        cmd.add_argument("--out", required=True)
        if command.TRACKED:
            cmd.add_argument("--parent-run-id", default=None)
    sub.choices["promote"].add_argument("--name", required=True)  # as hicom's promote and pipeline-report
    sub.choices["promote"].add_argument("--version", required=True)
    sub.choices["pipeline-report"].add_argument("--run-id", required=True)
    sub.choices["pipeline-report"].add_argument("--eval", nargs="+", default=[])
    return parser


def _register(run_id: str) -> str:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient
    client = MlflowClient()
    try:
        client.create_registered_model("standin-model")
    except MlflowException:
        pass  # registered by an earlier run
    return client.create_model_version("standin-model", source=f"runs:/{run_id}/model", run_id=run_id).version


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    with open("calls.log", "a") as log:
        log.write(f"{args.stage} {args.command} {' '.join(sys.argv[1:])} "
                  f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}\n")
    sleep = os.environ.get("STANDIN_SLEEP", "")
    if sleep.split(":")[0] == args.stage:
        Path(f"sleep-{args.stage}.pid").write_text(str(os.getpid()))
        time.sleep(float(sleep.split(":")[1]))
    steps = os.environ.get("STANDIN_STEPS", "").split(":")
    trained = train(Path(args.out), args.stage, int(steps[1]), float(steps[2])) if steps[0] == args.stage else {}
    fail = os.environ.get("STANDIN_FAIL", "").split(":")
    if fail[0] == args.stage:
        counter = Path(f"fail-{args.stage}.count")
        calls = int(counter.read_text()) + 1 if counter.exists() else 1
        counter.write_text(str(calls))
        if len(fail) < 3 or calls <= int(fail[2]):
            print(f"{args.stage}: failing on purpose with exit code {fail[1]}", flush=True)
            return int(fail[1])
    if trained and not trained.get("already_complete"):
        complete(Path(args.out), trained)
        linger = os.environ.get("STANDIN_LINGER", "").split(":")
        if linger[0] == args.stage:
            time.sleep(float(linger[1]))
    fail_if = os.environ.get("STANDIN_FAIL_IF")
    if fail_if and fail_if in " ".join(sys.argv[1:]):
        print(f"{args.stage}: failing on purpose ({fail_if!r} in its command)", flush=True)
        return 1
    params = yaml.safe_load(Path(args.params).read_text())
    value = None
    if args.value:
        value = params
        for part in args.value.split("."):
            value = value[part]
    inputs = {p: sorted(str(f) for f in Path(p).rglob("*")) if Path(p).is_dir() else Path(p).read_text()
              for p in args.inputs}
    payload = {"stage": args.stage, "value": value, "inputs": inputs, "eval": getattr(args, "eval", None),
               "parent_run_id": getattr(args, "parent_run_id", None), **trained}
    out = Path(args.out)
    if args.command == "evaluate":
        out.mkdir(parents=True, exist_ok=True)
        (out / "predictions.jsonl").write_text(json.dumps(payload) + "\n")
        questions = int(os.environ.get("STANDIN_QUESTIONS", "0"))
        (out / "results.json").write_text(json.dumps(scored(args.inputs[0], questions) if questions else
                                                     {"accuracy": 0.5, "total": 2}))
    elif args.command == "register":
        out.parent.mkdir(parents=True, exist_ok=True)
        version = _register(args.parent_run_id) if os.environ.get("STANDIN_REGISTRY") == "mlflow" else "1"
        out.write_text(json.dumps({"name": "standin-model", "version": version, "run_id": "r", "model_uri": "m"}))
    elif args.command == "promote":
        if os.environ.get("STANDIN_REGISTRY") == "mlflow":
            from mlflow.tracking import MlflowClient
            MlflowClient().set_registered_model_alias(args.name, "champion", args.version)  # raises if absent
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"promoted": True, "reasons": ["first model"], "champion_version": args.version}))
    elif args.command == "pipeline-report":
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.md").write_text(f"# report\n\n{json.dumps(payload)}\n")
    else:
        out.mkdir(parents=True, exist_ok=True)
        (out / "data.json").write_text(json.dumps(payload))
    print(f"{args.stage}: wrote {out}", flush=True)
    return 0


def train(out: Path, stage: str, steps: int, seconds: float) -> dict:
    """Deterministic "weights" over `steps` checkpointed steps; resumes from the newest complete checkpoint."""
    state = out / "trainer_state.json"
    if state.is_file():
        return {**json.loads(state.read_text()), "already_complete": True}
    rank = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    with open(f"pids-{stage}", "a") as f:
        f.write(f"{os.getpid()} {rank.pid}\n")
    done = sorted(out.glob("checkpoints/step-*/complete.json"))
    resumed_from = int(done[-1].parent.name.split("-")[1]) if done else None
    weights = json.loads(done[-1].read_text())["weights"] if done else 0
    for step in tqdm(range((resumed_from or 0) + 1, steps + 1), desc=f"{stage}: training", unit="step"):
        time.sleep(seconds)
        weights = weights * 3 + step
        folder = out / "checkpoints" / f"step-{step:07d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "complete.json").write_text(json.dumps({"weights": weights}))
    rank.kill()
    rank.wait()
    return {"weights": weights, "resumed_from": resumed_from}


def complete(out: Path, trained: dict) -> None:
    """The stage's final state, then its checkpoints deleted (hicom.train.trainer's order)."""
    (out / "trainer_state.json").write_text(json.dumps(trained))
    shutil.rmtree(out / "checkpoints", ignore_errors=True)


def scored(model_dir: str, n: int) -> dict:
    """results.json of n questions as hicom's evaluate writes it (the fields the ablation report reads)."""
    import hashlib

    skill = json.loads((Path(model_dir) / "data.json").read_text())["value"]
    questions = [{"id": f"q{i}", "video": f"v{i // 3}", "answer": "A", "correct": (37 * i) % 10 < skill,
                  "family": ("colour_seen", "colour_of_shape")[i % 2]} for i in range(n)]
    pairs = sorted([q["id"], q["answer"]] for q in questions)
    breakdown = {}
    for family in ("colour_seen", "colour_of_shape"):
        group = [q for q in questions if q["family"] == family]
        breakdown[family] = {"accuracy": sum(q["correct"] for q in group) / len(group), "total": len(group),
                             "chance": 0.25}
    return {"benchmark": "synthetic", "accuracy": sum(q["correct"] for q in questions) / n, "total": n,
            "chance": 0.25, "visual_tokens": 4 + skill, "breakdown": {"family": breakdown},
            "question_set": hashlib.sha256(json.dumps(pairs).encode()).hexdigest()[:16], "questions": questions}
