"""A 3-node RabbitMQ cluster on this machine, beside its own RabbitMQ node, for trying quorum queues.

    python -m tests.cluster.rabbitmq_cluster start     # prints BGHTTP_BROKER_URL=...; nodes keep running
    python -m tests.cluster.rabbitmq_cluster status
    python -m tests.cluster.rabbitmq_cluster stop      # stops every node and removes its data

Needs root (each node runs as the ``rabbitmq`` user through ``runuser``) and
the RabbitMQ package (``rabbitmq-server``, ``rabbitmqctl``). The machine's own
node (``rabbit@localhost`` on 5672, distribution port 25672) is left alone:
each cluster node has its own name (``bghttp-c1@localhost`` …), AMQP port
(5681 …), distribution port (25681 …), config file, no plugins, and its data
and logs under one temporary directory. The nodes share the ``rabbitmq``
user's Erlang cookie and the machine's epmd. Set ``BGHTTP_CLUSTER_PORT_BASE``
(default 5681) to move every port.

The tests use :class:`RabbitCluster` (``tests/cluster/conftest.py``): start,
kill -9 a node, stop/start one node's app, find a quorum queue's leader.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

RABBITMQ_USER = "rabbitmq"
RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
HOST = "localhost"  # the machine's RabbitMQ distributes over 127.0.0.1 (ERL_EPMD_ADDRESS)
STATE_FILE = Path(tempfile.gettempdir()) / "bghttp-rabbitmq-cluster.json"
NODE_COUNT = 3
START_TIMEOUT = 180.0


@dataclass(frozen=True)
class Node:
    index: int
    amqp_port: int
    dist_port: int
    base_dir: Path

    @property
    def name(self) -> str:
        return f"bghttp-c{self.index}@{HOST}"

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/"

    @property
    def pid_file(self) -> Path:
        return self.base_dir / "rabbitmq.pid"

    def environment(self) -> dict[str, str]:
        home = pwd.getpwnam(RABBITMQ_USER).pw_dir  # its .erlang.cookie: one cookie for all nodes
        return {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "HOME": home,
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.base_dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base_dir / "log"),
            "RABBITMQ_PID_FILE": str(self.pid_file),
            "RABBITMQ_CONFIG_FILE": str(self.base_dir / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.base_dir / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base_dir / "enabled_plugins"),
            # Not the machine's /etc/rabbitmq/rabbitmq-env.conf (it names the machine's node).
            "RABBITMQ_CONF_ENV_FILE": str(self.base_dir / "rabbitmq-env.conf"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def write_files(self) -> None:
        for sub in ("mnesia", "log"):
            (self.base_dir / sub).mkdir(parents=True, exist_ok=True)
        (self.base_dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.amqp_port}\n"
            "loopback_users.guest = true\n"
            "log.console = false\n"
            "log.file.level = info\n"
        )
        (self.base_dir / "enabled_plugins").write_text("[].\n")
        (self.base_dir / "rabbitmq-env.conf").write_text("")


def _chown_tree(path: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def missing_prerequisites() -> str | None:
    """Why a cluster cannot be started here, or None."""
    if os.geteuid() != 0:
        return "starting RabbitMQ nodes as the rabbitmq user needs root"
    try:
        pwd.getpwnam(RABBITMQ_USER)
    except KeyError:
        return f"there is no {RABBITMQ_USER!r} user (install the rabbitmq-server package)"
    for tool in ("runuser", "rabbitmqctl"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not os.access(RABBITMQ_SERVER, os.X_OK):
        return f"{RABBITMQ_SERVER} is missing (install the rabbitmq-server package)"
    return None


class RabbitCluster:
    """Three RabbitMQ nodes joined into one cluster; ``stop()`` stops them all and removes their data."""

    def __init__(self, base_dir: Path | None = None, port_base: int | None = None) -> None:
        port_base = port_base or int(os.environ.get("BGHTTP_CLUSTER_PORT_BASE", "5681"))
        self.base_dir = base_dir or Path(tempfile.mkdtemp(prefix="bghttp-cluster-"))
        self.nodes = [
            Node(i, port_base + i - 1, 20000 + port_base + i - 1, self.base_dir / f"c{i}")
            for i in range(1, NODE_COUNT + 1)
        ]
        self._processes: dict[int, subprocess.Popen[bytes]] = {}

    # ------------------------------------------------------------------ urls
    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def broker_url(self) -> str:
        """Every node, ``;``-separated: what ``BGHTTP_BROKER_URL`` takes for failover."""
        return ";".join(self.urls)

    def node(self, name_or_index: str | int) -> Node:
        for node in self.nodes:
            if name_or_index in (node.index, node.name):
                return node
        raise KeyError(name_or_index)

    # -------------------------------------------------------------- lifecycle
    def start(self) -> RabbitCluster:
        reason = missing_prerequisites()
        if reason:
            raise RuntimeError(f"cannot start a RabbitMQ cluster here: {reason}")
        for node in self.nodes:
            self._stop_stale(node)
            for port in (node.amqp_port, node.dist_port):
                if not port_free(port):
                    raise RuntimeError(f"port {port} for {node.name} is in use; set BGHTTP_CLUSTER_PORT_BASE")
        self.base_dir.mkdir(parents=True, exist_ok=True)
        for node in self.nodes:
            node.write_files()
        _chown_tree(self.base_dir, RABBITMQ_USER)
        try:
            for node in self.nodes:
                self.start_node(node, wait=False)
            for node in self.nodes:
                self.wait_node(node)
            first = self.nodes[0]
            for node in self.nodes[1:]:
                self.ctl(node, "stop_app")
                self.ctl(node, "join_cluster", first.name)
                self.ctl(node, "start_app")
            self.wait_cluster()
        except BaseException:
            self.stop()
            raise
        return self

    def start_node(self, node: Node, *, wait: bool = True) -> None:
        """Start ``node`` (again: a restarted node rejoins with its data)."""
        log = open(node.base_dir / "server.out", "ab")
        self._processes[node.index] = subprocess.Popen(
            ["runuser", "-u", RABBITMQ_USER, "--", RABBITMQ_SERVER],
            env=node.environment(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=node.base_dir,
            start_new_session=True,
        )
        log.close()
        if wait:
            self.wait_node(node)

    def wait_node(self, node: Node, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not node.pid_file.exists():
            process = self._processes.get(node.index)
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"{node.name} exited: {(node.base_dir / 'server.out').read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{node.name} wrote no pid file in {timeout:.0f} s")
            time.sleep(0.2)
        remaining = max(10, int(deadline - time.monotonic()))
        self.ctl(node, "wait", str(node.pid_file), "--timeout", str(remaining), timeout=remaining + 10)

    def wait_cluster(self, timeout: float = START_TIMEOUT) -> None:
        """Until every node sees all three running."""
        names = {node.name for node in self.nodes}
        deadline = time.monotonic() + timeout
        while True:
            if all(set(self.running_nodes(node)) == names for node in self.nodes):
                return
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not form")
            time.sleep(0.5)

    def running_nodes(self, node: Node) -> list[str]:
        try:
            status = json.loads(self.ctl(node, "cluster_status", "--formatter", "json", timeout=30))
        except (subprocess.SubprocessError, ValueError):
            return []
        return list(status.get("running_nodes", []))

    def stop(self) -> None:
        """Stop every node (gracefully, else kill -9) and remove the cluster's directory."""
        for node in self.nodes:
            with contextlib.suppress(Exception):
                if self.os_pid(node) is not None:
                    self.ctl(node, "stop", timeout=60)
            self.kill(node)
        for process in self._processes.values():
            with contextlib.suppress(Exception):
                process.wait(timeout=10)
        shutil.rmtree(self.base_dir, ignore_errors=True)

    # ---------------------------------------------------------------- faults
    def os_pid(self, node: Node) -> int | None:
        """The node's Erlang VM process, if it runs."""
        try:
            pid = int(node.pid_file.read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def kill(self, node: Node) -> None:
        """kill -9 the node's Erlang VM (no goodbye to clients or peers)."""
        pid = self.os_pid(node)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while self.os_pid(node) is not None and time.monotonic() < deadline:
                time.sleep(0.05)
        with contextlib.suppress(FileNotFoundError):
            node.pid_file.unlink()
        process = self._processes.pop(node.index, None)
        if process is not None:
            with contextlib.suppress(Exception):
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)

    def restart(self, node: Node) -> None:
        """Start a killed node again and wait until the cluster has all three nodes."""
        self.start_node(node)
        self.wait_cluster()

    def heal(self) -> None:
        """Every node up with its app running and in the cluster (after a test killed or stopped one)."""
        for node in self.nodes:
            if self.os_pid(node) is None:
                self.start_node(node)
            else:
                with contextlib.suppress(subprocess.SubprocessError):
                    self.ctl(node, "start_app")  # a no-op when it runs
        self.wait_cluster()

    def stop_app(self, node: Node) -> None:
        self.ctl(node, "stop_app")

    def start_app(self, node: Node) -> None:
        self.ctl(node, "start_app")
        self.wait_cluster()

    def queue_leader(self, queue_name: str, via: Node | None = None) -> Node:
        """The node holding the leader of quorum queue ``queue_name``."""
        for candidate in [via] if via else self.nodes:
            with contextlib.suppress(subprocess.SubprocessError, ValueError):
                listing = json.loads(self.ctl(candidate, "list_queues", "name", "leader", "--formatter", "json"))
                for queue in listing:
                    if queue["name"] == queue_name:
                        return self.node(str(queue["leader"]))
        raise LookupError(f"no leader found for {queue_name}")

    def ctl(self, node: Node, *args: str, timeout: float = 120) -> str:
        """``rabbitmqctl -n <node> args…``; raises CalledProcessError on failure."""
        command = ["rabbitmqctl", "-q", "-n", node.name, *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, command, result.stdout, result.stderr)
        return result.stdout

    def _stop_stale(self, node: Node) -> None:
        """A node of the same name left by a run that died: stop it."""
        with contextlib.suppress(subprocess.SubprocessError):
            self.ctl(node, "stop", timeout=30)

    # ----------------------------------------------------------- persistence
    def save(self, path: Path = STATE_FILE) -> None:
        path.write_text(json.dumps({"base_dir": str(self.base_dir), "port_base": self.nodes[0].amqp_port}))

    @classmethod
    def load(cls, path: Path = STATE_FILE) -> RabbitCluster:
        state = json.loads(path.read_text())
        return cls(Path(state["base_dir"]), int(state["port_base"]))


def main(argv: Sequence[str] | None = None) -> int:
    summary = (__doc__ or "").split("\n")[0]
    parser = argparse.ArgumentParser(prog="python -m tests.cluster.rabbitmq_cluster", description=summary)
    parser.add_argument("command", choices=("start", "status", "stop"))
    args = parser.parse_args(argv)
    if args.command == "start":
        cluster = RabbitCluster().start()
        cluster.save()
        print(f"BGHTTP_BROKER_URL='{cluster.broker_url}'")
        print("BGHTTP_QUEUE_TYPE=quorum")
        return 0
    if not STATE_FILE.exists():
        print("no cluster started by this script is running", file=sys.stderr)
        return 1
    cluster = RabbitCluster.load()
    if args.command == "status":
        for node in cluster.nodes:
            print(node.name, node.url, "running" if cluster.os_pid(node) else "down", cluster.running_nodes(node))
        return 0
    cluster.stop()
    STATE_FILE.unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
