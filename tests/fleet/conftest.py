"""Fixtures for the fleet tests: one GlusterFS volume mounted once per "host" (``gluster.py``).

Setting it up installs GlusterFS when it is missing, so the tests run only when
asked (``BGHTTP_TEST_FLEET=1``, which ``.ci/run`` sets) and always in CI
(``CI=true``: a machine that cannot set it up fails them). A volume left set up
by ``python -m tests.fleet.gluster setup`` is used as it is and left up.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bghttp import Settings
from tests.fleet import gluster
from tests.reliability.server import CountingServer
from tests.support import IN_CI

WANTED = os.environ.get("BGHTTP_TEST_FLEET", "") == "1" or IN_CI


@pytest.fixture(scope="session")
def gluster_volume() -> Iterator[dict[str, Path]]:
    """host name -> its mount point of the shared volume."""
    if not WANTED:
        pytest.skip("fleet tests set up GlusterFS: set BGHTTP_TEST_FLEET=1 (runs as root)")
    reason = gluster.missing_prerequisites()
    if reason:
        if IN_CI:
            pytest.fail(f"the fleet tests must run in CI, but {reason}")
        pytest.skip(reason)
    if gluster.is_set_up():
        yield {host: gluster.mount_point(host) for host in gluster.HOSTS}
        return
    try:
        mounts = gluster.setup()
    except Exception as error:  # a failed setup is one line, then cleaned up
        gluster.teardown()
        pytest.fail(f"cannot set up the GlusterFS volume: {error}")
    try:
        yield mounts
    finally:
        gluster.teardown()


@dataclasses.dataclass(frozen=True)
class Fleet:
    """One store on the shared volume, as each host sees it."""

    stores: dict[str, Path]  # host -> its path of the store

    def settings(self, base: Settings, host: str) -> Settings:
        return dataclasses.replace(base, store_dir=self.stores[host])


@pytest.fixture
def fleet(gluster_volume: dict[str, Path]) -> Iterator[Fleet]:
    """A fresh store of this test's own on the volume; removed afterwards."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    yield Fleet({host: point / name / "store" for host, point in gluster_volume.items()})
    shutil.rmtree(gluster_volume[gluster.HOSTS[0]] / name, ignore_errors=True)


@pytest.fixture
def counting_server() -> Iterator[CountingServer]:
    server = CountingServer().start()
    yield server
    server.stop()
