"""A real Slurm on this host (Debian's slurm-wlm + munge), to try and test the Slurm executor: one node, or
several, each in its own network namespace.

`python -m infra.slurm.local_cluster install|up|down|status|env --dir DIR [--nodes N]`. `install` adds the Debian
packages when they are missing (root only); `up` writes DIR/slurm.conf from slurm.conf.tmpl and starts munged,
slurmctld and slurmd, each in its own process group recorded under DIR/run; `down` stops exactly those.

One node (the default): everything on 127.0.0.1, the node named after this host. `--nodes N` (N >= 2): N+1 network
namespaces (`ip netns`): one for slurmctld (the head, holding a bridge) and one per node, each joined to the bridge
by a veth pair and given an address of a small private subnet (default 10.251.17.0/28) that exists only inside
these namespaces, with its own hostname (a UTS namespace: hicom-n1, hicom-n2, ...) and its own hosts file
(/etc/netns/NAMESPACE/hosts, bind-mounted over /etc/hosts in the daemon's own mount namespace), so a job's ranks
see different hosts and reach each other by name. Nothing is added to the host's own network; munged serves every
namespace through its Unix socket. Slurm's commands reach the controller through DIR/bin, wrappers that enter
the head's namespace when run from the host. `down` stops the daemons, ends every process left in the
namespaces and removes the namespaces (their interfaces go with them) and their /etc/netns folders; a failed `up`
does the same. kill_node and start_node take a node away (every process of its namespace killed) and bring it
back.

Point the Slurm commands at it with the environment `env` prints (SLURM_CONF, and PATH for several nodes).
"""
from __future__ import annotations

import argparse
import fcntl
import hashlib
import ipaddress
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from string import Template

from infra.stack.procs import ProcessTable, port_is_free, say, wait_until, write_atomic

HERE = Path(__file__).resolve().parent
PACKAGES = ("slurm-wlm", "munge")
CLUSTER_FILE = "cluster.json"  # what `up` made: node count, subnet, namespaces (read by `down`)
DEFAULT_SUBNET = "10.251.17.0/28"  # private; exists only inside the cluster's namespaces
HEAD_NAME = "hicom-head"  # hostname of the controller's namespace
NETNS_ETC = Path("/etc/netns")  # NETNS_ETC/NS/hosts: a namespace's /etc/hosts (the `ip netns` convention)
NETNS_RUN = Path("/run/netns")  # where `ip netns add` keeps each namespace
CRED_EXPIRE_S = 10  # a requeued job may start again after this many seconds (Slurm's default: 120)
SLURMD_TIMEOUT_S = 10  # a node silent this long is DOWN and its jobs NODE_FAIL (Slurm's default: 300)
CLIENT_COMMANDS = ("sbatch", "squeue", "scontrol", "sacct", "scancel", "sinfo", "srun", "salloc", "sattach",
                   "sstat", "sprio", "sdiag")
MUNGE_KEY = Path("/etc/munge/munge.key")
INSTALL_LOCK = Path(tempfile.gettempdir()) / "hicom-slurm-install.lock"


def install(out=say, networked: bool = False) -> None:
    """apt-get install slurm-wlm and munge (and iproute2 for several nodes) unless they are there; idempotent, and
    one process at a time (two clusters set up at once, e.g. by parallel test workers, would race for apt's lock
    and the munge key)."""
    with open(INSTALL_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when this process ends, however it ends
        _install(out, networked)


def _install(out, networked: bool) -> None:
    tools = ["slurmctld", "slurmd", "munged", "sbatch", *(["ip", "unshare"] if networked else [])]
    if all(shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin") for tool in tools):
        out("slurm: " + " and ".join(PACKAGES if not networked else (*PACKAGES, "iproute2")) + " already installed")
    else:
        packages = [*PACKAGES, *(["iproute2", "util-linux"] if networked else [])]
        if os.geteuid() != 0:
            raise RuntimeError(f"slurm: {', '.join(packages)} are missing and installing them needs root: "
                               f"apt-get install -y {' '.join(packages)}")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages], check=True, env=env)
        out("slurm: installed " + " ".join(packages))
    if not MUNGE_KEY.exists():  # the package's post-install normally creates it
        subprocess.run(["runuser", "-u", "munge", "--", "mungekey", "--create", f"--keyfile={MUNGE_KEY}"], check=True)


@dataclass(frozen=True)
class Node:
    """One compute node: its Slurm name (also its hostname), address and network namespace (None: the host's)."""

    name: str
    addr: str
    netns: str | None = None

    @property
    def daemon(self) -> str:
        """Its slurmd's name in the process table."""
        return f"slurmd-{self.name}" if self.netns else "slurmd"


