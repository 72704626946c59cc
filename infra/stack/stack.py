"""The team stack on this host: SeaweedFS (S3), an MLflow tracking server, a Prefect server and a process worker.

Everything binds to 127.0.0.1 and keeps its data under one folder (default `.stack/`), so a restart keeps every
run, model version and object. `up` is idempotent and returns once each service answers; `down` stops exactly
the process groups `up` recorded. Flows find the stack only through the environment file `up` writes
(`<dir>/env`: MLFLOW_TRACKING_URI, PREFECT_API_URL, AWS_*), so the same code runs with or without it.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from infra.stack.procs import ProcessTable, port_is_free, say, wait_until, write_atomic

PROJECT_ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
REGION = "us-east-1"
MLFLOW_BUCKET = "mlflow"
DVC_BUCKET = "dvc"
PREFECT_BUCKET = "prefect"  # the flow's task results (their cache), shared by every worker and `make run-stack`
BUCKETS = (MLFLOW_BUCKET, DVC_BUCKET, PREFECT_BUCKET)
DVC_REMOTE = "stack"
DVC_REMOTE_URL = f"s3://{DVC_BUCKET}/hicom"
DEFAULT_PORT_BASE = 27100
SERVICES = ("s3", "mlflow", "prefect", "worker")  # start order; stopped in reverse

# Offsets from the port base. SeaweedFS runs five components, each with an HTTP and a gRPC port (+10).
PORT_OFFSETS = {"s3": 0, "master": 1, "volume": 2, "filer": 3, "admin": 4, "mlflow": 5, "prefect": 6}
GRPC_OFFSET = 10

# SeaweedFS volumes (its unit of storage: each bucket needs at least one) of this size, not `weed mini`'s 1% of
# the disk's total size. Mini allows as many volumes as fit in the free space: on a big disk with a few GiB free,
# 1-GiB volumes run out before every bucket has one, and that bucket then refuses every write.
VOLUME_SIZE_MB = 128
# The write that checks each bucket: larger than what a filer might keep inline, answered within the timeout.
PROBE_BYTES = 256 * 1024
PROBE_TIMEOUT_S = 15

# Seconds until a service must answer (2 shared cores: MLflow needs ~15 s, Prefect ~20 s on a new DB).
STARTUP_TIMEOUT_S = {"s3": 60, "mlflow": 180, "prefect": 180, "worker": 120}
# MLflow clients on the stack: a few retries a few seconds apart, then a clear error (MLflow's defaults retry
# for ~5 minutes); the timeout per request leaves room for a large checkpoint upload.
MLFLOW_CLIENT = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "300"}
QUIET = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "DVC_NO_ANALYTICS": "1",
         "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


@dataclass(frozen=True)
class StackConfig:
    root: Path
    port_base: int = DEFAULT_PORT_BASE
    work_pool: str = "hicom-process"
    bin_dir: Path = Path(sys.executable).parent  # the venv's bin: weed, mlflow, prefect, dvc

    @classmethod
    def from_environment(cls, root: str | None = None, port_base: int | None = None,
                         work_pool: str | None = None) -> StackConfig:
        """Arguments first, then $STACK_DIR, $STACK_PORT_BASE, $STACK_WORK_POOL, then the defaults."""
        root = root or os.environ.get("STACK_DIR") or str(PROJECT_ROOT / ".stack")
        base = port_base or int(os.environ.get("STACK_PORT_BASE") or DEFAULT_PORT_BASE)
        pool = work_pool or os.environ.get("STACK_WORK_POOL") or "hicom-process"
        if not 1024 <= base <= 65535 - GRPC_OFFSET - max(PORT_OFFSETS.values()):
            raise ValueError(f"port base {base} leaves the port range")
        return cls(Path(root).resolve(), base, pool)

    def port(self, component: str) -> int:
        return self.port_base + PORT_OFFSETS[component]

    def all_ports(self) -> list[int]:
        http = [self.port(c) for c in PORT_OFFSETS]
        grpc = [self.port(c) + GRPC_OFFSET for c in ("s3", "master", "volume", "filer", "admin")]
        return http + grpc

    @property
    def s3_url(self) -> str:
        return f"http://{HOST}:{self.port('s3')}"

    @property
    def mlflow_url(self) -> str:
        return f"http://{HOST}:{self.port('mlflow')}"

    @property
    def prefect_api_url(self) -> str:
        return f"http://{HOST}:{self.port('prefect')}/api"

    @property
    def prefect_ui_url(self) -> str:
        return f"http://{HOST}:{self.port('prefect')}"

    @property
    def env_file(self) -> Path:
        return self.root / "env"

    @property
    def logs(self) -> Path:
        return self.root / "logs"


def free_port_base(start: int = 20000, stop: int = 32000, step: int = 20) -> int:
    """A port base whose every stack port is free now (for tests and second stacks on one host)."""
    import random
    bases = list(range(start, stop, step))
    random.shuffle(bases)
    for base in bases:
        if all(port_is_free(p) for p in StackConfig(Path("."), base).all_ports()):
            return base
    raise RuntimeError(f"no free port base in {start}..{stop}")


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str


def credentials(cfg: StackConfig) -> Credentials:
    """The stack's S3 key pair, generated once into `<dir>/credentials/s3.json` (SeaweedFS's identities file).

    No `anonymous` identity is defined: SeaweedFS then refuses every unsigned request.
    """
    path = cfg.root / "credentials" / "s3.json"
    if not path.exists():
        identity = {"name": "hicom-stack",
                    "credentials": [{"accessKey": f"hicom{secrets.token_hex(8)}",
                                     "secretKey": secrets.token_hex(24)}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"]}
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        write_atomic(path, json.dumps({"identities": [identity]}, indent=2), mode=0o600)
    keys = json.loads(path.read_text())["identities"][0]["credentials"][0]
    return Credentials(keys["accessKey"], keys["secretKey"])


# SeaweedFS components that serve gRPC (each gets its own certificate) and `client`, the identity the stack's own
# tools use to reach the master's HTTPS API.
TLS_COMPONENTS = ("master", "volume", "filer", "s3", "admin", "client")


def tls_dir(cfg: StackConfig) -> Path:
    return cfg.root / "credentials" / "tls"


def tls_files(cfg: StackConfig) -> None:
    """The stack's private CA (`ca.crt`; its key is discarded once the certificates are signed) and one
    certificate/key per component, generated once: every gRPC port and the master's HTTP API take only TLS clients
    that present a certificate of this CA (SeaweedFS's mutual TLS, security.toml `[grpc]`, `[https.master]`)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder = tls_dir(cfg)
    if (folder / "ca.crt").exists() and all((folder / f"{c}.key").exists() for c in TLS_COMPONENTS):
        return
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=3650)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"hicom-stack-ca-{secrets.token_hex(4)}")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    for component in TLS_COMPONENTS:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"hicom-stack-{component}")]))
                .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(start).not_valid_after(end)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                            x509.IPAddress(ipaddress.ip_address(HOST))]),
                               critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        write_atomic(folder / f"{component}.crt", cert.public_bytes(serialization.Encoding.PEM).decode())
        write_atomic(folder / f"{component}.key",
                     key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()).decode(), mode=0o600)
    write_atomic(folder / "ca.crt", ca.public_bytes(serialization.Encoding.PEM).decode())  # last: marks "done"


