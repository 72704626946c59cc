"""bench/goals.py: the commit stamped on a bench's numbers is the code it measured."""
from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture()
def goals(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(BENCH))
    module = importlib.import_module("goals")
    monkeypatch.setattr(module, "GOALS_DIR", tmp_path / "bench_goals")
    return module


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture()
def repo(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "code.py").write_text("x = 1\n")
    git(repo, "add", "code.py")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "first")
    return repo


def test_revision_is_the_short_hash_of_a_clean_tree_and_ignores_untracked_files(goals, repo):
    (repo / "outputs.json").write_text("{}")  # what a bench writes: untracked
    assert goals.revision(repo) == git(repo, "rev-parse", "--short", "HEAD")


def test_revision_is_marked_dirty_when_a_tracked_file_differs_from_head(goals, repo):
    (repo / "code.py").write_text("x = 2\n")
    assert goals.revision(repo) == git(repo, "rev-parse", "--short", "HEAD") + "-dirty"


def test_revision_outside_a_repository_is_unknown(goals, tmp_path):
    outside = tmp_path / "not_a_repo"
    outside.mkdir()
    assert goals.revision(outside) == "unknown"


def test_record_stamps_the_revision_taken_when_the_bench_started_not_when_it_writes(goals, monkeypatch, repo):
    started = goals.revision(repo)
    monkeypatch.setattr(goals, "REVISION", started)
    (repo / "code.py").write_text("x = 3\n")  # a commit made while the bench ran
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-am", "during the bench")
    path = goals.record("some_bench", [goals.Goal("ratio", 2.0, ">=", 1.5, "x")])
    payload = json.loads(path.read_text())
    assert payload["commit"] == started != git(repo, "rev-parse", "--short", "HEAD")
    named = goals.record("other", [goals.Goal("ratio", 1.0, ">=", 1.5)], commit="abc1234")
    assert json.loads(named.read_text())["commit"] == "abc1234"  # a bench that measured another checkout names it


def test_a_bench_process_stamps_the_revision_at_its_start(repo):
    """As a bench uses it: goals.py inside a checkout, imported first, record() at the end after a commit."""
    (repo / "bench").mkdir()
    (repo / "bench" / "goals.py").write_text((BENCH / "goals.py").read_text())
    git(repo, "add", "bench/goals.py")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "goals")
    started = git(repo, "rev-parse", "--short", "HEAD")
    bench = f"""
import subprocess, sys
sys.path.insert(0, {str(repo / "bench")!r})
from goals import Goal, record
with open({str(repo / "code.py")!r}, "w") as f:
    f.write("x = 4\\n")
subprocess.run(["git", "-C", {str(repo)!r}, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-am",
                "mid-run"], check=True)
print(record("b", [Goal("ratio", 2.0, ">=", 1.5)]))
"""
    out = subprocess.run([sys.executable, "-c", bench], capture_output=True, text=True, check=True)
    payload = json.loads(Path(out.stdout.strip()).read_text())
    assert payload["commit"] == started != git(repo, "rev-parse", "--short", "HEAD")
