"""`python -m flows run|ablations|serve|deploy|deps` (flows/cli.py), on the embedded default unless the environment
says otherwise.

Defaults are set before Prefect is imported (it reads its settings then) and only where unset, so a team
stack's environment (PREFECT_API_URL, MLFLOW_TRACKING_URI, HICOM_DVC_REMOTE, ...) takes precedence. Without a
server in the environment, a command that runs flows starts its temporary Prefect server next, before any import of
Prefect (flows/prefect_server.py).
"""
import os
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
EMBEDDED_DEFAULTS = {
    "PREFECT_HOME": str(PROJECT_ROOT / ".prefect"),  # the temporary server's database and the cached results
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",  # it needs 4-25 s on 2 cores (default 20)
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY": "false",
    "PREFECT_TELEMETRY_ENABLE_RESOURCE_METRICS": "false",
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}
for key, value in EMBEDDED_DEFAULTS.items():
    os.environ.setdefault(key, value)

from flows.prefect_server import start_for  # noqa: E402  (after the defaults; imports nothing of Prefect)

server = start_for(sys.argv[1:], os.environ)

from flows.cli import main  # noqa: E402  (after the defaults and the server's start)

sys.exit(main(server=server))