def security_config(cfg: StackConfig) -> Path:
    """SeaweedFS's own `security.toml` (read by master, volume and filer from `-config_dir`), generated once with
    random JWT keys: the volume servers take reads and writes only with a token the master signs, the filer only
    with one the S3 gateway signs; the filer UI and directory listings are off. Every gRPC port (master, volume,
    filer, S3, admin) is mutual TLS with the stack's CA (`tls_files`), and the master's HTTP API (which hands out
    write tokens, /dir/assign) is HTTPS that requires a client certificate of that CA. So no port but S3 serves or
    changes an object without credentials."""
    path = cfg.root / "credentials" / "security.toml"
    tls_files(cfg)
    if not path.exists() or "[https.master]" not in path.read_text():  # a stack from before TLS: JWT keys renew
        sections = {"jwt.signing": "volume writes (tokens from the master)",
                    "jwt.signing.read": "volume reads (tokens from the master)",
                    "jwt.filer_signing": "filer writes (tokens from the S3 gateway)",
                    "jwt.filer_signing.read": "filer reads (tokens from the S3 gateway)"}
        lines = ["# Written once by `make stack-up` (infra/stack): SeaweedFS's security configuration.",
                 "[access]", "ui = false", "", "[filer.expose_directory_metadata]", "enabled = false", ""]
        for section, what in sections.items():
            lines += [f"# {what}", f"[{section}]", f'key = "{secrets.token_hex(32)}"', "expires_after_seconds = 60",
                      ""]
        tls = tls_dir(cfg)
        lines += ["# gRPC: mutual TLS on every port, certificates of the stack's CA only", "[grpc]",
                  f'ca = "{tls / "ca.crt"}"', ""]
        for component in TLS_COMPONENTS:
            section = "grpc.client" if component == "client" else f"grpc.{component}"
            lines += [f"[{section}]", f'cert = "{tls / f"{component}.crt"}"', f'key = "{tls / f"{component}.key"}"',
                      ""]
        lines += ["# the master's HTTP API (it signs volume write tokens): HTTPS, client certificate required",
                  "[https.master]", f'cert = "{tls / "master.crt"}"', f'key = "{tls / "master.key"}"',
                  f'ca = "{tls / "ca.crt"}"', ""]
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        write_atomic(path, "\n".join(lines), mode=0o600)
    return path


