"""A real interface going down and up: a network namespace, a veth pair, psutil.

The test builds its own namespace and veth pair on a private /30, runs the
target HTTP server inside the namespace, and names the host side of the pair in
``BGHTTP_NETWORK_INTERFACES``. Taking that link down is a real outage the worker
only learns about from psutil. Traffic never leaves the pair. Needs root (or
CAP_NET_ADMIN): skips without it, fails under CI=true.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from bghttp import BackgroundHttpClient, Phase, RequestStatus, Settings
from tests.connectivity.support import all_completed, log_events, statuses
from tests.support import IN_CI, WorkerProcess, wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]

WAIT = 60.0
SERVER_PORT = 8080


@dataclasses.dataclass
class VethPair:
    namespace: str
    host_if: str
    ns_if: str
    host_addr: str
    ns_addr: str

    def set_host_link(self, up: bool) -> None:
        _ip("link", "set", self.host_if, "up" if up else "down")


def _ip(*args: str, namespace: str | None = None) -> None:
    command = ["ip", *args] if namespace is None else ["ip", "netns", "exec", namespace, "ip", *args]
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=30)


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"network namespaces are needed under CI=true: {reason}")
    pytest.skip(f"cannot create a network namespace: {reason}")


def _free_subnet() -> tuple[str, str]:
    used = subprocess.run(["ip", "-4", "addr"], capture_output=True, text=True, check=True).stdout
    for _ in range(100):
        third, fourth = random.randrange(256), random.randrange(0, 256, 4)
        if f"10.213.{third}." not in used:
            return f"10.213.{third}.{fourth + 1}", f"10.213.{third}.{fourth + 2}"
    raise RuntimeError("no free /30 in 10.213.0.0/16")


@pytest.fixture
def veth_pair() -> Iterator[VethPair]:
    if shutil.which("ip") is None:
        _unavailable("the ip command is missing")
    suffix = uuid.uuid4().hex[:6]
    host_addr, ns_addr = _free_subnet()
    pair = VethPair(f"bghttp-test-{suffix}", f"bgh{suffix}h", f"bgh{suffix}n", host_addr, ns_addr)
    try:
        _ip("netns", "add", pair.namespace)
    except subprocess.CalledProcessError as error:
        _unavailable(error.stderr.strip())
    try:
        _ip("link", "add", pair.host_if, "type", "veth", "peer", "name", pair.ns_if)
        _ip("link", "set", pair.ns_if, "netns", pair.namespace)
        _ip("addr", "add", f"{pair.host_addr}/30", "dev", pair.host_if)
        _ip("link", "set", pair.host_if, "up")
        _ip("addr", "add", f"{pair.ns_addr}/30", "dev", pair.ns_if, namespace=pair.namespace)
        _ip("link", "set", pair.ns_if, "up", namespace=pair.namespace)
        _ip("link", "set", "lo", "up", namespace=pair.namespace)
        yield pair
    finally:
        # Deleting the namespace deletes its end of the pair, and with it the pair.
        for args in (("netns", "del", pair.namespace), ("link", "del", pair.host_if)):
            with contextlib.suppress(subprocess.CalledProcessError):
                _ip(*args)


class NamespacedServer:
    """``python -m http.server`` inside the namespace; its access log counts the requests."""

    def __init__(self, pair: VethPair, directory: Path, log_path: Path) -> None:
        self.base_url = f"http://{pair.ns_addr}:{SERVER_PORT}"
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", pair.namespace, sys.executable, "-u", "-m", "http.server",
             str(SERVER_PORT), "--bind", pair.ns_addr, "--directory", str(directory)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def counts(self) -> Counter[str]:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return Counter(m.group(1) for line in lines if (m := re.search(r'"GET (\S+) HTTP/[\d.]+" 200', line)))

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        self._log.close()


@pytest.fixture
def namespaced_server(veth_pair: VethPair, tmp_path: Path) -> Iterator[NamespacedServer]:
    content = tmp_path / "www"
    content.mkdir()
    (content / "index.html").write_text("ok")
    server = NamespacedServer(veth_pair, content, tmp_path / "server.log")
    try:
        wait_until(lambda: _answers(server.base_url + "/"), timeout=WAIT, interval=0.1)
        yield server
    finally:
        server.stop()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def test_requests_wait_while_the_interface_is_down(
    rabbitmq_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    veth_pair: VethPair,
    namespaced_server: NamespacedServer,
) -> None:
    assert os.path.exists(f"/sys/class/net/{veth_pair.host_if}")
    settings = dataclasses.replace(
        rabbitmq_settings,
        network_interfaces=(veth_pair.host_if,),
        connectivity_interval=0.2,
        offline_after_failures=2,
        offline_hold_seconds=1.0,
        default_timeout=5.0,
    )
    worker = start_worker(settings)
    url = namespaced_server.base_url + "/?request={}"
    with BackgroundHttpClient(settings) as client:
        # The path through the veth pair works while the link is up.
        before = client.get(url.format("before"), retries=0).request_id
        assert client.wait(before, timeout=WAIT).status is RequestStatus.COMPLETED

        veth_pair.set_host_link(up=False)
        wait_until(lambda: log_events(worker.log_path, "network_offline"), timeout=WAIT)
        ids = [client.get(url.format(n), retries=1).request_id for n in range(3)]
        wait_until(lambda: all(r.phase is Phase.WAITING_NETWORK for r in statuses(client, ids)), timeout=WAIT)
        time.sleep(2.0)  # a few hold/re-publish rounds
        assert all(r.status is RequestStatus.IN_PROGRESS for r in statuses(client, ids))

        veth_pair.set_host_link(up=True)
        wait_until(lambda: all_completed(client, ids), timeout=WAIT)
        records = statuses(client, ids)

    assert [r.retries_used for r in records] == [0, 0, 0]
    assert all(r.attempt_count == 1 for r in records)
    counts = namespaced_server.counts()
    assert {path: counts[path] for path in counts if path.startswith("/?request=")} == {
        "/?request=before": 1,
        "/?request=0": 1,
        "/?request=1": 1,
        "/?request=2": 1,
    }
    offline = log_events(worker.log_path, "network_offline")[0]
    assert f"{veth_pair.host_if} down" in offline["reason"]
    online = log_events(worker.log_path, "network_online")
    assert online and online[0]["held_requests"] == 3
