"""The client: submit requests, read their status and responses.

A submit validates its input, saves the request in the store, then publishes one
message and waits for the broker's confirm while the new files are fsynced. It
returns only when both are done, and then marks the status record
``published``; if the broker does not confirm, the stored request is removed
again and ``BrokerUnavailable`` is raised, so a returned ``RequestInfo`` always
means "accepted, on disk and on its way".

A second submit of an ID whose first message is not confirmed yet (its
submitter still waits for the broker, or died) publishes the message itself (a
duplicate with the same token is dropped by the worker), so it too returns only
what is on its way; and a first submitter whose publish fails keeps a request
that someone else confirmed meanwhile.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import dramatiq

from . import bulk
from .broker import create_broker, publish_request
from .bulk import BulkRequest
from .config import Settings
from .errors import (
    BrokerUnavailable,
    InvalidArgument,
    RequestExists,
    RequestRunning,
    StoreError,
    UnknownRequest,
    WaitTimeout,
)
from .models import Phase, RequestInfo, RequestStatus, Response, StatusRecord
from .redaction import redact_url
from .store import FileStore, validate_request_id
from .validation import FilesArg, HeadersArg, PreparedRequest, QueryArg, prepare_request

OnConflict = Literal["return", "reject", "replace"]
#: Rounds a submit goes through while others remove and create its ID meanwhile.
SUBMIT_ROUNDS = 20
#: How long ``remove`` waits for a cancelled attempt to stop before raising RequestRunning.
REMOVE_WAIT_SECONDS = 10.0


class BackgroundHttpClient:
    """Submit HTTP requests to run in the background, durably.

    ``broker`` is a broker URL, ``"local"`` for the embedded in-process worker,
    or a ready Dramatiq broker (tests). Settings not given come from ``BGHTTP_*``
    environment variables.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        broker: str | dramatiq.Broker | None = None,
        store_dir: str | Path | None = None,
        on_conflict: OnConflict = "return",
    ) -> None:
        overrides: dict[str, Any] = {}
        if isinstance(broker, str):
            overrides["broker_url"] = broker
        if store_dir is not None:
            overrides["store_dir"] = Path(store_dir)
        base = settings or Settings.from_env()
        self.settings = Settings(**{**base.__dict__, **overrides}) if overrides else base
        if on_conflict not in ("return", "reject", "replace"):
            raise InvalidArgument(f"on_conflict must be 'return', 'reject' or 'replace', not {on_conflict!r}")
        self.on_conflict = on_conflict
        self.store = FileStore(self.settings.store_dir, fsync=self.settings.fsync)
        # fsyncs of new requests run here while the submitting thread waits for the broker.
        self._syncer = ThreadPoolExecutor(max_workers=4, thread_name_prefix="bghttp-fsync")
        self._local_worker: Any = None
        if isinstance(broker, dramatiq.Broker):
            self.broker = broker
        elif self.settings.is_local:
            from .local import LocalWorker  # type: ignore[import-not-found,unused-ignore]  # built only when asked for

            self._local_worker = LocalWorker(self.settings, self.store)
            self.broker = self._local_worker.broker
        else:
            self.broker = create_broker(self.settings)

    # ------------------------------------------------------------- submits
    def request(
        self,
        method: str,
        url: str,
        *,
        data: Any = None,
        headers: HeadersArg = None,
        query_parameters: QueryArg = None,
        timeout: float | None = None,
        request_id: str | None = None,
        retries: int = 0,
        fields: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None,
        files: FilesArg = None,
        multipart: bool = False,
    ) -> RequestInfo:
        """Submit any request; returns once it is stored and the broker confirmed it."""
        prepared = prepare_request(
            method,
            url,
            data=data,
            headers=headers,
            query_parameters=query_parameters,
            timeout=timeout,
            request_id=request_id,
            retries=retries,
            fields=fields,
            files=files,
            multipart=multipart,
            default_timeout=self.settings.default_timeout,
        )
        return self._submit(prepared)

    def _submit(self, prepared: PreparedRequest) -> RequestInfo:
        """Store ``prepared`` (or settle on the request that has its ID) and see it on its way."""
        for _ in range(SUBMIT_ROUNDS):
            record, created = self._store_or_existing(prepared)
            unconfirmed = created or not (record.published or record.is_terminal)
            if unconfirmed and not self._confirm(record, created):
                continue  # the unconfirmed request we found is gone: submit ours
            return RequestInfo(record.request_id, self.store.request_path(record.request_id), record.status)
        raise RequestExists(f"request {prepared.spec.request_id!r} keeps being removed and created by others")

    def _store_or_existing(self, prepared: PreparedRequest) -> tuple[StatusRecord, bool]:
        """``(its new record, True)``, or by ``on_conflict`` ``(the record that has the ID, False)``."""
        request_id = prepared.spec.request_id
        for _ in range(SUBMIT_ROUNDS):
            with self.store.syncs_deferred():  # made durable in _publish_durably
                record = self.store.create_request(prepared.spec, body=prepared.body, files=prepared.files)
            if record is not None:
                return record, True
            existing = self._resolve_conflict(request_id)
            if existing is not None:
                return existing, False
        raise RequestExists(f"request {request_id!r} keeps being removed and created by others")

    def _confirm(self, record: StatusRecord, created: bool) -> bool:
        """Publish the first message of ``record``'s request durably, then mark it published.

        True: the request is stored and on its way. False: a request this call
        did not create was removed or replaced before it could be marked (the
        caller submits its own). When the publish fails, the creator removes the
        request, unless someone else confirmed it or a worker took it up
        meanwhile (then it is accepted after all); a caller that did not create
        it never removes it (its creator, or recovery, still may send it).
        """
        request_id, generation = record.request_id, record.generation
        try:
            self._publish_durably(request_id, record.token)
        except BaseException as error:
            kept = created and not self.store.discard_unconfirmed(request_id, generation)
            if kept and isinstance(error, Exception) and not isinstance(error, StoreError):
                return True  # another message got through: on its way
            raise
        return self.store.mark_published(request_id, generation) or created

    def _publish_durably(self, request_id: str, token: int) -> None:
        """Publish the first run while the request's new files are fsynced; return when both are done.

        The submit then waits for the slower of the two, not for their sum.
        Publishing first is safe: the files are written (a worker that gets the
        message reads them), only not yet on disk, and the caller has no
        ``RequestInfo`` until they are, so a crash in between loses nothing that
        was accepted. Raises what the publish raised, or ``StoreError`` if the
        fsync failed (a failing disk); ``_confirm`` decides what to remove.
        """
        sync = self._syncer.submit(self.store.sync_new_request, request_id) if self.store.fsync else None
        try:
            self._publish(request_id, token)
        except BaseException:
            if sync is not None:
                with contextlib.suppress(Exception):
                    sync.result()
            raise
        if sync is not None:
            sync.result()

    def _resolve_conflict(self, request_id: str) -> StatusRecord | None:
        """Apply ``on_conflict`` to an ID that exists: the record to return, or None to create again.

        Creation and removal of an ID exclude each other (the store's ID lock),
        so a request found here is whole; None also when it vanished meanwhile.
        """
        if self.on_conflict == "reject":
            raise RequestExists(f"request {request_id!r} exists already")
        if self.on_conflict == "return":
            return self.store.read_status(request_id)
        try:
            # Under its claim: no attempt runs it while it goes; a message of it
            # that comes later finds nothing, or a request of another generation.
            self.store.delete(request_id)
        except RequestRunning:
            raise RequestExists(f"request {request_id!r} is running; it cannot be replaced now") from None
        return None

    def _publish(self, request_id: str, token: int, delay: float | None = None) -> None:
        if self._local_worker is not None:
            self._local_worker.start()
            self._check_local_worker()
        publish_request(self.broker, self.settings.queue_name, request_id, token, delay)

    def _check_local_worker(self) -> None:
        """Local mode: raise LocalWorkerDied if the in-process worker stopped working (else a wait would hang)."""
        if self._local_worker is not None:
            self._local_worker.raise_if_dead()

    def get(self, url: str, **options: Any) -> RequestInfo:
        return self.request("GET", url, **options)

    def head(self, url: str, **options: Any) -> RequestInfo:
        return self.request("HEAD", url, **options)

    def delete(self, url: str, **options: Any) -> RequestInfo:
        """Submit an HTTP DELETE. (To remove a request from the store, use ``remove``.)"""
        return self.request("DELETE", url, **options)

    def post(self, url: str, **options: Any) -> RequestInfo:
        return self.request("POST", url, **options)

    def put(self, url: str, **options: Any) -> RequestInfo:
        return self.request("PUT", url, **options)

    def patch(self, url: str, **options: Any) -> RequestInfo:
        return self.request("PATCH", url, **options)

    def post_multipart(self, url: str, **options: Any) -> RequestInfo:
        return self.request("POST", url, multipart=True, **options)

    def submit_many(self, requests: Iterable[BulkRequest | Mapping[str, Any]]) -> list[RequestInfo]:
        """Submit many requests at once, all or nothing (see ``bghttp.bulk.submit_many``)."""
        return bulk.submit_many(self, requests)

    # --------------------------------------------------------------- reads
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
            headers=[(str(k), str(v)) for k, v in metadata["headers"]],
            response_file_path=self.store.response_body_path(request_id),
            status=record.status,
            error=record.last_error if record.status is not RequestStatus.COMPLETED else None,
            url=None if metadata.get("url") is None else redact_url(str(metadata["url"])),  # also older stores' files
            http_version=metadata.get("http_version"),
            elapsed_ms=metadata.get("elapsed_ms"),
            size=metadata.get("size"),
        )

    def wait(self, request_id: str, timeout: float | None = None, *, poll_interval: float = 0.05) -> StatusRecord:
        """Block until the request is terminal; raise WaitTimeout after ``timeout`` seconds."""
        if timeout is not None and not 0 <= timeout < float("inf"):  # a NaN deadline would never come
            raise InvalidArgument(f"timeout must be a number of seconds >= 0 or None, not {timeout!r}")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._check_local_worker()
            record = self.get_request_status(request_id)
            if record is None:
                raise UnknownRequest(f"no request {request_id!r} in the store")
            if record.is_terminal:
                return record
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"request {request_id!r} is still {record.phase.value} after {timeout}s")
            time.sleep(poll_interval)

    def list(self, status: RequestStatus | str | None = None, limit: int | None = None) -> list[StatusRecord]:
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

    # -------------------------------------------------------------- changes
    def cancel(self, request_id: str) -> StatusRecord:
        """Cancel a request that is not terminal; a running one stops at its next check."""
        validate_request_id(request_id)
        return self.store.update_status(
            request_id,
            lambda r: r.evolve(status=RequestStatus.CANCELLED, phase=Phase.DONE, completed_at=time.time()),
        )

    def remove(self, request_id: str, *, wait: float = REMOVE_WAIT_SECONDS) -> bool:
        """Remove every file of a request; False if it was unknown.

        An unfinished request is cancelled first. If a worker is running it,
        this waits up to ``wait`` seconds for the attempt to stop, then raises
        ``RequestRunning`` (the request stays, cancelled). Once this returned,
        no attempt of the removed request writes into the store again.
        """
        validate_request_id(request_id)
        with contextlib.suppress(UnknownRequest):
            self.cancel(request_id)
        return self.store.delete(request_id, wait=wait)

    def close(self) -> None:
        self._syncer.shutdown(wait=True)
        if self._local_worker is not None:
            self._local_worker.stop()
        with contextlib.suppress(Exception):  # closing a broken connection must not hide the caller's error
            self.broker.close()

    def __enter__(self) -> BackgroundHttpClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


__all__ = ["BackgroundHttpClient", "BrokerUnavailable"]
