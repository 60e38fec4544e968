"""Fixtures for the cluster tests: a 3-node RabbitMQ cluster (``rabbitmq_cluster.py``) for the session.

Starting three nodes takes about 45 s, so they run only when asked
(``BGHTTP_TEST_CLUSTER=1``, which ``.ci/run`` sets) and always in CI
(``CI=true``: a machine that cannot start them fails the tests). A cluster left
running by ``python -m tests.cluster.rabbitmq_cluster start`` is used as it is
and left running.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bghttp import Settings
from bghttp.broker import delete_queues
from tests.cluster.rabbitmq_cluster import STATE_FILE, RabbitCluster, missing_prerequisites
from tests.support import IN_CI, unique_queue

WANTED = os.environ.get("BGHTTP_TEST_CLUSTER", "") == "1" or IN_CI


@pytest.fixture(scope="session")
def rabbitmq_cluster() -> Iterator[RabbitCluster]:
    if not WANTED:
        pytest.skip("cluster tests start 3 RabbitMQ nodes: set BGHTTP_TEST_CLUSTER=1 (runs as root)")
    reason = missing_prerequisites()
    if reason:
        if IN_CI:
            pytest.fail(f"the cluster tests must run in CI, but {reason}")
        pytest.skip(reason)
    if STATE_FILE.exists():
        cluster = RabbitCluster.load()
        cluster.heal()
        yield cluster
        return
    cluster = RabbitCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster(rabbitmq_cluster: RabbitCluster) -> Iterator[RabbitCluster]:
    """The session's cluster with all three nodes up, before and after the test."""
    rabbitmq_cluster.heal()
    yield rabbitmq_cluster
    rabbitmq_cluster.heal()


@pytest.fixture
def cluster_settings(cluster: RabbitCluster, tmp_path: Path) -> Iterator[Settings]:
    """Quorum queues on the cluster, every node in the URL list, a queue of this test's own."""
    settings = Settings(
        broker_url=cluster.broker_url,
        store_dir=tmp_path / "store",
        queue_name=unique_queue(),
        queue_type="quorum",
        backoff_scale=1.0,
        broker_connect_timeout=3.0,
    )
    yield settings
    with contextlib.suppress(Exception):
        delete_queues(cluster.urls[0], settings.queue_name)
