"""Reading the store: status records, saved responses, listings and waits; no broker.

The client's read methods are these (:class:`StoreReader`), and the CLI's
reading commands (``status``, ``response``, ``wait``, ``ls``) use them alone:
this module and what it imports load neither Dramatiq, pika, httpx nor asyncio,
so those commands start in a fraction of a full client's time
(tests/cli/test_startup.py keeps it so).
"""

from __future__ import annotations

import builtins
import functools
from collections.abc import Callable
from typing import Unpack

from .errors import InvalidArgument
from .models import Headers, RequestStatus, Response, StatusRecord
from .redaction import redact_url
from .store import FileStore, validate_request_id
from .waiting import Wait, WaitOptions


class StoreReader:
    """Reads requests of one store; the read half of :class:`~bghttp.BackgroundHttpClient`."""

    def __init__(self, store: FileStore) -> None:
        self.store = store

    def get_request_status(self, request_id: str) -> StatusRecord | None:
        """The status record, or None for an unknown ID."""
        return self.store.read_status(validate_request_id(request_id))

    def get_response(self, request_id: str) -> Response | None:
        """The saved response (the last one, for a failed request), or None."""
        metadata = self.store.read_response_metadata(validate_request_id(request_id))
        record = self.store.read_status(request_id)
        if metadata is None or record is None:
            return None
        return Response(
            request_id=request_id,
            status_code=metadata["status_code"],
            headers=Headers((str(k), str(v)) for k, v in metadata["headers"]),
            response_file_path=self.store.response_file_path(request_id),
            status=record.status,
            error=record.last_error if record.status is not RequestStatus.COMPLETED else None,
            url=None if metadata.get("url") is None else redact_url(str(metadata["url"])),  # also older stores' files
            http_version=metadata.get("http_version"),
            elapsed_ms=metadata.get("elapsed_ms"),
            size=metadata.get("size"),
        )

    def received_bytes(self, request_id: str) -> int | None:
        """How much of the response a running attempt has streamed so far (None if nothing is streaming)."""
        return self.store.partial_response_size(validate_request_id(request_id))

    def list(self, status: RequestStatus | str | None = None, limit: int | None = None) -> builtins.list[StatusRecord]:
        """Status records, newest first, optionally only those with ``status``."""
        try:
            wanted = None if status is None else RequestStatus(status)
        except ValueError:
            accepted = ", ".join(s.value for s in RequestStatus)
            raise InvalidArgument(f"status must be one of {accepted} or None, not {status!r}") from None
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise InvalidArgument(f"limit must be a whole number >= 0 or None, not {limit!r}")
        records = [r for r in self.store.statuses() if wanted is None or r.status is wanted]
        records.sort(key=lambda r: r.created_at, reverse=True)
        return records if limit is None else records[:limit]

    def wait_loop(
        self,
        request_id: str,
        timeout: float | None = None,
        *,
        before_read: Callable[[], None] | None = None,
        **options: Unpack[WaitOptions],
    ) -> Wait:
        """The wait loop ``wait`` runs (the async client runs it with ``asyncio.sleep``).

        ``before_read`` runs before each status read and raises to stop waiting.
        """
        return Wait(request_id, timeout, where=f"the store {self.store.location}", before_read=before_read, **options)

    def wait(self, request_id: str, timeout: float | None = None, **options: Unpack[WaitOptions]) -> StatusRecord:
        """Block until the request is terminal; raise WaitTimeout after ``timeout`` seconds."""
        waiting = self.wait_loop(request_id, timeout, **options)
        return waiting.run(functools.partial(self.get_request_status, request_id))

    def close(self) -> None:
        """Nothing to release; here so that a reader and a client are used alike (``with``)."""

    def __enter__(self) -> StoreReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


__all__ = ["StoreReader"]
