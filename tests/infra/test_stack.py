"""The team stack against real servers: SeaweedFS S3, the MLflow tracking server, the Prefect server and worker.

One stack comes up for the module in a temporary folder on free loopback ports, through the same CLI that
`make stack-up` runs, and goes down at the end. Tests that stop or restart parts of it run last.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import psutil
import pytest
from botocore.exceptions import ClientError

from infra.stack.procs import ProcessTable, group_members, port_is_free
from infra.stack.stack import (DVC_BUCKET, GRPC_OFFSET, MLFLOW_BUCKET, SERVICES, StackConfig, configure_dvc_remote,
                               free_port_base, read_env_file, s3_client, tls_dir, up)
from tests.stack_cli import stack_cli

ROOT = Path(__file__).resolve().parents[2]
DVC = str(ROOT / ".venv" / "bin" / "dvc")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    cfg = StackConfig(tmp_path_factory.mktemp("stack"), free_port_base())
    done = stack_cli(cfg, "up")
    assert done.returncode == 0, f"stack up failed:\n{done.stdout}\n{done.stderr}"
    yield cfg
    down = stack_cli(cfg, "down")
    assert down.returncode == 0, f"stack down failed:\n{down.stdout}\n{down.stderr}"


@pytest.fixture
def stack_env(stack) -> dict[str, str]:
    """The environment a flow gets under `make run-stack`: the caller's plus the env file."""
    return {**os.environ, **read_env_file(stack.env_file)}


@pytest.fixture
def no_aws_env(monkeypatch):
    """An MLflow client with no S3 settings at all: artifacts must go through the server's proxy."""
    for key in list(os.environ):
        if key.startswith("AWS_") or key == "MLFLOW_S3_ENDPOINT_URL":
            monkeypatch.delenv(key)


def _objects(cfg: StackConfig, bucket: str, prefix: str = "") -> dict[str, bytes]:
    s3 = s3_client(cfg)
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for o in page.get("Contents", [])]
    return {key: s3.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}


def _md5(path: Path) -> str:
    import hashlib
    return hashlib.md5(path.read_bytes()).hexdigest()