def client_env(cfg: StackConfig) -> dict[str, str]:
    """What a flow, a stage or DVC needs to use the stack: the content of the env file."""
    creds = credentials(cfg)
    return {
        "STACK_DIR": str(cfg.root),
        "MLFLOW_TRACKING_URI": cfg.mlflow_url,
        "PREFECT_API_URL": cfg.prefect_api_url,
        "AWS_ACCESS_KEY_ID": creds.access_key,
        "AWS_SECRET_ACCESS_KEY": creds.secret_key,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL": cfg.s3_url,
        "MLFLOW_S3_ENDPOINT_URL": cfg.s3_url,
        "HICOM_DVC_REMOTE": DVC_REMOTE,
        "HICOM_PREFECT_RESULTS": f"s3://{PREFECT_BUCKET}/results",
        **MLFLOW_CLIENT,
        **QUIET,
    }


def write_env_file(cfg: StackConfig) -> Path:
    """`<dir>/env`: KEY=value lines for `set -a; . FILE` (values are checked to need no quoting). Mode 0600."""
    lines = ["# Written by `make stack-up` (infra/stack). Load with: set -a; . THIS_FILE; set +a"]
    for key, value in client_env(cfg).items():
        if not re.fullmatch(r"[A-Za-z0-9_./:@-]*", value):
            raise ValueError(f"{key}={value!r} would need shell quoting; move the stack to a plainer path")
        lines.append(f"{key}={value}")
    write_atomic(cfg.env_file, "\n".join(lines) + "\n", mode=0o600)
    return cfg.env_file


def read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in Path(path).read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value
    return env


def _base_env(cfg: StackConfig) -> dict[str, str]:
    """The caller's environment without a stack's client settings (a server must not point at itself)."""
    env = {k: v for k, v in os.environ.items() if k not in client_env(cfg) and not k.startswith("PREFECT_")}
    env["PATH"] = f"{cfg.bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return {**env, **QUIET, "PYTHONUNBUFFERED": "1"}  # logs as they happen


