"""`python -m flows run|serve|deploy` (flows/cli.py), on the embedded default unless the environment says otherwise.

Defaults are set before Prefect is imported (it reads its settings then) and only where unset, so a team
stack's environment (PREFECT_API_URL, MLFLOW_TRACKING_URI, HICOM_DVC_REMOTE, ...) takes precedence.
"""
import os
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
EMBEDDED_DEFAULTS = {
    "PREFECT_HOME": str(PROJECT_ROOT / ".prefect"),  # the temporary server's database and the cached results
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",  # it needs 13-25 s on 2 cores (default 20)
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY": "false",
    "PREFECT_TELEMETRY_ENABLE_RESOURCE_METRICS": "false",
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}
for key, value in EMBEDDED_DEFAULTS.items():
    os.environ.setdefault(key, value)

from flows.cli import main  # noqa: E402  (after the defaults)

sys.exit(main())
