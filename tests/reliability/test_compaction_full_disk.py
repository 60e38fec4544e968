"""A record log's compaction on a nearly full disk (issue 21, item 2): never a cut copy.

A status log past 32 KiB is replaced by a copy holding its latest version. On a
disk with one free page, a copy of a version over 4 KiB was cut at 4,096 bytes
(no newline) and renamed over the log, and ``update_status`` returned normally:
the request vanished (``read_status`` None, ``status`` "no request", a new submit
of its ID accepted).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from bghttp import BackgroundHttpClient, Settings, StoreError
from bghttp.models import StatusRecord
from bghttp.record_log import COMPACT_BYTES
from bghttp.store import FileStore
from tests.reliability.full_disk import PAGE, fill_leaving, free_pages, mounted_tmpfs

pytestmark = [pytest.mark.rabbitmq]


def _with_error(length: int):  # type: ignore[no-untyped-def]
    def change(record: StatusRecord) -> StatusRecord:
        return dataclasses.replace(
            record, last_error="e" * length + str(record.updated_at), updated_at=record.updated_at + 1
        )

    return change


def test_a_compaction_with_one_free_page_keeps_the_request(rabbitmq_settings: Settings, tmp_path: Path) -> None:
    with mounted_tmpfs(tmp_path / "tmpfs", "1m") as mountpoint:
        settings = dataclasses.replace(rabbitmq_settings, store_dir=mountpoint / "store")
        with BackgroundHttpClient(settings) as client:
            client.post("http://127.0.0.1:9/x", data=b"body", request_id="big")
        store = FileStore(settings.store_dir)
        log = settings.store_dir / "status" / "big.log"
        # Versions of ~4.6 KB, then one sized so that the next append crosses COMPACT_BYTES
        # and needs one new page, where the compacted copy needs two.
        before = os.path.getsize(log)
        store.update_status("big", _with_error(4200))
        overhead = os.path.getsize(log) - before - 4200
        while os.path.getsize(log) < COMPACT_BYTES - 3 * PAGE:
            store.update_status("big", _with_error(4200))
        store.update_status("big", _with_error(7 * PAGE + 100 - os.path.getsize(log) - overhead))
        size = os.path.getsize(log)
        line = 4200 + overhead
        assert 7 * PAGE < size < 7 * PAGE + 200 and size + line > COMPACT_BYTES and line > PAGE, (size, line)
        # Two free pages: the append takes one, and the copy could write only 4,096 of its bytes.
        fill_leaving(mountpoint, pages=2)
        assert free_pages(mountpoint) == 2
        try:
            updated = store.update_status("big", _with_error(4200))
        except StoreError:
            updated = None
        record = store.read_status("big")
        assert record is not None, f"the request vanished: its log is {os.path.getsize(log)} bytes"
        if updated is not None:  # the update stood: it is the latest version
            assert record == updated
        with open(log, "rb") as handle:
            assert handle.read().endswith(b"\n")
        assert [name for name in os.listdir(log.parent) if name.endswith(".tmp")] == []
