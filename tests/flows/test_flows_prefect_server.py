"""The temporary Prefect server `python -m flows` starts before it imports Prefect (flows/prefect_server.py): flows
run on it and on no second server, a server in Prefect's settings wins, a taken port or a broken start is handled,
and no server process outlives the command."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from flows.prefect_server import ServerError, TemporaryServer, healthy, start_for
from tests.procs import alive

REPO = Path(__file__).resolve().parents[2]
STANDIN = Path(__file__).resolve().parents[1] / "flow_standin"
PROBE = textwrap.dedent("""
    import json, os, sys
    from flows.prefect_server import TemporaryServer, use_server
    server = TemporaryServer(os.environ["PREFECT_HOME"], 120).start()
    pid = server.process.pid
    from prefect import flow, task
    from prefect.client.orchestration import get_client

    @task(persist_result=True, cache_key_fn=lambda *args: "probe")
    def step():
        return 1

    @flow
    def probe():
        step()
        return str(get_client(sync_client=True).api_url).rstrip("/")

    with use_server(server) as ours:
        used = probe()
        with get_client(sync_client=True) as client:
            names = [run.name for run in client.read_flow_runs()]
    print(json.dumps({"ours": ours, "used": used, "runs": len(names), "early_pid": pid}))
""")


def clean_env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return {**env, "PREFECT_HOME": str(home), "PYTHONPATH": str(REPO), "DO_NOT_TRACK": "1",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


def processes_with(home: Path) -> list[int]:
    """The live processes whose environment names this PREFECT_HOME (the servers a test started)."""
    needle = f"PREFECT_HOME={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_flows_run_on_the_server_started_before_prefect_was_imported_and_it_ends_with_them(tmp_path):
    home = tmp_path / "home"
    done = subprocess.run([sys.executable, "-c", PROBE], env=clean_env(home), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["ours"].startswith("http://127.0.0.1:") and seen["used"] == seen["ours"]
    assert seen["runs"] == 1
    assert "Starting temporary server" not in done.stderr  # Prefect started none of its own
    assert "Error logging to API" not in done.stderr  # logs were sent before the server stopped
    assert not alive(seen["early_pid"]) and processes_with(home) == []

    again = subprocess.run([sys.executable, "-c", PROBE], env=clean_env(home), capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "Cached" in again.stderr  # the same database and result storage: the task's cache holds
    assert json.loads(again.stdout.strip().splitlines()[-1])["runs"] == 2


def test_a_server_named_in_the_prefect_profile_wins_and_the_early_one_is_stopped(tmp_path):
    named = TemporaryServer(tmp_path / "named-home", 120).start()
    try:
        named.wait_ready()
        home = tmp_path / "home"
        home.mkdir()
        (home / "profiles.toml").write_text(f'active = "team"\n\n[profiles.team]\nPREFECT_API_URL = "{named.api_url}"\n')
        done = subprocess.run([sys.executable, "-c", PROBE], env=clean_env(home), capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        seen = json.loads(done.stdout.strip().splitlines()[-1])
        assert seen["ours"] is None and seen["used"] == named.api_url
        assert not alive(seen["early_pid"]) and processes_with(home) == []
    finally:
        named.stop()


def test_a_port_taken_before_the_server_binds_it_is_retried_on_another(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = TemporaryServer(tmp_path / "home", 120, port=port).start()
        try:
            server.wait_ready()
            assert server.port != port and server.attempts == 2 and healthy(server.api_url)
        finally:
            server.stop()
    assert processes_with(tmp_path / "home") == []


def test_a_server_that_cannot_start_is_an_error_naming_its_exit_and_log(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_API_DATABASE_CONNECTION_URL", f"sqlite+aiosqlite:///{tmp_path}/missing/dir/x.db")
    server = TemporaryServer(tmp_path / "home", 120).start()
    with pytest.raises(ServerError, match=r"exited with code \d+ before it answered; its log \(.*temporary-server"
                                          r"\.log\) ends: .*\S"):
        server.wait_ready()
    assert server.attempts == 1  # not a port clash: not retried


@pytest.mark.parametrize("argv, environ", [
    (["deps", "--check"], {}),
    (["deploy"], {}),
    (["--help"], {}),
    (["run", "--help"], {}),  # argparse prints the help and exits: no flow runs
    (["ablations", "-h"], {}),
    (["run"], {"PREFECT_API_URL": "http://127.0.0.1:4200/api"}),  # the team stack's env file names its server
])
def test_commands_that_run_no_flow_here_start_no_server(argv, environ, tmp_path):
    assert start_for(argv, {"PREFECT_HOME": str(tmp_path), **environ}) is None
    assert not (tmp_path / "temporary-server.log").exists()


def test_a_request_that_fails_its_checks_leaves_no_server_behind(tmp_path):
    """Through `python -m flows`: the sweep's report flow runs on the early server and fails (nothing finished);
    the command says why, and neither server nor flow process is left."""
    root = tmp_path / "project"
    shutil.copytree(STANDIN, root)
    (root / "stages.yaml").rename(root / "dvc.yaml")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["pipeline"]["ablations"] = {"worse": {"set": {"llm.steps": 2}}}
    params["profiles"]["tiny"]["train"] = {"common": {"seed": 0}}
    params["pipeline"]["ablation_sweep"] = {
        "benchmark": "synthetic", "seeds": [0], "claims": {"A3": {"ablation": "worse", "says": "steps help"}},
        "token_variants": ["baseline", "worse"], "token_seeds": [0], "breakdown": "family",
        "binding_families": ["colour_of_shape"], "skip_stages": []}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=root, check=True,
                   env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    home = tmp_path / "home"
    env = {**clean_env(home), "PYTHONPATH": f"{REPO}:{root}", "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/m.db"}
    done = subprocess.run([sys.executable, "-m", "flows", "ablations", "--report-only", "--project-dir", str(root)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "flows ablations: FAILED:" in done.stderr and "no finished run to report on" in done.stderr
    assert "temporary Prefect server on http://127.0.0.1:" in done.stderr
    assert "Starting temporary server" not in done.stderr
    assert (home / "temporary-server.log").is_file() and processes_with(home) == []


def test_a_flow_command_ended_by_sigterm_leaves_no_server_or_stage_behind(tmp_path):
    """`python -m flows run` sent SIGTERM while a stage runs (`kill PID`, a scheduler; the flow's process alone, not
    its group): the temporary server goes with it, as the stage does. Before, the server ran on (the flow's exit
    handlers do not run; the server now stops on its parent's death, so SIGKILL ends it the same way)."""
    root = tmp_path / "project"  # the stand-in pipeline with this checkout's flows/, so `run` runs it
    shutil.copytree(STANDIN, root)
    shutil.copytree(REPO / "flows", root / "flows", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "stages.yaml").rename(root / "dvc.yaml")
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=root, check=True,
                   env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    home = tmp_path / "home"
    env = {**clean_env(home), "PYTHONPATH": str(root), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/m.db",
           "STANDIN_SLEEP": "train:600"}
    flow = subprocess.Popen([sys.executable, "-m", "flows", "run"], cwd=root, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        stage_pid_file = root / "sleep-train.pid"
        deadline = time.monotonic() + 240
        while not stage_pid_file.is_file() and flow.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert stage_pid_file.is_file(), "the train stage never started"
        assert any(b"uvicorn" in Path(f"/proc/{pid}/cmdline").read_bytes() for pid in processes_with(home))
        os.kill(flow.pid, signal.SIGTERM)
        flow.wait(timeout=60)
        deadline = time.monotonic() + 20
        while processes_with(home) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert processes_with(home) == []
    finally:
        for pid in processes_with(home):
            os.kill(pid, signal.SIGKILL)
        if flow.poll() is None:
            flow.kill()