def _commands(cfg: StackConfig) -> dict[str, tuple[list[str], dict[str, str], int]]:
    """Per service: argv, environment, and the signal that stops it (the Prefect worker ignores SIGTERM)."""
    creds = credentials(cfg)
    base = _base_env(cfg)
    s3_data = cfg.root / "s3"
    weed_ports = []
    for component in ("s3", "master", "volume", "filer", "admin"):
        port = cfg.port(component)
        weed_ports += [f"-{component}.port={port}", f"-{component}.port.grpc={port + GRPC_OFFSET}"]
    weed = [str(cfg.bin_dir / "weed"), f"-config_dir={security_config(cfg).parent}", "mini", f"-dir={s3_data}", f"-master.dir={s3_data / 'master'}",
            f"-ip={HOST}", f"-ip.bind={HOST}", f"-s3.config={cfg.root / 'credentials' / 's3.json'}",
            "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-master.telemetry=false", f"-master.volumeSizeLimitMB={VOLUME_SIZE_MB}",
            f"-bucket={','.join(BUCKETS)}",
            f"-filer.localSocket={cfg.root / 'run' / 'filer.sock'}",
            f"-s3.localSocket={cfg.root / 'run' / 's3.sock'}", *weed_ports]
    mlflow = [str(cfg.bin_dir / "mlflow"), "server", "--host", HOST, "--port", str(cfg.port("mlflow")),
              "--workers", "1", "--backend-store-uri", f"sqlite:///{cfg.root / 'mlflow' / 'mlflow.db'}",
              "--serve-artifacts", "--artifacts-destination", f"s3://{MLFLOW_BUCKET}/artifacts"]
    mlflow_env = {**base, "AWS_ACCESS_KEY_ID": creds.access_key, "AWS_SECRET_ACCESS_KEY": creds.secret_key,
                  "AWS_DEFAULT_REGION": REGION, "MLFLOW_S3_ENDPOINT_URL": cfg.s3_url,
                  "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no huey job runner processes
    prefect = [str(cfg.bin_dir / "prefect"), "server", "start", "--host", HOST, "--port", str(cfg.port("prefect"))]
    # The UI asks /ui-settings where its API is; unset, Prefect answers with its default port (4200).
    prefect_env = {**base, "PREFECT_HOME": str(cfg.root / "prefect" / "server"),
                   "PREFECT_SERVER_UI_API_URL": cfg.prefect_api_url,
                   "PREFECT_SERVER_DATABASE_CONNECTION_URL":
                       f"sqlite+aiosqlite:///{cfg.root / 'prefect' / 'prefect.db'}"}
    worker = [str(cfg.bin_dir / "prefect"), "worker", "start", "--pool", cfg.work_pool, "--type", "process",
              "--name", _worker_name(cfg)]
    # The worker's flow runs inherit its environment: they see the stack exactly as `run-stack` does.
    worker_env = {**base, **client_env(cfg), "PREFECT_HOME": str(cfg.root / "prefect" / "worker")}
    return {"s3": (weed, base, signal.SIGTERM), "mlflow": (mlflow, mlflow_env, signal.SIGTERM),
            "prefect": (prefect, prefect_env, signal.SIGTERM), "worker": (worker, worker_env, signal.SIGINT)}


def _worker_name(cfg: StackConfig) -> str:
    return f"hicom-stack-{cfg.port_base}"


def _service_ports(cfg: StackConfig, name: str) -> list[int]:
    if name == "s3":
        return [p for p in cfg.all_ports() if p not in (cfg.port("mlflow"), cfg.port("prefect"))]
    return {"mlflow": [cfg.port("mlflow")], "prefect": [cfg.port("prefect")], "worker": []}[name]


# ---- health checks: each returns True once the service answers as it should ----

def _http_status(url: str, data: bytes | None = None) -> int | None:
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, urllib.error.URLError):
        return None


def s3_client(cfg: StackConfig, *, signed: bool = True, attempts: int = 2, read_timeout_s: float = 30):
    """A boto3 S3 client for the stack (unsigned: an anonymous one)."""
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config
    config = Config(signature_version=UNSIGNED if not signed else "s3v4",
                    retries={"max_attempts": attempts, "mode": "standard"}, connect_timeout=5,
                    read_timeout=read_timeout_s)
    creds = credentials(cfg)
    return boto3.client("s3", endpoint_url=cfg.s3_url, region_name=REGION, config=config,
                        aws_access_key_id=creds.access_key, aws_secret_access_key=creds.secret_key)


def _s3_ready(cfg: StackConfig) -> bool:
    """Signed requests see every bucket (SeaweedFS creates them just after its S3 port opens)."""
    if _http_status(f"{cfg.s3_url}/") is None:
        return False
    try:
        names = {b["Name"] for b in s3_client(cfg).list_buckets()["Buckets"]}
    except Exception:  # noqa: BLE001 - any failure means "not ready yet"; the timeout reports the log
        return False
    return set(BUCKETS) <= names


