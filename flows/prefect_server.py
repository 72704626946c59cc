"""The temporary Prefect server of one `python -m flows run | ablations | serve` without a configured server.

Prefect starts such a server itself when a flow first needs its API, after the process has imported Prefect and
planned the run, and it imports Prefect's whole server package in the flow's process to do so. Starting it here,
first thing (this module imports nothing of Prefect), lets the server boot on one core while the flow's process
imports and checks the request on the other: on 2 cores a cached `make run` reached its first stage 5-7 s
sooner. The server is the one Prefect runs (uvicorn on `prefect.server.api.server:create_app`, ephemeral, no UI)
with the same database under PREFECT_HOME; it skips block-type registration at start (importing every installed
Prefect collection: the server alone answered in 3.7 and 4.0 s without it, 4.7-6.1 s in five tries with it), which
nothing of the flow's needs: a block that is saved registers its own type.

Where Prefect's settings name a server after all (a profile or prefect.toml, which cannot be read before Prefect
is imported), `use_server` stops this one and leaves that setting alone.
"""
from __future__ import annotations

import atexit
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

# The stages' supervisor (standard library only; its package imports in milliseconds): the server stops when this
# process dies, however it dies. atexit alone missed a flow ended by a signal (SIGTERM from a scheduler or `kill`,
# or SIGKILL): the server outlived it.
from flows.executors.supervise import SCRIPT as SUPERVISOR

COMMANDS = ("run", "ablations", "serve")  # the `python -m flows` commands that run flows
SERVER_ENV = {
    "PREFECT_UI_ENABLED": "0",  # as Prefect's own temporary server
    "PREFECT__SERVER_EPHEMERAL": "1",
    "PREFECT__SERVER_FINAL": "1",
    "PREFECT_API_BLOCKS_REGISTER_ON_START": "false",
    "PREFECT_MEMOIZE_BLOCK_AUTO_REGISTRATION": "false",  # else it imports every collection to hash them anyway
}
START_ATTEMPTS = 3  # a port taken between choosing it and binding it: choose another


class ServerError(RuntimeError):
    pass


class TemporaryServer:
    """A Prefect API server in a child process on 127.0.0.1, for this process only; `stop` (also at exit) ends it,
    and so does this process's death (the server runs under the stages' supervisor)."""

    def __init__(self, home: Path, startup_timeout_s: float, port: int | None = None):
        self.home, self.startup_timeout_s = Path(home), startup_timeout_s
        self.log_path = self.home / "temporary-server.log"
        self.port = port
        self.process: subprocess.Popen | None = None
        self.attempts = 0
        self.log_offset = 0

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def start(self) -> TemporaryServer:
        """Launch the server and return at once; `wait_ready` waits for it."""
        self.home.mkdir(parents=True, exist_ok=True)
        if self.port is None or self.attempts:
            self.port = free_port()
        self.attempts += 1
        env = {**os.environ, **{key: os.environ.get(key, value) for key, value in SERVER_ENV.items()}}
        env.pop("PREFECT_API_URL", None)
        with open(self.log_path, "ab") as log:
            self.log_offset = log.tell()  # where this attempt's lines start
            self.process = subprocess.Popen(
                [sys.executable, str(SUPERVISOR), str(os.getpid()), "--",
                 sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app",
                 "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "error", "--lifespan", "on"],
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        atexit.register(self.stop)
        return self

    def wait_ready(self) -> None:
        """Until the server answers /health; a port taken meanwhile is retried on another; ServerError names the
        exit code and the log when it ends or does not answer within the startup timeout."""
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            code = self.process.poll()
            if code is not None:
                if self.attempts < START_ATTEMPTS and "address already in use" in self.attempt_log().lower():
                    self.start()
                    continue
                raise ServerError(f"the temporary Prefect server exited with code {code} before it answered; "
                                  f"its log ({self.log_path}) ends: {self.log_tail()}")
            if healthy(self.api_url):
                return
            if time.monotonic() > deadline:
                self.stop()
                raise ServerError(f"the temporary Prefect server did not answer within {self.startup_timeout_s:.0f} s "
                                  "(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS); its log "
                                  f"({self.log_path}) ends: {self.log_tail()}")
            time.sleep(0.1)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def attempt_log(self) -> str:
        """What the server wrote since it was last started."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self.log_offset)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def log_tail(self, chars: int = 600) -> str:
        return self.attempt_log()[-chars:].strip() or "(empty)"


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def start_for(argv: list[str], environ: dict[str, str]) -> TemporaryServer | None:
    """The temporary server a command will need, started now: for a command that runs flows (not asked for its
    --help) when the environment names no server (PREFECT_API_URL); `use_server` decides once Prefect's own
    settings can be read."""
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    asks_help = any(arg in ("-h", "--help") for arg in argv)
    if command not in COMMANDS or asks_help or environ.get("PREFECT_API_URL"):
        return None
    return TemporaryServer(Path(environ["PREFECT_HOME"]),
                           float(environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120"))).start()


@contextlib.contextmanager
def use_server(server: TemporaryServer | None):
    """The flows run inside this on `server` (None: on what Prefect's settings say); it is stopped at the end.
    A server named in Prefect's settings (a profile, prefect.toml) wins: `server` is stopped unused."""
    if server is None:
        yield None
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    try:
        if PREFECT_API_URL.value():
            server.stop()
            yield None
            return
        server.wait_ready()
        print(f"flows: temporary Prefect server on {server.api_url} (log: {server.log_path})", file=sys.stderr)
        os.environ["PREFECT_API_URL"] = server.api_url  # settings built afresh (threads, child processes) see it too
        try:
            with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
                try:
                    yield server.api_url
                finally:
                    _drain_to(server)
        finally:
            os.environ.pop("PREFECT_API_URL", None)
    finally:
        server.stop()


def _drain_to(server: TemporaryServer) -> None:
    """Send the logs and events Prefect still holds while the server is up (else they fail at exit)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    if server.process is not None and server.process.poll() is None:
        APILogWorker.drain_all(timeout=5)
        EventsWorker.drain_all(timeout=5)