class LocalCluster:
    def __init__(self, root: Path, ctld_port: int = 6817, slurmd_port: int = 6818, nodes: int | None = None,
                 subnet: str | None = None):
        """nodes, subnet: None: as the folder's running cluster has them (`down` and `status` need not repeat
        them), else one node and DEFAULT_SUBNET."""
        if nodes is not None and nodes < 1:
            raise ValueError(f"slurm: --nodes {nodes}: a cluster has at least one node")
        self.root = Path(root).resolve()
        self.ctld_port = ctld_port
        self.slurmd_port = slurmd_port
        self.table = ProcessTable(self.root / "run")
        recorded = self._recorded() or {}
        if nodes is not None and recorded and recorded["nodes"] != nodes:
            raise RuntimeError(f"slurm: {self.root} holds a running {recorded['nodes']}-node cluster; `down` it "
                               f"before starting one of {nodes}")
        nodes = recorded.get("nodes", nodes or 1)
        subnet = recorded.get("subnet", subnet or DEFAULT_SUBNET)
        self.nodes_count = nodes
        self.subnet = ipaddress.ip_network(subnet)
        if nodes > 1 and self.subnet.num_addresses - 2 < nodes + 1:
            raise ValueError(f"slurm: subnet {subnet} has no room for a head and {nodes} nodes")
        # Names of this cluster's namespaces: unique per cluster folder, short enough for `ip netns`.
        self.tag = "hicom" + hashlib.sha256(str(self.root).encode()).hexdigest()[:6]

    # -- what the cluster is made of ------------------------------------------------------------------
    @property
    def networked(self) -> bool:
        """Several nodes, each in its own network namespace (else one node on loopback)."""
        return self.nodes_count > 1

    @property
    def head_netns(self) -> str | None:
        return f"{self.tag}-head" if self.networked else None

    @property
    def head_addr(self) -> str:
        return str(self.subnet[1]) if self.networked else "127.0.0.1"

    @property
    def nodes(self) -> list[Node]:
        if not self.networked:
            return [Node(_this_host(), "127.0.0.1")]
        return [Node(f"hicom-n{i}", str(self.subnet[1 + i]), f"{self.tag}-n{i}")
                for i in range(1, self.nodes_count + 1)]

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"slurm: no node {name!r} (nodes: {', '.join(n.name for n in self.nodes)})")

    @property
    def namespaces(self) -> list[str]:
        return [self.head_netns, *(n.netns for n in self.nodes)] if self.networked else []

    @property
    def daemons(self) -> list[str]:
        """Start order; stopped in reverse."""
        return ["munged", "slurmctld", *(n.daemon for n in self.nodes)]

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def munge_socket(self) -> Path:
        return self.root / "munge" / "munge.socket"

    @property
    def bin_dir(self) -> Path:
        return self.root / "bin"

    @property
    def env(self) -> dict[str, str]:
        """What Slurm's commands (sbatch, squeue, ...) need to reach this cluster."""
        env = {"SLURM_CONF": str(self.conf)}
        if self.networked:
            env["PATH"] = f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', os.defpath)}"
        return env

    def _recorded(self) -> dict | None:
        try:
            return json.loads((self.root / CLUSTER_FILE).read_text())
        except FileNotFoundError:
            return None

    # -- up -------------------------------------------------------------------------------------------
    def _write_conf(self) -> None:
        # `slurmd -C` prints this host's node line (NodeName=<hostname -s> CPUs=... RealMemory=...).
        host_line = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout.splitlines()[0]
        resources = host_line.split(maxsplit=1)[1]
        lines = [f"NodeName={n.name} {resources} NodeAddr={n.addr} State=UNKNOWN" for n in self.nodes]
        text = Template((HERE / "slurm.conf.tmpl").read_text()).substitute(
            controller=HEAD_NAME if self.networked else _this_host(), controller_addr=self.head_addr,
            node_lines="\n".join(lines), node_names=",".join(n.name for n in self.nodes), dir=self.root,
            munge_socket=self.munge_socket, ctld_port=self.ctld_port, slurmd_port=self.slurmd_port,
            cred_expire=CRED_EXPIRE_S, slurmd_timeout=SLURMD_TIMEOUT_S)
        write_atomic(self.conf, text)

    def up(self, out=say) -> None:
        """Start whatever is not running and wait until every node is idle; idempotent. A failure stops what it
        started and removes the namespaces."""
        try:
            self._up(out)
        except BaseException:
            self.down(out=lambda _: None)
            raise

    def _up(self, out) -> None:
        munge = pwd.getpwnam("munge")
        # munged runs as user munge: it must reach its folder (pytest's temporary folders are 0700 root).
        blocked = [p for p in self.root.parents if not _enterable(p, munge)]
        if blocked:
            raise RuntimeError(f"slurm: user munge cannot enter {blocked[0]}; put the cluster folder elsewhere")
        for sub in ("state", "spool", "run", "log", *(f"spool/{n.name}" for n in self.nodes)):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        write_atomic(self.root / CLUSTER_FILE, json.dumps({"nodes": self.nodes_count, "subnet": str(self.subnet),
                                                           "namespaces": self.namespaces}))
        munge_dir = self.munge_socket.parent
        munge_dir.mkdir(exist_ok=True)
        munge_dir.chmod(0o755)  # munged insists that everyone may reach its socket
        os.chown(munge_dir, munge.pw_uid, munge.pw_gid)
        self._write_conf()
        if self.networked:
            self._network(out)
            self._write_wrappers()
        env = {**os.environ, **self.env}
        fresh_state = not any((self.root / "state").iterdir())
        commands = {
            "munged": ["runuser", "-u", "munge", "--", "/usr/sbin/munged", "--foreground",
                       f"--socket={self.munge_socket}", f"--pid-file={self.root / 'munge' / 'munged.pid'}",
                       f"--log-file={self.root / 'munge' / 'munged.log'}",
                       f"--seed-file={self.root / 'munge' / 'munged.seed'}"],
            # -i: on a first start there is no saved state to read
            "slurmctld": self._in(self.head_netns, HEAD_NAME, ["/usr/sbin/slurmctld", "-D",
                                                               *(["-i"] if fresh_state else []), "-f", str(self.conf)]),
        }
        for node in self.nodes:
            commands[node.daemon] = self._slurmd_command(node)
        checks = {"munged": self._munge_works, "slurmctld": self._controller_answers}
        for name in self.daemons:
            if self.table.get(name) is None:
                # On loopback only: each namespace has ports of its own.
                port = None if self.networked else {"slurmctld": self.ctld_port, "slurmd": self.slurmd_port}.get(name)
                if port is not None and not port_is_free(port):
                    raise RuntimeError(f"slurm: port {port} for {name} is taken; choose other ports")
                record = self.table.start(name, commands[name], log=self.root / "log" / f"{name}.out",
                                          env=env, cwd=self.root)
                out(f"slurm: started {name} (pid {record.pid})")
            if name in checks:
                self._wait(name, checks[name])
        for node in self.nodes:
            self._wait(node.daemon, lambda node=node: self.node_state(node.name) == "idle")
        out(f"slurm: {self.nodes_count} node(s) idle ({', '.join(f'{n.name} {n.addr}' for n in self.nodes)}); "
            + " ".join(f"{k}={v}" for k, v in self.env.items() if k == "SLURM_CONF")
            + (f" PATH={self.bin_dir}:$PATH" if self.networked else ""))

    def _wait(self, name: str, check) -> None:
        wait_until(check, timeout_s=60, what=f"slurm: {name}", log=self.root / "log" / f"{name}.out",
                   alive=lambda: self.table.get(name) is not None)

    def _in(self, netns: str | None, hostname: str, argv: list[str]) -> list[str]:
        """argv run in network namespace `netns` under its own hostname, with the namespace's hosts file as
        /etc/hosts (in a private mount namespace); as is on the host when netns is None. (Not `ip netns exec`:
        it mounts a fresh /sys without the cgroup filesystem slurmd needs.)"""
        if netns is None:
            return argv
        return ["nsenter", f"--net={NETNS_RUN / netns}", "unshare", "--uts", "--mount", "--",
                "sh", "-c", 'hostname "$0" && mount --bind "$1" /etc/hosts && shift && exec "$@"',
                hostname, str(NETNS_ETC / netns / "hosts"), *argv]

    def _slurmd_command(self, node: Node) -> list[str]:
        return self._in(node.netns, node.name, ["/usr/sbin/slurmd", "-D", "-f", str(self.conf),
                                                *(["-N", node.name] if node.netns else [])])

    def _network(self, out) -> None:
        """The head's namespace with a bridge, one namespace per node joined to it by a veth pair; each with its
        address, its hosts file, and no route anywhere else."""
        existing = set(_netns_list())
        prefix = self.subnet.prefixlen
        hosts = "127.0.0.1 localhost\n" + f"{self.head_addr} {HEAD_NAME}\n" + \
            "".join(f"{n.addr} {n.name}\n" for n in self.nodes)
        for netns in self.namespaces:
            write_atomic(NETNS_ETC / netns / "hosts", hosts)
        head = self.head_netns
        if head not in existing:
            _ip("netns", "add", head)
            _ip("-n", head, "link", "set", "lo", "up")
            _ip("-n", head, "link", "add", "br0", "type", "bridge")
            _ip("-n", head, "addr", "add", f"{self.head_addr}/{prefix}", "dev", "br0")
            _ip("-n", head, "link", "set", "br0", "up")
        for i, node in enumerate(self.nodes, 1):
            if node.netns in existing:
                continue
            _ip("netns", "add", node.netns)
            _ip("-n", node.netns, "link", "set", "lo", "up")
            # Both ends are made inside the namespaces: the host's own network never sees them.
            _ip("link", "add", f"v{i}", "netns", head, "type", "veth", "peer", "name", "eth0", "netns", node.netns)
            _ip("-n", head, "link", "set", f"v{i}", "master", "br0")
            _ip("-n", head, "link", "set", f"v{i}", "up")
            _ip("-n", node.netns, "addr", "add", f"{node.addr}/{prefix}", "dev", "eth0")
            _ip("-n", node.netns, "link", "set", "eth0", "up")
        out(f"slurm: network {self.subnet} in namespaces {', '.join(self.namespaces)}")

    def _write_wrappers(self) -> None:
        """DIR/bin/<command>: Slurm's command, run inside the head's namespace (as host hicom-head, so that an
        srun there is reachable by the nodes) when called from outside the cluster's namespaces (from the host);
        on a node (in a job) it runs as it is."""
        clean_path = os.pathsep.join(p for p in os.environ.get("PATH", os.defpath).split(os.pathsep)
                                     if Path(p).resolve() != self.bin_dir.resolve())
        for command in CLIENT_COMMANDS:
            real = shutil.which(command, path=clean_path + os.pathsep + "/usr/bin:/usr/sbin")
            if real is None:
                continue
            enter = shlex.join(self._in(self.head_netns, HEAD_NAME, [real]))
            write_atomic(self.bin_dir / command, (
                "#!/bin/sh\n# Written by infra/slurm/local_cluster.py: reach the cluster's controller from the host.\n"
                f'case "$(ip netns identify $$ 2>/dev/null)" in\n'
                f'  {self.tag}-*) exec {real} "$@" ;;\n'
                f'  *) exec {enter} "$@" ;;\nesac\n'), mode=0o755)

    # -- nodes failing and returning ------------------------------------------------------------------
    def kill_node(self, name: str) -> list[int]:
        """What a node's power loss does: SIGKILL every process of its namespace (its slurmd, slurmstepd, the
        job's tasks). Returns the PIDs killed."""
        node = self.node(name)
        if node.netns is None:
            raise RuntimeError("slurm: a single-node cluster on loopback cannot lose its node")
        pids = _netns_pids(node.netns)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_until(lambda: not _netns_pids(node.netns), timeout_s=30, what=f"slurm: processes of {name}")
        self.table.get(node.daemon)  # drops the dead record
        return pids

    def start_node(self, name: str, out=say) -> None:
        """Start a node's slurmd again (after kill_node); returns once the controller has it back in service and
        has delivered every message it queued while the node was away. Those include the kill of the job run the
        node lost; Slurm requeues a job under the same id and slurmd kills by job id, so that kill delivered late
        would end the job's next run on this node."""
        node = self.node(name)
        if self.table.get(node.daemon) is None:
            record = self.table.start(node.daemon, self._slurmd_command(node),
                                      log=self.root / "log" / f"{node.daemon}.out", env={**os.environ, **self.env},
                                      cwd=self.root)
            out(f"slurm: started {node.daemon} (pid {record.pid})")
        self._wait(node.daemon, lambda: self.node_state(name) in ("idle", "mixed", "allocated"))
        wait_until(self._agent_idle, timeout_s=150,
                   what="slurm: slurmctld's queue of messages to the nodes")

    def _agent_idle(self) -> bool:
        """sdiag: nothing in slurmctld's retry queue of messages to nodes, and no agent thread sending one."""
        done = self._run("sdiag")
        counts = dict(re.findall(r"^\s*(Agent queue size|Agent count):\s*(\d+)", done.stdout, re.MULTILINE))
        if done.returncode != 0 or len(counts) != 2:
            raise RuntimeError(f"slurm: sdiag gave no agent counts: {done.stdout[:300]!r} {done.stderr.strip()!r}")
        return counts == {"Agent queue size": "0", "Agent count": "0"}

    def node_state(self, name: str) -> str:
        """sinfo's state of one node (idle, allocated, down*, ...); '' when the controller does not answer."""
        return self._run("sinfo", "-h", "-N", "-n", name, "-o", "%T").stdout.strip()

    # -- down -----------------------------------------------------------------------------------------
    def down(self, out=say) -> None:
        """Stop the daemons, every process left in the cluster's namespaces, the namespaces and their files."""
        errors = []
        for name in reversed(self.daemons):
            try:
                stopped = self.table.stop(name, sig=signal.SIGTERM, grace_s=30)
                out(f"slurm: {name} {'stopped' if stopped else 'was not running'}")
            except RuntimeError as e:
                errors.append(str(e))
        present = set(_netns_list())
        for netns in self.namespaces:
            if netns in present:
                left = _netns_pids(netns)  # jobs' processes slurmd left behind
                for pid in left:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                try:
                    wait_until(lambda netns=netns: not _netns_pids(netns), timeout_s=30, what=f"processes in {netns}")
                except RuntimeError as e:
                    errors.append(str(e))
                done = subprocess.run(["ip", "netns", "del", netns], capture_output=True, text=True)
                if done.returncode != 0:
                    errors.append(f"ip netns del {netns}: {done.stderr.strip()}")
                else:
                    out(f"slurm: removed namespace {netns}" + (f" ({len(left)} leftover processes ended)" if left
                                                                   else ""))
            shutil.rmtree(NETNS_ETC / netns, ignore_errors=True)
        if self.namespaces:
            try:
                NETNS_ETC.rmdir()  # only when no other namespace keeps files there
            except OSError:
                pass
        (self.root / CLUSTER_FILE).unlink(missing_ok=True)
        if errors:
            raise RuntimeError("slurm: down left something behind: " + "; ".join(errors))

    # -- checks ---------------------------------------------------------------------------------------
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


