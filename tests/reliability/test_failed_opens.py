"""Attack: a store write whose open fails must not take away a file that was already there.

``_write_new`` creates a file with ``O_EXCL`` and, when the write failed, removed
the path, taking the file for its own. But an open can fail before the kernel
looks at the path at all: with ``EMFILE`` (the process's file-descriptor limit,
``RLIMIT_NOFILE``; an application server near it) the error comes before
``EEXIST``. A resubmit of an existing request ID then deleted that request's
file: the accepted request lost its spec and its next message was dead-lettered
as "not in this store". The same for a response's metadata log.
"""

from __future__ import annotations

import contextlib
import os
import resource
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bghttp import StoreError
from bghttp.models import RequestSpec
from bghttp.store import FileStore


@contextlib.contextmanager
def descriptors_left(free: int) -> Iterator[None]:
    """Use up this process's file descriptors but ``free`` (a real EMFILE for the next open)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 4096), hard))
    held: list[int] = []
    try:
        with contextlib.suppress(OSError):
            while True:
                held.append(os.open("/dev/null", os.O_RDONLY))
        for _ in range(free):
            os.close(held.pop())
        yield
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _spec(request_id: str) -> RequestSpec:
    return RequestSpec(
        request_id=request_id,
        method="POST",
        url="http://127.0.0.1:9/x",
        headers=[],
        timeout=5.0,
        max_retries=0,
        created_at=time.time(),
        has_body=True,
    )


def test_a_resubmit_that_cannot_open_a_file_leaves_the_existing_request(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store", fsync=False)
    assert store.create_request(_spec("order-7"), body=b"the first body") is not None
    with descriptors_left(1), pytest.raises(StoreError):  # the ID lock takes the one left
        store.create_request(_spec("order-7"), body=b"the first body")
    spec = store.load_request("order-7")
    assert spec is not None, "the existing request's file was deleted by a failed resubmit"
    assert store.read_request_body("order-7") == b"the first body"


def test_saving_a_response_that_cannot_open_its_metadata_keeps_the_last_ones(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store", fsync=False)
    store.create_request(_spec("r1"), body=b"x")
    with store.open_response_part("r1") as out:
        out.write(b"first")
    store.commit_response("r1", {"status_code": 200, "size": 5})
    with store.open_response_part("r1") as out:
        out.write(b"second")
    with descriptors_left(0), pytest.raises(StoreError):
        store.commit_response("r1", {"status_code": 201, "size": 6})
    assert store.read_response_metadata("r1") is not None, "the metadata log was deleted"
    # The previous response stays whole: its body under its own metadata.
    assert store.read_response_metadata("r1")["status_code"] == 200  # type: ignore[index]
    assert store.response_file_path("r1").read_bytes() == b"first"