def _dvc(repo: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([DVC, *args], cwd=repo, env=env, capture_output=True, text=True, timeout=300)


def _dvc_repo(path: Path, cfg: StackConfig) -> Path:
    path.mkdir()
    subprocess.run([DVC, "init", "--no-scm", "-q"], cwd=path, check=True)
    configure_dvc_remote(path, cfg)
    return path


def _log_run_with_artifact(cfg: StackConfig, artifact: Path) -> str:
    from hicom.tracking import Tracker
    with Tracker(tracking_uri=cfg.mlflow_url, experiment="stack-test", system_metrics=False) as tracker:
        tracker.log_params({"lr": 0.1})
        tracker.log_metrics({"loss": 1.5}, step=1)
        tracker.log_artifact(artifact, "reports")
    return tracker.run_id


def _register(cfg: StackConfig, name: str, run_id: str):
    from mlflow.tracking import MlflowClient
    client = MlflowClient(cfg.mlflow_url)
    client.create_registered_model(name)
    return client.create_model_version(name, source=f"runs:/{run_id}/reports", run_id=run_id)


def _kill_s3(cfg: StackConfig) -> None:
    """Crash SeaweedFS (SIGKILL, no clean shutdown) and wait until it is gone."""
    record = ProcessTable(cfg.root / "run").get("s3")
    os.killpg(record.pid, signal.SIGKILL)
    try:
        psutil.Process(record.pid).wait(timeout=30)
    except psutil.NoSuchProcess:
        pass
    assert not group_members(record.pid)


# ---- the stack as it runs ----

def test_env_file_points_flows_at_the_loopback_servers_and_is_private(stack):
    env = read_env_file(stack.env_file)
    assert oct(stack.env_file.stat().st_mode & 0o777) == "0o600"
    assert env["MLFLOW_TRACKING_URI"] == f"http://127.0.0.1:{stack.port('mlflow')}"
    assert env["PREFECT_API_URL"] == f"http://127.0.0.1:{stack.port('prefect')}/api"
    assert env["AWS_ENDPOINT_URL"] == env["MLFLOW_S3_ENDPOINT_URL"] == f"http://127.0.0.1:{stack.port('s3')}"
    assert env["AWS_ACCESS_KEY_ID"] and len(env["AWS_SECRET_ACCESS_KEY"]) >= 32
    done = subprocess.run(["bash", "-c", f"set -a; . {stack.env_file}; set +a; echo $MLFLOW_TRACKING_URI"],
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip() == env["MLFLOW_TRACKING_URI"]


def test_every_stack_process_listens_on_loopback_only(stack):
    table = ProcessTable(stack.root / "run")
    pids = {pid for name in SERVICES for pid in group_members(table.get(name).pid)}
    listeners = [c for c in psutil.net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN and c.pid in pids]
    assert {c.laddr.port for c in listeners} >= {stack.port("s3"), stack.port("mlflow"), stack.port("prefect")}
    assert {c.laddr.ip for c in listeners} == {"127.0.0.1"}


def test_second_up_starts_nothing_and_keeps_the_same_processes(stack):
    table = ProcessTable(stack.root / "run")
    before = {name: table.get(name).pid for name in SERVICES}
    done = stack_cli(stack, "up")
    assert done.returncode == 0, done.stderr
    assert "nothing new started" in done.stdout
    assert {name: table.get(name).pid for name in SERVICES} == before


def test_status_reports_every_service_healthy_and_every_bucket_taking_writes(stack):
    done = stack_cli(stack, "status")
    assert done.returncode == 0, done.stdout
    assert [line.split()[0] for line in done.stdout.splitlines() if "healthy" in line] == \
        ["s3", "mlflow", "artifacts", "prefect", "worker"]
    assert [line.split() for line in done.stdout.splitlines() if line.startswith("writes")] == \
        [["writes", "every", "bucket", "taken"]]


def test_prefect_ui_is_served_and_talks_to_the_stacks_api(stack):
    """The dashboard's page loads and its settings name this stack's API (not Prefect's default port 4200), on
    whatever port base the stack runs."""
    ui = f"http://127.0.0.1:{stack.port('prefect')}"
    with urllib.request.urlopen(f"{ui}/", timeout=10) as page:
        assert page.status == 200 and b"<html" in page.read().lower()
    with urllib.request.urlopen(f"{ui}/ui-settings", timeout=10) as response:
        settings = json.loads(response.read())
    assert settings["api_url"] == stack.prefect_api_url
    with urllib.request.urlopen(f"{settings['api_url']}/health", timeout=10) as health:
        assert health.status == 200


def test_up_on_taken_ports_fails_naming_the_port_and_the_setting(tmp_path):
    other = StackConfig(tmp_path / "other", free_port_base())
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", other.port("s3")))
        squatter.listen()
        with pytest.raises(RuntimeError, match=rf"{other.port('s3')}.*STACK_PORT_BASE"):
            up(other, dvc_repo=None, out=lambda _: None)
    assert not ProcessTable(other.root / "run").names()


def test_anonymous_s3_requests_are_refused_and_signed_ones_work(stack):
    anonymous = s3_client(stack, signed=False)
    for call in (lambda: anonymous.list_buckets(),
                 lambda: anonymous.list_objects_v2(Bucket=DVC_BUCKET),
                 lambda: anonymous.put_object(Bucket=DVC_BUCKET, Key="anon.txt", Body=b"x"),
                 lambda: anonymous.create_bucket(Bucket="anonymous-bucket")):
        with pytest.raises(ClientError) as refused:
            call()
        assert refused.value.response["Error"]["Code"] == "AccessDenied"
    signed = s3_client(stack)
    assert {MLFLOW_BUCKET, DVC_BUCKET, "prefect"} <= {b["Name"] for b in signed.list_buckets()["Buckets"]}
    signed.put_object(Bucket=DVC_BUCKET, Key="signed/probe.txt", Body=b"signed")
    assert signed.get_object(Bucket=DVC_BUCKET, Key="signed/probe.txt")["Body"].read() == b"signed"
    with pytest.raises(ClientError):  # nothing anonymous reads what the signed client wrote
        anonymous.get_object(Bucket=DVC_BUCKET, Key="signed/probe.txt")


def _unsigned(method: str, url: str, data: bytes | None = None) -> int | str:
    """An HTTP request without any credentials: its status, or the error that ended it (gRPC ports reset)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, method=method), timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError as e:
        return type(e).__name__


def _tls_context(cfg: StackConfig, *, client_cert: bool) -> ssl.SSLContext:
    """Trusts the stack's CA; with client_cert, presents the stack's client certificate."""
    context = ssl.create_default_context(cafile=str(tls_dir(cfg) / "ca.crt"))
    if client_cert:
        context.load_cert_chain(tls_dir(cfg) / "client.crt", tls_dir(cfg) / "client.key")
    return context


def _assign(cfg: StackConfig, scheme: str, context: ssl.SSLContext | None = None) -> str | None:
    """The master's /dir/assign (a fresh volume file id with its write token): the fid, or None if refused."""
    try:
        with urllib.request.urlopen(f"{scheme}://127.0.0.1:{cfg.port('master')}/dir/assign", timeout=10,
                                    context=context) as response:
            return json.loads(response.read()).get("fid")
    except (urllib.error.HTTPError, OSError, ValueError):
        return None


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes.fromhex("000000040000000000")  # + empty SETTINGS


def _grpc_answers(port: int, context: ssl.SSLContext | None = None) -> bool:
    """Whether the port speaks HTTP/2 (gRPC's transport) to this client: it answers the connection preface with
    a SETTINGS frame. No context: plaintext (h2c), as an insecure gRPC channel connects; else TLS with ALPN h2."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            conn = raw
            if context is not None:
                context.set_alpn_protocols(["h2"])
                conn = context.wrap_socket(raw, server_hostname="127.0.0.1")
            conn.sendall(H2_PREFACE)
            head = b""
            while len(head) < 9:
                chunk = conn.recv(9 - len(head))
                if not chunk:
                    return False
                head += chunk
            return head[3] == 0x04  # frame type SETTINGS
    except (OSError, ssl.SSLError):
        return False


def test_no_seaweedfs_port_serves_or_changes_objects_without_credentials(stack):
    """Every port `weed` listens on (S3, master, volume, filer, admin and their gRPC ports), GET/PUT/DELETE of a
    bucket's object (by its filer path and by a volume file id) without credentials: none succeeds, and the
    object is unchanged in the bucket with nothing new beside it. The master hands out file ids (with their
    volume write tokens) only over mutual TLS, and every gRPC port takes only TLS clients with the stack's
    certificate: a plain gRPC connection and a TLS one without a client certificate get no HTTP/2 session."""
    signed = s3_client(stack)
    signed.put_object(Bucket=DVC_BUCKET, Key="sealed/secret.txt", Body=b"secret")
    weed = ProcessTable(stack.root / "run").get("s3").pid
    ports = sorted({c.laddr.port for c in psutil.net_connections(kind="inet")
                    if c.status == psutil.CONN_LISTEN and c.pid in group_members(weed)})
    assert {stack.port(c) for c in ("s3", "volume", "filer")} <= set(ports)
    assert _assign(stack, "http") is None
    assert _assign(stack, "https", _tls_context(stack, client_cert=False)) is None
    fid = _assign(stack, "https", _tls_context(stack, client_cert=True))  # the stack's own certificate: a file id
    assert fid, "the master refused a client with the stack's certificate"
    answers = {}
    for port in ports:
        for path in (f"/buckets/{DVC_BUCKET}/sealed/secret.txt", f"/{DVC_BUCKET}/sealed/secret.txt", f"/{fid}"):
            url = f"http://127.0.0.1:{port}{path}"
            answers[f"GET {url}"] = _unsigned("GET", url)
            answers[f"PUT {url}"] = _unsigned("PUT", url, b"anonymous")
            answers[f"POST {url}"] = _unsigned("POST", url, b"anonymous")
            answers[f"DELETE {url}"] = _unsigned("DELETE", url)
    assert {k: v for k, v in answers.items() if isinstance(v, int) and v < 300} == {}
    grpc_ports = [stack.port(c) + GRPC_OFFSET for c in ("s3", "master", "volume", "filer", "admin")]
    assert set(grpc_ports) <= set(ports)
    assert {p: _grpc_answers(p) for p in grpc_ports} == dict.fromkeys(grpc_ports, False)
    assert {p: _grpc_answers(p, _tls_context(stack, client_cert=False)) for p in grpc_ports} == \
        dict.fromkeys(grpc_ports, False)
    assert {p: _grpc_answers(p, _tls_context(stack, client_cert=True)) for p in grpc_ports} == \
        dict.fromkeys(grpc_ports, True)  # the check itself works: the stack's certificate gets a session
    assert signed.get_object(Bucket=DVC_BUCKET, Key="sealed/secret.txt")["Body"].read() == b"secret"
    assert list(_objects(stack, DVC_BUCKET, "sealed/")) == ["sealed/secret.txt"]
    credentials = stack.root / "credentials"
    assert oct((credentials / "security.toml").stat().st_mode & 0o777) == "0o600"
    assert {oct(key.stat().st_mode & 0o777) for key in (credentials / "tls").glob("*.key")} == {"0o600"}
    assert not (credentials / "tls" / "ca.key").exists()


def test_mlflow_artifacts_land_in_s3_through_the_server_and_the_model_registers(stack, tmp_path, no_aws_env):
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"accuracy": 0.5}))
    run_id = _log_run_with_artifact(stack, report)
    stored = {k: v for k, v in _objects(stack, MLFLOW_BUCKET, "artifacts/").items() if run_id in k}
    assert list(stored.values()) == [report.read_bytes()]
    assert next(iter(stored)).endswith(f"{run_id}/artifacts/reports/report.json")
    version = _register(stack, "stack-test-model", run_id)
    from mlflow.tracking import MlflowClient
    found = MlflowClient(stack.mlflow_url).get_model_version("stack-test-model", version.version)
    assert (found.run_id, found.status) == (run_id, "READY")


def test_dvc_push_and_pull_round_trip_through_the_stack_remote(stack, stack_env, tmp_path):
    repo = _dvc_repo(tmp_path / "repo", stack)
    data = repo / "data"
    data.mkdir()
    files = {f"shard{i}.bin": os.urandom(50_000 + i) for i in range(3)}
    for name, content in files.items():
        (data / name).write_bytes(content)
    assert _dvc(repo, stack_env, "add", "-q", "data").returncode == 0
    pushed = _dvc(repo, stack_env, "push", "-r", "stack")
    assert pushed.returncode == 0, pushed.stderr
    assert len(_objects(stack, DVC_BUCKET, "hicom/files/md5/")) >= len(files)
    committed = (repo / ".dvc" / "config").read_text()
    assert stack_env["AWS_SECRET_ACCESS_KEY"] not in committed + (repo / ".dvc" / "config.local").read_text()

    clone = _dvc_repo(tmp_path / "clone", stack)  # a fresh checkout: only data.dvc travels
    (clone / "data.dvc").write_text((repo / "data.dvc").read_text())
    pulled = _dvc(clone, stack_env, "pull", "-r", "stack")
    assert pulled.returncode == 0, pulled.stderr
    assert {p.name: p.read_bytes() for p in (clone / "data").iterdir()} == files


def test_dvc_push_with_a_wrong_key_is_refused(stack, stack_env, tmp_path):
    repo = _dvc_repo(tmp_path / "repo", stack)
    (repo / "model.bin").write_bytes(os.urandom(1000))
    _dvc(repo, stack_env, "add", "-q", "model.bin")
    wrong = {**stack_env, "AWS_SECRET_ACCESS_KEY": "not-the-secret", "AWS_EC2_METADATA_DISABLED": "true"}
    refused = _dvc(repo, wrong, "push", "-r", "stack")
    assert refused.returncode != 0
    assert "SignatureDoesNotMatch" in refused.stderr or "Forbidden" in refused.stderr, refused.stderr
    # The whole key: other tests push to this bucket too, and 1 in 256 of their objects shares the 2-digit folder.
    digest = _md5(repo / "model.bin")
    assert not _objects(stack, DVC_BUCKET, f"hicom/files/md5/{digest[:2]}/{digest[2:]}")


def _standin_project(path: Path, cfg: StackConfig, env: dict) -> Path:
    """The flow's stand-in pipeline (tests/flow_standin) as a DVC project whose default remote is a local
    folder (as `make run` pushes to .dvc/remote) and which knows the stack's remote."""
    shutil.copytree(ROOT / "tests" / "flow_standin", path)
    (path / "stages.yaml").rename(path / "dvc.yaml")
    subprocess.run([DVC, "init", "--no-scm", "-q"], cwd=path, check=True, env=env)
    subprocess.run([DVC, "remote", "add", "-d", "local", str(path.parent / "local-remote")], cwd=path, check=True,
                   env=env)
    configure_dvc_remote(path, cfg)
    return path


def _retrain(project: Path, env: dict, home: Path) -> dict:
    """The retrain flow in a fresh process, as `make run` starts it; Prefect's home and result storage in `home`
    (one machine's, shared by its runs). Returns the flow's summary."""
    env = {**env, "PYTHONPATH": f"{project}{os.pathsep}{ROOT}", "PREFECT_HOME": str(home / "prefect-home"),
           "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(home / "results")}
    script = ("import json, sys; from flows.retrain import retrain; "
              "print('SUMMARY', json.dumps(retrain(project_dir=sys.argv[1])))")
    done = subprocess.run([sys.executable, "-c", script, str(project)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(done.stdout.split("SUMMARY ", 1)[1].splitlines()[0])


def test_the_retrain_flow_runs_through_the_stack_by_environment_alone(stack, stack_env, tmp_path):
    """The flow's stand-in pipeline (tests/flow_standin) with nothing but the env file pointing it at the stack:
    the flow run lands on the Prefect server, its MLflow run on the tracking server (artifacts in S3), the
    stages' DVC outs in the S3 remote. (The stand-in's register stage is a stub here: registration on the server
    is checked above with the MLflow client, and by the stand-in's MLflow mode in the next test.)"""
    project = _standin_project(tmp_path / "project", stack, stack_env)
    summary = _retrain(project, stack_env, tmp_path)
    assert set(summary["stages"].values()) == {"ran"}
    assert summary["results_not_stored"] == []  # in the stack's S3, where the next run and the worker find them

    from mlflow.tracking import MlflowClient
    client = MlflowClient(stack.mlflow_url)
    experiments = [e.experiment_id for e in client.search_experiments()]
    [parent] = client.search_runs(experiments, f"tags.`pipeline.run` = '{summary['run']}'")
    assert parent.data.tags["dvc.remote"] == "stack: s3://dvc/hicom"
    lock = (project / "dvc.lock").read_text()
    stored_lock = [v for k, v in _objects(stack, MLFLOW_BUCKET).items()
                   if parent.info.run_id in k and k.endswith("dvc/dvc.lock")]
    assert stored_lock == [lock.encode()]  # the parent run's artifact, in S3 through the server
    dvc_objects = _objects(stack, DVC_BUCKET, "hicom/files/md5/")
    assert any(key.split("md5/")[1].replace("/", "") in lock for key in dvc_objects)
    request = urllib.request.Request(f"{stack.prefect_api_url}/flow_runs/filter", data=b"{}",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        flow_runs = json.loads(response.read())
    assert "COMPLETED" in {run["state_type"] for run in flow_runs}


def test_run_then_run_stack_on_a_fresh_stack_registers_there_and_pushes_every_out(stack, stack_env, tmp_path):
    """A run on a local MLflow store and the local DVC remote, then `make run-stack`, both seeing the same stage
    results (the stack's S3): the cached training is reused, but the model is registered on the stack's MLflow
    (champion v1 there) and every out, cached or not, is on the stack's remote (`dvc status -c -r stack` in
    sync), as the summary says."""
    local_env = {k: v for k, v in stack_env.items() if k != "HICOM_DVC_REMOTE"}
    local_env.update(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}", STANDIN_REGISTRY="mlflow")
    project = _standin_project(tmp_path / "project", stack, local_env)
    first = _retrain(project, local_env, tmp_path)
    assert set(first["stages"].values()) == {"ran"}
    assert first["revision"]["remote_status"] == "in sync"

    second = _retrain(project, {**stack_env, "STANDIN_REGISTRY": "mlflow"}, tmp_path)
    assert second["stages"] == {"prepare": "cached", "train": "cached", "evaluate@synthetic": "cached",
                                "register": "ran", "promote": "ran", "report": "ran"}
    from mlflow.tracking import MlflowClient
    champion = MlflowClient(stack.mlflow_url).get_model_version_by_alias("standin-model", "champion")
    assert champion.version == "1" and second["model"]["alias"] == "champion"
    status = _dvc(project, stack_env, "status", "-c", "-r", "stack")
    assert status.returncode == 0 and "in sync" in status.stdout, status.stdout + status.stderr
    assert second["revision"]["remote_status"] == "in sync"
    assert "dvc status -c (that remote): in sync" in second["lines"][-1]


def test_a_deployment_run_on_the_stacks_worker_reuses_what_run_stack_computed(stack, stack_env, tmp_path):
    """`make run-stack`, then the scheduled deployment triggered on the stack's worker (its own Prefect home, its
    own process): every unchanged stage is cached, because stage results live in the stack's S3, not in one
    machine's Prefect home. calls.log (the stand-in's record of what really ran) gains only the actions."""
    project = _standin_project(tmp_path / "project", stack, stack_env)
    assert set(_retrain(project, stack_env, tmp_path)["stages"].values()) == {"ran"}
    before = (project / "calls.log").read_text().splitlines()
    assert any(key.startswith("results/") for key in _objects(stack, "prefect", "results/"))

    script = """
import sys
from prefect import flow
from prefect.deployments import run_deployment
root, project, pool = sys.argv[1:]
deployed = flow.from_source(source=root, entrypoint="flows.retrain.retrain")  # as prefect.yaml
deployed.deploy(name="stack-test", work_pool_name=pool, parameters={"project_dir": project}, build=False,
                push=False, job_variables={"env": {"PYTHONPATH": project + ":" + root}})
print("STATE", run_deployment("retrain/stack-test", timeout=500).state.type.value)
"""
    env = {**stack_env, "PYTHONPATH": str(ROOT), "PREFECT_HOME": str(tmp_path / "deployer-home")}
    done = subprocess.run([sys.executable, "-c", script, str(ROOT), str(project), stack.work_pool], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=560)
    assert "STATE COMPLETED" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:] + \
        (stack.logs / "worker.log").read_text()[-3000:]
    ran = [line.split()[0] for line in (project / "calls.log").read_text().splitlines()[len(before):]]
    assert ran == ["promote", "pipeline-report"]


# ---- failures and restarts (these stop parts of the stack: they run last) ----

def test_s3_crash_fails_uploads_clearly_and_a_rerun_after_stack_up_loses_nothing(stack, stack_env, tmp_path,
                                                                                 no_aws_env, monkeypatch):
    from mlflow.tracking import MlflowClient
    repo = _dvc_repo(tmp_path / "repo", stack)
    (repo / "data").mkdir()
    (repo / "data" / "before.bin").write_bytes(os.urandom(20_000))
    _dvc(repo, stack_env, "add", "-q", "data")
    assert _dvc(repo, stack_env, "push", "-r", "stack").returncode == 0
    objects_before = _objects(stack, DVC_BUCKET) | _objects(stack, MLFLOW_BUCKET)
    client = MlflowClient(stack.mlflow_url)
    # its own experiment: before, it took the one an earlier test had made, and failed when run without it
    run_id = client.create_run(client.create_experiment("stack-s3-crash")).info.run_id
    checkpoint = tmp_path / "checkpoint.bin"
    checkpoint.write_bytes(os.urandom(30_000))

    _kill_s3(stack)
    (repo / "data" / "after.bin").write_bytes(os.urandom(20_000))
    _dvc(repo, stack_env, "add", "-q", "data")
    failed_push = _dvc(repo, stack_env, "push", "-r", "stack")
    assert failed_push.returncode != 0
    assert f"Could not connect to the endpoint URL: \"{stack.s3_url}" in failed_push.stderr
    status = stack_cli(stack, "status")  # MLflow itself runs; its artifact path, S3, does not
    assert status.returncode != 0
    lines = {line.split()[0]: line for line in status.stdout.splitlines() if line.strip()}
    assert lines["s3"].split()[1] == "stopped" and lines["mlflow"].endswith(" healthy"), status.stdout
    assert "s3://mlflow/artifacts" in lines["artifacts"] and "NOT ANSWERING" in lines["artifacts"], status.stdout
    from hicom.tracking import ArtifactStoreError, Tracker
    for key, value in read_env_file(stack.env_file).items():  # the clients' retry settings, as flows get them
        if key.startswith("MLFLOW_"):
            monkeypatch.setenv(key, value)
    started = time.monotonic()
    with pytest.raises(ArtifactStoreError, match=rf"could not write to its artifact store \(S3 at {stack.s3_url}\)"):
        with Tracker(tracking_uri=stack.mlflow_url, resume_run_id=run_id, system_metrics=False) as tracker:
            tracker.log_artifact(checkpoint)
    assert time.monotonic() - started < 60  # not MLflow's ~5 minutes of retries
    for key in read_env_file(stack.env_file):
        monkeypatch.delenv(key, raising=False)

    restarted = stack_cli(stack, "up")
    assert restarted.returncode == 0, restarted.stderr
    assert "(s3 started)" in restarted.stdout  # only the crashed server was started again
    assert _dvc(repo, stack_env, "push", "-r", "stack").returncode == 0
    client.log_artifact(run_id, str(checkpoint))
    objects_after = _objects(stack, DVC_BUCKET) | _objects(stack, MLFLOW_BUCKET)
    assert {k: v for k, v in objects_after.items() if k in objects_before} == objects_before
    assert checkpoint.read_bytes() in [v for k, v in objects_after.items() if run_id in k]
    shutil.rmtree(repo / ".dvc" / "cache")
    shutil.rmtree(repo / "data")
    assert _dvc(repo, stack_env, "pull", "-r", "stack").returncode == 0
    assert sorted(p.name for p in (repo / "data").iterdir()) == ["after.bin", "before.bin"]


def test_restart_keeps_runs_model_versions_and_objects_and_down_leaves_nothing_running(stack, tmp_path,
                                                                                      no_aws_env):
    from mlflow.tracking import MlflowClient
    report = tmp_path / "eval.json"
    report.write_text(uuid.uuid4().hex)
    run_id = _log_run_with_artifact(stack, report)
    name = f"restart-{uuid.uuid4().hex[:8]}"
    version = _register(stack, name, run_id).version
    objects = _objects(stack, MLFLOW_BUCKET) | _objects(stack, DVC_BUCKET)
    table = ProcessTable(stack.root / "run")
    groups = {name: table.get(name).pid for name in SERVICES}
    members = {pid for pgid in groups.values() for pid in group_members(pgid)}

    down = stack_cli(stack, "down")
    assert down.returncode == 0, down.stderr
    assert [pid for pid in members if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"] == []
    assert all(port_is_free(port) for port in stack.all_ports())
    assert table.names() == []

    again = stack_cli(stack, "up")
    assert again.returncode == 0, again.stderr
    client = MlflowClient(stack.mlflow_url)
    run = client.get_run(run_id)
    assert (run.data.params, run.data.metrics) == ({"lr": "0.1"}, {"loss": 1.5})
    assert client.get_model_version(name, version).run_id == run_id
    downloaded = client.download_artifacts(run_id, "reports/eval.json", str(tmp_path / "back"))
    assert Path(downloaded).read_text() == report.read_text()
    assert _objects(stack, MLFLOW_BUCKET) | _objects(stack, DVC_BUCKET) == objects