def _this_host() -> str:
    return subprocess.run(["hostname", "-s"], capture_output=True, text=True, check=True).stdout.strip()


def _ip(*argv: str) -> None:
    done = subprocess.run(["ip", *argv], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"slurm: ip {' '.join(argv)} failed: {done.stderr.strip()}")


def _netns_list() -> list[str]:
    done = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return [line.split()[0] for line in done.stdout.splitlines() if line.strip()]


def _netns_pids(netns: str) -> list[int]:
    done = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True)
    return [int(p) for p in done.stdout.split()] if done.returncode == 0 else []


def _enterable(path: Path, user: pwd.struct_passwd) -> bool:
    """Whether `user` may traverse folder `path` (an existing one; a missing one will be created 0755)."""
    if not path.exists():
        return True
    st = path.stat()
    bit = 0o100 if st.st_uid == user.pw_uid else 0o010 if st.st_gid == user.pw_gid else 0o001
    return bool(st.st_mode & bit)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.slurm.local_cluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["install", "up", "down", "status", "env"])
    parser.add_argument("--dir", default=str(HERE.parents[1] / ".stack" / "slurm"), help="cluster folder")
    parser.add_argument("--nodes", type=int, default=None,
                        help="up: compute nodes (default 1, on 127.0.0.1; 2 or more: one network namespace each)")
    parser.add_argument("--subnet", default=None, help=f"up, several nodes: their private subnet ({DEFAULT_SUBNET})")
    parser.add_argument("--ctld-port", type=int, default=6817)
    parser.add_argument("--slurmd-port", type=int, default=6818)
    args = parser.parse_args(argv)
    try:
        cluster = LocalCluster(Path(args.dir), args.ctld_port, args.slurmd_port,
                               nodes=args.nodes if args.command in ("up", "install") else None, subnet=args.subnet)
        if args.command == "install":
            install(networked=cluster.networked)
        elif args.command == "up":
            install(networked=cluster.networked)
            cluster.up()
        elif args.command == "down":
            cluster.down()
        elif args.command == "status":
            running = {name: cluster.table.get(name) for name in cluster.daemons}
            for name, record in running.items():
                print(f"{name:16} {'pid ' + str(record.pid) if record else 'stopped'}")
            return 0 if all(running.values()) else 3
        else:
            for key, value in cluster.env.items():
                print(f"export {key}={shlex.quote(value)}")
    except (RuntimeError, ValueError, subprocess.CalledProcessError) as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
