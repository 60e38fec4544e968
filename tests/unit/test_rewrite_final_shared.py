"""Review of attack21d: ``rewrite_final`` on a shared store (NFS, GlusterFS: ``shared_fs``).

``shared_fs`` (measured on two GlusterFS mounts): "a file renamed over or removed
through one mount was still opened (the old one) through the other for a
second ... so on such a store ... a record log is never replaced by a rename"
(``_append_record`` never compacts one there either). ``rewrite_final`` wrote
the status log and the response log again as new files renamed over the old
ones on every store: a host that opened the old status log in that second
appends its version to a file no longer at the path, and the version is lost.
Here the rule itself is checked (one host cannot show another's cache).
"""

from __future__ import annotations

import time
from pathlib import Path

from bghttp.models import Phase, RequestStatus
from bghttp.store import FileStore
from bghttp.validation import prepare_request


def test_a_rewrite_on_a_shared_store_replaces_no_record_log(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    store.shared = True  # as for a store on NFS or GlusterFS (``shared_fs``)
    assert store.create_request(prepare_request("GET", "http://service.test/", request_id="r").spec) is not None
    with store.open_response_part("r") as part:
        part.write(b"answer")
    store.commit_response("r", {"status_code": 200})
    final = store.update_status(
        "r", lambda r: r.evolve(status=RequestStatus.COMPLETED, phase=Phase.DONE, completed_at=time.time())
    )
    logs = [store.root / "status" / "r.log", store.root / "responses" / "r.meta.log"]
    assert all(path.exists() for path in logs)
    before = {path: path.stat().st_ino for path in logs}

    store.rewrite_final("r")

    assert {path: path.stat().st_ino for path in logs} == before, "a record log was replaced by a rename"
    assert FileStore(store.root).read_status("r") == final
    assert FileStore(store.root).read_response_metadata("r") == {"status_code": 200}
    assert store.response_file_path("r").read_bytes() == b"answer"
