"""Whether a process the tests started (or whose pid a stage wrote) still runs."""
from pathlib import Path


def alive(pid: int) -> bool:
    """Running: not gone and not a zombie (a killed orphan may linger as one until this container's init reaps it).
    A process reaped between opening its stat file and reading it fails the read with ESRCH: gone too."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False
