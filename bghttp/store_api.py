"""The store's contract: what bghttp needs from the record of truth, whatever holds it.

:class:`~bghttp.store.FileStore` (a local or shared directory) implements it;
a store on another medium (a shared filesystem with other caching rules, an
object store) implements the same methods and passes the same contract tests
(``tests/unit/test_store_contract.py``). The runner, the gate, recovery, the
local worker, the submit path and the lifecycle see only this.

The guarantees every implementation gives:

* **Ownership.** Creating and removing one ID exclude each other; a removal
  never runs while an attempt holds the request's claim; every request gets a
  new ``generation``.
* **Status changes are serialized.** ``update_status`` applies a change to the
  current record under the request's status lock; a terminal record is final
  unless ``amend_terminal`` (an amend that keeps the status, or a replay).
* **Durability.** A write counts once it is durable; inside a ``batch()`` the
  thread's writes become durable together when the batch commits (the caller
  says where the unit of work ends, never how to sync).
* **Readers never see half a record**, and reading never writes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, Protocol

from .models import RequestSpec, StatusRecord


class Batch(Protocol):
    """A unit of work opened by ``Store.batch()``."""

    def add_request(self, request_id: str) -> None:
        """Make every file of this stored request durable at the commit (also ones another submitter wrote)."""

    @property
    def needs_commit(self) -> bool: ...

    def commit(self) -> None:
        """Make the batch's writes durable now (may run on another thread); StoreError if that fails."""


class Store(Protocol):
    # -------------------------------------------------------- where things are
    @property
    def location(self) -> str:
        """Where the store is, for messages and logs."""

    def request_file_path(self, request_id: str) -> Path:
        """The saved request a submit's ``RequestInfo`` names."""

    def response_file_path(self, request_id: str) -> Path:
        """The last response's body that ``Response.response_file_path`` names."""

    # ---------------------------------------------------------------- requests
    def create_request(
        self, spec: RequestSpec, *, body: bytes | None = None, files: list[tuple[Path, str]] | None = None
    ) -> StatusRecord | None:
        """Save a new request and its first status record; None if the ID exists (nothing changed)."""

    def load_request(self, request_id: str) -> RequestSpec | None: ...

    def read_request_body(self, request_id: str) -> bytes: ...

    def open_request_file(self, request_id: str, stored_name: str) -> IO[bytes]: ...

    # ---------------------------------------------------------------- statuses
    def read_status(self, request_id: str) -> StatusRecord | None: ...

    def status_stamp(self, request_id: str) -> Hashable | None:
        """A cheap value that changes whenever the status record may have changed (None: cannot tell, read it).

        Equal stamps mean the record was not changed in between, so a reader
        that polls (a running attempt's cancel check) reads it only when it differs.
        """

    def update_status(
        self,
        request_id: str,
        change: Callable[[StatusRecord], StatusRecord | None],
        *,
        durable: bool = True,
        amend_terminal: bool = False,
    ) -> StatusRecord:
        """Apply ``change`` under the status lock; the record afterwards. UnknownRequest if gone."""

    # ------------------------------------------------------------------ claims
    def claim(self, request_id: str) -> contextlib.AbstractContextManager[bool]:
        """Hold the request's claim for the block (False: another holds it); released if the holder dies."""

    # --------------------------------------------------------------- responses
    def open_response_part(self, request_id: str) -> IO[bytes]:
        """Open the file a response body is streamed into (under the claim)."""

    def commit_response(self, request_id: str, metadata: dict[str, Any]) -> Path:
        """Save the streamed body's metadata, then move the body into place (``move_response_body``)."""

    def discard_partial_response(self, request_id: str) -> None: ...

    def move_response_body(self, request_id: str) -> Path:
        """Move the streamed body into place (the end of a commit a dead worker left half done)."""

    def abandon_response(self, request_id: str) -> None:
        """Remove an answer whose metadata was saved but whose streamed body is not whole (and that body)."""

    def partial_response_size(self, request_id: str) -> int | None: ...

    def read_response_metadata(self, request_id: str) -> dict[str, Any] | None: ...

    # ----------------------------------------------------------------- listing
    def request_ids(self) -> Iterator[str]: ...

    def statuses(self) -> Iterator[StatusRecord]: ...

    # ----------------------------------------------------------------- removal
    def delete(
        self, request_id: str, *, wait: float = 0.0, only_if: Callable[[StatusRecord | None], bool] | None = None
    ) -> bool:
        """Remove every file of a request (never while an attempt runs it); False if absent or refused."""

    def discard_unconfirmed(self, request_id: str, generation: str) -> bool:
        """Take back a request whose submit could not publish it; False if it must stay."""

    def was_removed(self, request_id: str) -> bool:
        """Whether this store removed the request (``delete``): a late message of it is expected here."""

    def rewrite_final(self, request_id: str) -> None:
        """Write the request's status record and saved response again as new files, made durable now
        (a retry of a run whose commit failed: the pages a failed writeback lost are not written by a sync)."""

    def keep_owed_event(self, record: StatusRecord) -> None:
        """Keep a final record whose event could not be published (best effort), for a retried message of
        its request; beside those kept before (of an earlier request of the ID, removed since)."""

    def owed_events(self, request_id: str) -> list[StatusRecord]:
        """The final records ``keep_owed_event`` kept for the request ID, oldest first (also after a removal)."""

    def forget_owed_events(self, request_id: str, announced: Iterable[StatusRecord]) -> None:
        """The events of ``announced``, kept by ``keep_owed_event``, are out."""

    def prune_removal_marks(self, older_than: float) -> int:
        """Forget removals older than ``older_than`` seconds; how many were forgotten."""

    # -------------------------------------------------------------- durability
    def batch(self, *, shared: bool = True) -> contextlib.AbstractContextManager[Batch]:
        """Open a unit of work in this thread; its writes become durable together when it ends."""


__all__ = ["Batch", "Store"]
