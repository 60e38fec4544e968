"""Every OSError while a response is saved is an outcome: disk_full for want of room, wherever it shows.

httpx.MockTransport answers; the store's response file is wrapped to fail at one
step of its life (open, write, the flush in ``close()``, the commit).
"""

from __future__ import annotations

import errno
import io
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from bghttp.errors import StoreError
from bghttp.store import FileStore
from bghttp.worker.execution import perform_attempt
from bghttp.worker.retry_policy import Outcome
from tests.reliability.attempts import stored_spec


class FailingFile(io.BufferedWriter):
    """A real buffered file whose ``fail_at`` step ("write" or "close") raises ``OSError(code)``."""

    def __init__(self, raw: Any, fail_at: str, code: int) -> None:
        super().__init__(raw)
        self.fail_at, self.code = fail_at, code

    def write(self, data: Any) -> int:
        if self.fail_at == "write":
            raise OSError(self.code, "injected")
        return super().write(data)

    def close(self) -> None:
        if self.fail_at == "close" and not self.closed:
            super().close()
            raise OSError(self.code, "injected")
        super().close()


class FailingStore(FileStore):
    def __init__(self, root: Path, fail_at: str, code: int) -> None:
        super().__init__(root, fsync=False)
        self.fail_at, self.code = fail_at, code

    def open_response_part(self, request_id: str) -> IO[bytes]:
        if self.fail_at == "open":
            raise OSError(self.code, "injected")
        out = super().open_response_part(request_id)
        return FailingFile(out.detach(), self.fail_at, self.code)  # type: ignore[attr-defined]

    def commit_response(self, request_id: str, metadata: dict[str, Any]) -> Path:
        if self.fail_at == "commit":
            raise StoreError("cannot save the response") from OSError(self.code, "injected")
        return super().commit_response(request_id, metadata)


def attempt(tmp_path: Path, fail_at: str, code: int, **options: Any) -> tuple[Outcome, str | None, FileStore]:
    store = FailingStore(tmp_path / "store", fail_at, code)
    spec = stored_spec(store, "http://service.test/x")
    http = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200, content=b"small body")))
    result = perform_attempt(http, store, spec, **options)
    return result.outcome, result.error, store


@pytest.mark.parametrize("fail_at", ["open", "write", "close", "commit"])
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EFBIG])
def test_no_room_at_any_step_of_saving_is_disk_full(tmp_path: Path, fail_at: str, code: int) -> None:
    outcome, error, store = attempt(tmp_path, fail_at, code)
    assert outcome is Outcome.DISK_FULL, error
    assert error and "no space left" in error
    assert not store.response_part_path("r1").exists()


@pytest.mark.parametrize("fail_at", ["open", "write", "close", "commit"])
def test_another_error_while_saving_is_store_error(tmp_path: Path, fail_at: str) -> None:
    outcome, error, _ = attempt(tmp_path, fail_at, errno.EIO)
    assert outcome is Outcome.STORE_ERROR, error
    assert error and "cannot save the response" in error


def test_a_close_that_fails_after_the_size_limit_keeps_the_limit_as_the_outcome(tmp_path: Path) -> None:
    outcome, error, store = attempt(tmp_path, "close", errno.ENOSPC, max_response_bytes=4)
    assert outcome is Outcome.TOO_LARGE, error
    assert not store.response_part_path("r1").exists()