def refused_write(cfg: StackConfig) -> tuple[str, str] | None:
    """The first bucket that refuses a write, with S3's error; None when every bucket takes one. An S3 that answers
    can still refuse every write (no room for a volume of that bucket: a full disk): a write, read back and
    deleted, is the only sure check. A refusal can take S3 half a minute, hence one attempt and a short timeout."""
    from botocore.exceptions import BotoCoreError, ClientError
    s3 = s3_client(cfg, attempts=1, read_timeout_s=PROBE_TIMEOUT_S)
    body = secrets.token_bytes(PROBE_BYTES)
    for bucket in BUCKETS:
        key = f"stack-probe/{secrets.token_hex(8)}"
        try:
            s3.put_object(Bucket=bucket, Key=key, Body=body)
            if s3.get_object(Bucket=bucket, Key=key)["Body"].read() != body:
                return bucket, "an object read back differs from the one written"
            s3.delete_object(Bucket=bucket, Key=key)
        except (BotoCoreError, ClientError) as e:
            return bucket, str(e)
    return None


def _disk_space(path: Path) -> str:
    stat = os.statvfs(path)
    return f"{stat.f_bavail * stat.f_frsize / 2**30:.1f} GiB free of {stat.f_blocks * stat.f_frsize / 2**30:.0f} GiB"


def check_buckets_take_writes(cfg: StackConfig) -> None:
    """Fail naming the bucket, S3's error and the disk's free space when a bucket refuses writes."""
    refused = refused_write(cfg)
    if refused:
        bucket, error = refused
        raise RuntimeError(
            f"stack: S3 runs but bucket {bucket!r} refuses writes ({error}). SeaweedFS needs room for a "
            f"{VOLUME_SIZE_MB} MB volume per bucket and takes no writes with less than 1% of the disk free; the "
            f"disk under {cfg.root / 's3'} has {_disk_space(cfg.root / 's3')}. Free some space there (or move the "
            f"stack: STACK_DIR), then `make stack-down` and `make stack-up`; S3's log: {cfg.logs / 's3.log'}")


