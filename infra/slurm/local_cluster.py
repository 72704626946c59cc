"""A real single-node Slurm on this host (Debian's slurm-wlm + munge), to try and test the Slurm executor.

`python -m infra.slurm.local_cluster install|up|down|status --dir DIR`. `install` adds the Debian packages when
they are missing (root only); `up` writes DIR/slurm.conf from slurm.conf.tmpl and starts munged, slurmctld and
slurmd on 127.0.0.1, each in its own process group recorded under DIR/run; `down` stops exactly those.
Point the Slurm commands at it with SLURM_CONF=DIR/slurm.conf (`env` prints it).
"""
from __future__ import annotations

import argparse
import os
import pwd
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from string import Template

from infra.stack.procs import ProcessTable, port_is_free, say, wait_until, write_atomic

HERE = Path(__file__).resolve().parent
PACKAGES = ("slurm-wlm", "munge")
DAEMONS = ("munged", "slurmctld", "slurmd")  # start order; stopped in reverse
MUNGE_KEY = Path("/etc/munge/munge.key")


def install(out=say) -> None:
    """apt-get install slurm-wlm and munge unless both are there; idempotent."""
    if all(shutil.which(tool, path="/usr/sbin:/usr/bin") for tool in ("slurmctld", "slurmd", "munged", "sbatch")):
        out("slurm: slurm-wlm and munge already installed")
    else:
        if os.geteuid() != 0:
            raise RuntimeError("slurm: slurm-wlm/munge are missing and installing them needs root: "
                               f"apt-get install -y {' '.join(PACKAGES)}")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES], check=True, env=env)
        out("slurm: installed " + " ".join(PACKAGES))
    if not MUNGE_KEY.exists():  # the package's post-install normally creates it
        subprocess.run(["runuser", "-u", "munge", "--", "mungekey", "--create", f"--keyfile={MUNGE_KEY}"], check=True)


class LocalCluster:
    def __init__(self, root: Path, ctld_port: int = 6817, slurmd_port: int = 6818):
        self.root = Path(root).resolve()
        self.ctld_port = ctld_port
        self.slurmd_port = slurmd_port
        self.table = ProcessTable(self.root / "run")

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def munge_socket(self) -> Path:
        return self.root / "munge" / "munge.socket"

    @property
    def env(self) -> dict[str, str]:
        """What Slurm's commands (sbatch, squeue, ...) need to reach this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def _write_conf(self) -> None:
        # `slurmd -C` prints this host's node line (NodeName=<hostname -s> CPUs=... RealMemory=...).
        node_line = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout.splitlines()[0]
        node = node_line.split()[0].removeprefix("NodeName=")
        text = Template((HERE / "slurm.conf.tmpl").read_text()).substitute(
            node=node, node_line=node_line, dir=self.root, munge_socket=self.munge_socket,
            ctld_port=self.ctld_port, slurmd_port=self.slurmd_port)
        write_atomic(self.conf, text)

    def up(self, out=say) -> None:
        """Start whatever is not running and wait until the node is idle; idempotent."""
        munge = pwd.getpwnam("munge")
        # munged runs as user munge: it must reach its folder (pytest's temporary folders are 0700 root).
        blocked = [p for p in self.root.parents if not _enterable(p, munge)]
        if blocked:
            raise RuntimeError(f"slurm: user munge cannot enter {blocked[0]}; put the cluster folder elsewhere")
        for sub in ("state", "spool", "run", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        munge_dir = self.munge_socket.parent
        munge_dir.mkdir(exist_ok=True)
        munge_dir.chmod(0o755)  # munged insists that everyone may reach its socket
        os.chown(munge_dir, munge.pw_uid, munge.pw_gid)
        self._write_conf()
        env = {**os.environ, **self.env}
        fresh_state = not any((self.root / "state").iterdir())
        commands = {
            "munged": ["runuser", "-u", "munge", "--", "/usr/sbin/munged", "--foreground",
                       f"--socket={self.munge_socket}", f"--pid-file={self.root / 'munge' / 'munged.pid'}",
                       f"--log-file={self.root / 'munge' / 'munged.log'}",
                       f"--seed-file={self.root / 'munge' / 'munged.seed'}"],
            # -i: on a first start there is no saved state to read
            "slurmctld": ["/usr/sbin/slurmctld", "-D", *(["-i"] if fresh_state else []), "-f", str(self.conf)],
            "slurmd": ["/usr/sbin/slurmd", "-D", "-f", str(self.conf)],
        }
        ports = {"slurmctld": self.ctld_port, "slurmd": self.slurmd_port}
        checks = {"munged": self._munge_works, "slurmctld": self._controller_answers, "slurmd": self._node_idle}
        for name in DAEMONS:
            if self.table.get(name) is None:
                if name in ports and not port_is_free(ports[name]):
                    raise RuntimeError(f"slurm: port {ports[name]} for {name} is taken; choose other ports")
                record = self.table.start(name, commands[name], log=self.root / "log" / f"{name}.out",
                                          env=env, cwd=self.root)
                out(f"slurm: started {name} (pid {record.pid})")
            wait_until(checks[name], timeout_s=60, what=f"slurm: {name}", log=self.root / "log" / f"{name}.out",
                       alive=lambda: self.table.get(name) is not None)
        out(f"slurm: node idle; SLURM_CONF={self.conf}")

    def down(self, out=say) -> None:
        for name in reversed(DAEMONS):
            stopped = self.table.stop(name, sig=signal.SIGTERM, grace_s=30)
            out(f"slurm: {name} {'stopped' if stopped else 'was not running'}")

    def _run(self, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30,
                              env={**os.environ, **self.env})

    def _munge_works(self) -> bool:
        if not self.munge_socket.exists():
            return False
        cred = self._run("munge", "-n", f"--socket={self.munge_socket}")
        return cred.returncode == 0 and \
            self._run("unmunge", f"--socket={self.munge_socket}", stdin=cred.stdout).returncode == 0

    def _controller_answers(self) -> bool:
        return self._run("scontrol", "ping").stdout.count("UP") > 0

    def _node_idle(self) -> bool:
        return self._run("sinfo", "-h", "-o", "%T").stdout.strip() == "idle"


def _enterable(path: Path, user: pwd.struct_passwd) -> bool:
    """Whether `user` may traverse folder `path` (an existing one; a missing one will be created 0755)."""
    if not path.exists():
        return True
    st = path.stat()
    bit = 0o100 if st.st_uid == user.pw_uid else 0o010 if st.st_gid == user.pw_gid else 0o001
    return bool(st.st_mode & bit)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.slurm.local_cluster", description=__doc__)
    parser.add_argument("command", choices=["install", "up", "down", "status", "env"])
    parser.add_argument("--dir", default=str(HERE.parents[1] / ".stack" / "slurm"), help="cluster folder")
    parser.add_argument("--ctld-port", type=int, default=6817)
    parser.add_argument("--slurmd-port", type=int, default=6818)
    args = parser.parse_args(argv)
    cluster = LocalCluster(Path(args.dir), args.ctld_port, args.slurmd_port)
    try:
        if args.command == "install":
            install()
        elif args.command == "up":
            install()
            cluster.up()
        elif args.command == "down":
            cluster.down()
        elif args.command == "status":
            running = {name: cluster.table.get(name) for name in DAEMONS}
            for name, record in running.items():
                print(f"{name:10} {'pid ' + str(record.pid) if record else 'stopped'}")
            return 0 if all(running.values()) else 3
        else:
            print(f"SLURM_CONF={cluster.conf}")
    except (RuntimeError, subprocess.CalledProcessError) as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
