"""Review of attack21d: ``rewrite_final`` runs without the request's claim.

A message retried after a failed commit (``after_failure``) that meets a final
record writes it again (``store.rewrite_final``, "called under the claim"). The
runner did so on its DROP path even when another holder had the claim
(``claimed`` False), so nothing kept a remove, or a replace by another request
of the ID, out of the middle of the rewrite: the old request's response body,
copied before the replace, was renamed into place after it, as the new
request's response (before it ever ran). Real files; the replace is done by
another ``FileStore`` at the moment the rewrite copies the body.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import httpx
import pytest

import bghttp.store
from bghttp import store_files
from bghttp.config import Settings
from bghttp.durability import NotDurable
from bghttp.models import Phase, RequestStatus
from bghttp.store import FileStore
from bghttp.validation import prepare_request
from bghttp.worker import runner as runner_module
from bghttp.worker.runner import RequestRunner

OLD_BODY = b"the old request's answer"


def test_a_rewrite_after_a_failed_commit_does_not_put_the_old_body_under_a_new_request_of_the_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FileStore(tmp_path / "store")
    published: list[tuple[str, int, float | None]] = []
    runner = RequestRunner(
        store,
        Settings(store_dir=store.root),
        httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(200, content=OLD_BODY))),
        lambda request_id, token, delay: published.append((request_id, token, delay)),
    )
    assert store.create_request(prepare_request("GET", "http://old.test/", request_id="r").spec) is not None
    runner.run("r", 1)
    record = store.read_status("r")
    assert record is not None and record.status is RequestStatus.COMPLETED
    assert store.response_file_path("r").read_bytes() == OLD_BODY

    other = FileStore(tmp_path / "store")  # a client, or another worker's stale message holding the claim
    holder = contextlib.ExitStack()
    assert holder.enter_context(other.claim("r"))
    replaced: list[bool] = []

    def replace_by_a_new_request() -> None:
        holder.close()  # the holder is done; then a client replaces the finished request
        assert other.delete("r")
        assert other.create_request(prepare_request("GET", "http://new.test/", request_id="r").spec) is not None
        replaced.append(True)

    real_write_all = store_files.write_all

    def write_all(fd: int, data: Any, *args: Any) -> None:
        if bytes(data) == OLD_BODY and not replaced:  # the rewrite copies the body: its source is open
            replace_by_a_new_request()
        real_write_all(fd, data, *args)

    monkeypatch.setattr(bghttp.store, "write_all", write_all)
    monkeypatch.setattr(runner_module, "SUCCESSOR_CLAIM_WAIT_SECONDS", 0.0)  # defer at once if it must wait
    try:
        runner.run("r", 1, after_failure=True, retried=True)
        deferred = False
    except NotDurable:
        deferred = True  # retried by Dramatiq, with the option that says its commit failed
    if not replaced:
        assert deferred and published == [], "handed back without the rewrite it owes (a new message has no option)"
        replace_by_a_new_request()

    new = store.read_status("r")
    assert new is not None and new.phase is Phase.QUEUED and not new.attempts
    assert not store.response_file_path("r").exists(), (
        f"the new request, never run, has the old one's body: {store.response_file_path('r').read_bytes()!r}"
    )