def _worker_online(cfg: StackConfig) -> bool:
    status = None
    request = urllib.request.Request(f"{cfg.prefect_api_url}/work_pools/{cfg.work_pool}/workers/filter",
                                     data=b"{}", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            workers = json.loads(response.read())
        status = {w["name"]: w.get("status") for w in workers}.get(_worker_name(cfg))
    except (OSError, urllib.error.URLError, ValueError):
        return False
    return status == "ONLINE"


def mlflow_artifacts_healthy(cfg: StackConfig) -> bool:
    """MLflow's artifact path answers: the server lists its artifact root, which it reads from S3 (the server's
    /health says only that the server runs)."""
    return _http_status(f"{cfg.mlflow_url}/api/2.0/mlflow-artifacts/artifacts?path=") == 200


def healthy(cfg: StackConfig, name: str) -> bool:
    if name == "s3":
        return _s3_ready(cfg)
    if name == "mlflow":
        return _http_status(f"{cfg.mlflow_url}/health") == 200
    if name == "prefect":
        return _http_status(f"{cfg.prefect_api_url}/health") == 200
    return _worker_online(cfg)


# ---- up / down / status ----


def up(cfg: StackConfig, *, dvc_repo: Path | None = PROJECT_ROOT, out=say) -> dict[str, str]:
    """Start what is not running, wait until every service answers, write the env file; return its content.

    dvc_repo: a DVC repository to point at the stack's S3 (remote `stack`), or None.
    """
    for sub in ("s3/master", "mlflow", "prefect", "logs", "run"):
        (cfg.root / sub).mkdir(parents=True, exist_ok=True)
    table = ProcessTable(cfg.root / "run")
    commands = _commands(cfg)
    # weed mini reloads its saved flags from this file on start: ours must be the only source.
    (cfg.root / "s3" / "mini.options").unlink(missing_ok=True)
    started = []
    for wave in (("s3",), ("mlflow", "prefect"), ("worker",)):  # the servers in a wave start side by side
        for name in wave:
            if table.get(name) is not None:
                out(f"stack: {name} already running (pid {table.get(name).pid})")
                continue
            busy = [p for p in _service_ports(cfg, name) if not port_is_free(p)]
            if busy:
                raise RuntimeError(f"stack: cannot start {name}: port(s) {busy} on {HOST} are taken by another "
                                   f"process; pick other ports with STACK_PORT_BASE (now {cfg.port_base})")
            argv, env, _ = commands[name]
            record = table.start(name, argv, log=cfg.logs / f"{name}.log", env=env, cwd=PROJECT_ROOT)
            started.append(name)
            out(f"stack: started {name} (pid {record.pid}, log {record.log})")
        for name in wave:
            wait_until(lambda: healthy(cfg, name), timeout_s=STARTUP_TIMEOUT_S[name], what=f"stack: {name}",
                       log=cfg.logs / f"{name}.log", alive=lambda: table.get(name) is not None)
            if name == "s3":  # before the servers that store in it
                check_buckets_take_writes(cfg)
    env_file = write_env_file(cfg)
    if dvc_repo is not None:
        configure_dvc_remote(dvc_repo, cfg)
    out(f"stack: up ({', '.join(started) or 'nothing new'} started); S3 {cfg.s3_url}, MLflow {cfg.mlflow_url}, "
        f"Prefect {cfg.prefect_api_url}; env file {env_file}")
    out(f"stack: open the Prefect UI at {cfg.prefect_ui_url} and the MLflow UI at {cfg.mlflow_url}")
    return read_env_file(env_file)


def down(cfg: StackConfig, *, out=say) -> None:
    """Stop every recorded service (reverse start order) and check that none of their processes is left."""
    table = ProcessTable(cfg.root / "run")
    commands = _commands(cfg)
    for name in reversed(SERVICES):
        stopped = table.stop(name, sig=commands[name][2])
        out(f"stack: {name} {'stopped' if stopped else 'was not running'}")
    left = [n for n in table.names() if table.get(n) is not None]
    if left:
        raise RuntimeError(f"stack: still running after stop: {left}")


def status(cfg: StackConfig, *, out=say) -> bool:
    """Print each service's PID and health; True when every one runs and answers."""
    table = ProcessTable(cfg.root / "run")
    urls = {"s3": cfg.s3_url, "mlflow": cfg.mlflow_url, "prefect": cfg.prefect_api_url,
            "worker": f"pool {cfg.work_pool!r}"}
    ok = True
    for name in SERVICES:
        record = table.get(name)
        if record is None:
            out(f"{name:8} stopped")
            ok = False
            continue
        answers = healthy(cfg, name)
        ok &= answers
        out(f"{name:8} pid {record.pid:<8} {urls[name]:32} {'healthy' if answers else 'NOT ANSWERING'}")
        if name == "s3" and answers:  # an S3 that answers can still refuse every write: a full disk
            refused = refused_write(cfg)
            ok &= refused is None
            out(f"{'writes':8} {'':14} {'every bucket':32} " + (
                f"REFUSED by {refused[0]!r} ({_disk_space(cfg.root / 's3')} under {cfg.root / 's3'})"
                if refused else "taken"))
        if name == "mlflow" and answers:  # a server that runs can still fail every upload: check its store
            stored = mlflow_artifacts_healthy(cfg)
            ok &= stored
            out(f"{'artifacts':8} {'':14} {f's3://{MLFLOW_BUCKET}/artifacts via MLflow':32} "
                f"{'healthy' if stored else 'NOT ANSWERING (MLflow runs, its artifact store does not: S3?)'}")
    out(f"env file: {cfg.env_file if cfg.env_file.exists() else '(none yet)'}")
    out(f"UIs: Prefect {cfg.prefect_ui_url}, MLflow {cfg.mlflow_url}")
    return ok


def configure_dvc_remote(repo: Path, cfg: StackConfig) -> None:
    """Remote `stack` (s3://dvc/hicom) in the repository's config; its endpoint in the git-ignored
    `.dvc/config.local`, since the port is per machine. Credentials stay in the environment (the env file)."""
    dvc = str(cfg.bin_dir / "dvc")
    env = {**os.environ, **QUIET}

    def run(*args: str) -> str:
        done = subprocess.run([dvc, *args], cwd=repo, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"dvc {' '.join(args)} failed in {repo}: {done.stderr.strip()}")
        return done.stdout

    if DVC_REMOTE not in run("remote", "list", "--project").split():
        run("remote", "add", "--project", DVC_REMOTE, DVC_REMOTE_URL)
    run("remote", "modify", "--local", DVC_REMOTE, "endpointurl", cfg.s3_url)
    run("remote", "modify", "--local", DVC_REMOTE, "region", REGION)
