"""One FileStore per worker process: the actor's runners, the gate and the intake write through the same one."""

from __future__ import annotations

import os
from pathlib import Path

from dramatiq.brokers.stub import StubBroker

from bghttp import Settings
from bghttp.worker.connectivity import MonitorHolder
from bghttp.worker.gate import ConnectivityGate
from bghttp.worker.intake import Intake
from bghttp.worker.process_store import process_store


def test_the_gate_and_the_intake_share_the_process_store(tmp_path: Path) -> None:
    settings = Settings(broker_url="local", store_dir=tmp_path / "store", queue_name="q")
    store = process_store(settings)
    assert process_store(settings) is store
    assert ConnectivityGate(settings, MonitorHolder(settings))._store_for_status() is store
    assert Intake(settings, StubBroker()).submission().store is store
    other = Settings(broker_url="local", store_dir=tmp_path / "other", queue_name="q")
    assert process_store(other) is not store


def test_a_forked_child_builds_its_own(tmp_path: Path) -> None:
    settings = Settings(broker_url="local", store_dir=tmp_path / "store", queue_name="q")
    parent_store = process_store(settings)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a fresh store, the same one for every caller after that
        child = process_store(settings)
        ok = child is not parent_store and process_store(settings) is child
        os.write(write, b"1" if ok else b"0")
        os._exit(0)
    os.close(write)
    assert os.read(read, 1) == b"1"
    os.waitpid(pid, 0)
