"""Each benchmark's headline numbers beside their goals, so that `make bench` ends with all of them in one table.

A bench script calls record(bench, [Goal(...), ...]) once it has its numbers; that writes
outputs/reports/bench_goals/<bench>.json (atomically), stamped with the revision the bench started at (HEAD,
"-dirty" when tracked files differed from it). `python bench/goals.py` prints every record found, and
`python bench/goals.py --clear` removes them (make bench does that first, so the table holds this run only).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOALS_DIR = ROOT / "outputs" / "reports" / "bench_goals"
COMPARISONS = {">=": lambda value, target: value >= target, "<=": lambda value, target: value <= target}


@dataclasses.dataclass(frozen=True)
class Goal:
    """One number and its goal: `value comparison target` (e.g. 2.43 >= 2.0); detail says how it was measured."""

    name: str
    value: float
    comparison: str
    target: float
    unit: str = ""
    detail: str = ""

    def __post_init__(self) -> None:
        if self.comparison not in COMPARISONS:
            raise ValueError(f"Goal {self.name!r}: comparison must be one of {sorted(COMPARISONS)}, "
                             f"got {self.comparison!r}")

    @property
    def met(self) -> bool:
        return COMPARISONS[self.comparison](self.value, self.target)


def revision(root: Path) -> str:
    """The code a run measures: HEAD's short hash, "-dirty" where tracked files differ from it (untracked ones,
    e.g. outputs/, do not count); "unknown" without git or a repository."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "--no-optional-locks", "-C", str(root), *args], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
    try:
        commit = git("rev-parse", "--short", "HEAD")
        return commit + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# Taken when a bench starts (it imports this module first), not when it records: a commit or an edit made while
# a bench runs for an hour is not the code it measured.
REVISION = revision(ROOT)


def record(bench: str, goals: list[Goal], commit: str | None = None) -> Path:
    """Write this bench's numbers, stamped with `commit` (default: the revision this process started at)."""
    GOALS_DIR.mkdir(parents=True, exist_ok=True)
    path = GOALS_DIR / f"{bench}.json"
    payload = {"bench": bench, "commit": REVISION if commit is None else commit,
               "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "goals": [dataclasses.asdict(goal) | {"met": goal.met} for goal in goals]}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def _format(value: float, unit: str) -> str:
    text = f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return f"{text}{unit}"


def summary() -> int:
    """Print every recorded number beside its goal; returns how many goals were not met."""
    records = sorted(GOALS_DIR.glob("*.json")) if GOALS_DIR.is_dir() else []
    if not records:
        print(f"no benchmark numbers recorded in {GOALS_DIR.relative_to(ROOT)}/")
        return 0
    missed = 0
    payloads = [json.loads(path.read_text()) for path in records]
    width = max([len(goal["name"]) for payload in payloads for goal in payload["goals"]] + [6]) + 2
    print(f"{'bench':<18}{'number':<{width}}{'value':>10}  {'goal':<12}")
    for payload in payloads:
        for goal in payload["goals"]:
            unit = goal["unit"]
            verdict = "met" if goal["met"] else "NOT met"
            missed += not goal["met"]
            print(f"{payload['bench']:<18}{goal['name']:<{width}}{_format(goal['value'], unit):>10}  "
                  f"{goal['comparison']} {_format(goal['target'], unit):<9}{verdict}")
    commits = {payload["commit"] for payload in payloads}
    print(f"({len(records)} benches, at commit {', '.join(sorted(commits))}; {missed} goal(s) not met)")
    return missed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clear", action="store_true", help="remove the recorded numbers (start of make bench)")
    args = parser.parse_args()
    if args.clear:
        shutil.rmtree(GOALS_DIR, ignore_errors=True)
        return
    summary()


if __name__ == "__main__":
    sys.exit(main())
