"""The client: submit requests, read their status and responses, manage the store.

A submit validates its input and hands it to the one submit path
(:mod:`bghttp.submission`): it returns only when the request is stored, on disk
and confirmed by the broker, so a returned ``RequestInfo`` always means
"accepted, on disk and on its way". Status changes (cancel) are the lifecycle's
(:mod:`bghttp.lifecycle`); waiting is :mod:`bghttp.waiting`'s loop.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Unpack

import dramatiq

from . import bulk, lifecycle
from .broker import create_broker, publish_request
from .bulk import BulkRequest
from .config import Settings
from .errors import BrokerUnavailable, InvalidArgument, RequestRunning, RetryRefused, UnknownRequest
from .events import EventPublisher
from .lifecycle import RequestLifecycle
from .logs import get_logger
from .models import RequestInfo, RequestStatus, Response, StatusRecord
from .reading import StoreReader
from .recovery import recover_pending
from .store import FileStore, validate_request_id
from .submission import OnConflict, Submission, check_on_conflict
from .validation import (
    FieldsArg,
    FilesArg,
    HeadersArg,
    QueryArg,
    RequestDict,
    RequestOptions,
    SubmitOptions,
    prepare_request,
    with_keyword_hints,
)
from .waiting import Wait, WaitOptions

#: How long ``remove`` waits for a cancelled attempt to stop before raising RequestRunning.
REMOVE_WAIT_SECONDS = 10.0
#: How long the store remembers that it removed a request (so that a late message of it is
#: dropped, not dead-lettered as another store's); ``gc`` forgets older removals. No
#: message of a removed request lives this long (the longest delay is BGHTTP_MAX_RETRY_AFTER).
REMOVAL_MEMORY_SECONDS = 7 * 24 * 3600.0
#: How long ``retry`` waits for a claim held by another (a concurrent replay, a stopping attempt).
REPLAY_CLAIM_WAIT_SECONDS = 2.0


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
        self.on_conflict = check_on_conflict(on_conflict)
        self.store = FileStore(self.settings.store_dir, fsync=self.settings.fsync)
        self.lifecycle = RequestLifecycle(self.store)
        self._reads = StoreReader(self.store)
        self._local_worker: Any = None
        if isinstance(broker, dramatiq.Broker):
            self.broker = broker
        elif self.settings.is_local:
            from .worker.local import LocalWorker  # built only when asked for

            self._local_worker = LocalWorker(self.settings, self.store)
            self.broker = self._local_worker.broker
        else:
            self.broker = create_broker(self.settings)
        self._submission = Submission(
            self.store, self.on_conflict, self._publish, self._publish_many, queue=self.settings.queue_name
        )
        self._events = EventPublisher.for_broker(self.broker, self.settings)

    # ------------------------------------------------------------- submits
    @with_keyword_hints
    def request(
        self,
        method: str,
        url: str,
        *,
        data: Any = None,
        json: Any = None,
        headers: HeadersArg = None,
        query_parameters: QueryArg = None,
        timeout: float | None = None,
        request_id: str | None = None,
        retries: int = 0,
        fields: FieldsArg = None,
        files: FilesArg = None,
        multipart: bool = False,
        metadata: Mapping[str, Any] | None = None,
        on_complete: Mapping[str, str] | None = None,
    ) -> RequestInfo:
        """Submit any request; returns once it is stored and the broker confirmed it.

        ``data``: a dict or list is sent as JSON, a str as UTF-8 text, bytes as
        they are; ``json``: any JSON value, sent as JSON (not with ``data``).
        ``metadata``: a small JSON object (at most 4 KiB) kept with the request and
        shown in its status and final event. ``on_complete={"queue": ..., "actor": ...}``:
        the final event is also sent to that Dramatiq actor (see docs/messages.md).
        """
        prepared = prepare_request(
            method,
            url,
            data=data,
            json=json,
            headers=headers,
            query_parameters=query_parameters,
            timeout=timeout,
            request_id=request_id,
            retries=retries,
            fields=fields,
            files=files,
            multipart=multipart,
            metadata=metadata,
            on_complete=on_complete,
            default_timeout=self.settings.default_timeout,
        )
        return self._submission.submit(prepared)


    def _publish(self, request_id: str, token: int, delay: float | None = None) -> None:
        if self._local_worker is not None:
            self._local_worker.start()
            self._check_local_worker()
        publish_request(self.broker, self.settings.queue_name, request_id, token, delay)

    def _publish_many(self, messages: list[tuple[str, int]]) -> None:
        if self._local_worker is not None:
            self._local_worker.start()
            self._check_local_worker()
        bulk.publish_batch(self.broker, self.settings.queue_name, messages, self._publish)

    def _check_local_worker(self) -> None:
        """Local mode: raise LocalWorkerDied if the in-process worker stopped working (else a wait would hang)."""
        if self._local_worker is not None:
            self._local_worker.raise_if_dead()

    def get(self, url: str, **options: Unpack[RequestOptions]) -> RequestInfo:
        return self.request("GET", url, **options)

    def head(self, url: str, **options: Unpack[RequestOptions]) -> RequestInfo:
        return self.request("HEAD", url, **options)

    def delete(self, url: str, **options: Unpack[RequestOptions]) -> RequestInfo:
        """Submit an HTTP DELETE. (To remove a request from the store, use ``remove``.)"""
        return self.request("DELETE", url, **options)

    def post(self, url: str, **options: Unpack[RequestOptions]) -> RequestInfo:
        return self.request("POST", url, **options)

    def put(self, url: str, **options: Unpack[RequestOptions]) -> RequestInfo:
        return self.request("PUT", url, **options)

    def patch(self, url: str, **options: Unpack[RequestOptions]) -> RequestInfo:
        return self.request("PATCH", url, **options)

    def post_multipart(self, url: str, **options: Unpack[SubmitOptions]) -> RequestInfo:
        return self.request("POST", url, multipart=True, **options)

    def submit_many(self, requests: Iterable[BulkRequest | RequestDict]) -> list[RequestInfo]:
        """Submit many requests at once, all or nothing; their ``RequestInfo`` in the same order.

        Each item is a :class:`BulkRequest` or a mapping with the keywords of
        :meth:`request` (``method`` and ``url`` required). Raises
        ``InvalidRequest`` before anything is stored if one item is invalid or two
        share a ``request_id``, and ``BrokerUnavailable`` if the broker did not
        take the batch; in both cases no request of this call is left in the
        store. An ID that exists already is handled by ``on_conflict`` (with
        ``replace``, the old request is removed as the batch is stored, and stays
        removed if the batch then fails).
        """
        return self._submission.submit_many(bulk.prepare_all(requests, self.settings.default_timeout))

    # --------------------------------------------------------------- reads
    # The reads are the store reader's (bghttp.reading), which the CLI's reading commands use alone.
    def get_request_status(self, request_id: str) -> StatusRecord | None:
        """The status record, or None for an unknown ID."""
        return self._reads.get_request_status(request_id)

    def get_response(self, request_id: str) -> Response | None:
        """The saved response (the last one, for a failed request), or None."""
        return self._reads.get_response(request_id)

    def wait(self, request_id: str, timeout: float | None = None, **options: Unpack[WaitOptions]) -> StatusRecord:
        """Block until the request is terminal; raise WaitTimeout after ``timeout`` seconds.

        ``poll_interval`` (default 0.05 s) is how often the status is read;
        ``on_poll`` is called with every unfinished record read meanwhile (a progress display).
        """
        waiting = self._wait_loop(request_id, timeout, **options)
        return waiting.run(functools.partial(self.get_request_status, request_id))

    def _wait_loop(self, request_id: str, timeout: float | None = None, **options: Unpack[WaitOptions]) -> Wait:
        """The wait loop ``wait`` runs (the async client runs it with ``asyncio.sleep``)."""
        # A dead in-process worker would leave us waiting forever.
        return self._reads.wait_loop(request_id, timeout, before_read=self._check_local_worker, **options)

    def received_bytes(self, request_id: str) -> int | None:
        """How much of the response a running attempt has streamed so far (None if nothing is streaming)."""
        return self._reads.received_bytes(request_id)

    def list(self, status: RequestStatus | str | None = None, limit: int | None = None) -> builtins.list[StatusRecord]:
        """Status records, newest first, optionally only those with ``status``."""
        return self._reads.list(status, limit)

    # -------------------------------------------------------------- changes
    def cancel(self, request_id: str) -> StatusRecord:
        """Cancel a request that is not terminal; a running one stops at its next check.

        With RabbitMQ, a cancelled request's ``request.cancelled`` event is published
        here, and again by the worker that meets the request's message (same
        ``event_id``): if this publish fails, that one still comes.
        """
        validate_request_id(request_id)
        record = self.lifecycle.cancel(request_id)
        if record.status is RequestStatus.CANCELLED and self._events is not None:
            try:
                self._events.publish_final(self.store, record)
            except BrokerUnavailable as error:
                get_logger(request_id=request_id).warning("cancel_event_not_published", error=str(error))
        return record

    def retry(self, request_id: str) -> StatusRecord:
        """Run a failed or cancelled request again under its ID, with a fresh retry budget; its record.

        The attempt history stays (attempt numbers go on). Returns once the new
        run is confirmed by the broker (``BrokerUnavailable``: nothing changed).
        ``RetryRefused`` for a request that is in progress (queued, running,
        waiting, or just replayed by another caller: concurrent replays run it
        once) or completed; ``RequestRunning`` while a cancelled attempt is still
        stopping; ``UnknownRequest`` for an unknown ID.
        """
        ended, replayed = self._replay_claimed(validate_request_id(request_id))
        # Published only after the claim is let go: the worker that takes it must claim the request.
        try:
            if self._events is not None:
                # The outcome this replay leaves may never have been announced (its publish
                # failed, or its worker died first), and the message that would announce it
                # again is stale from now on: announce it here (same event_id, deduplicated).
                self._events.publish_final(self.store, ended)
            self._publish(request_id, replayed.token)
        except BaseException:
            with contextlib.suppress(Exception):  # the caller's error is the broker's, not this one
                self.lifecycle.undo_replay(request_id, ended, replayed.token)
            raise
        self.lifecycle.mark_published(request_id, replayed.generation)
        return self.store.read_status(request_id) or replayed

    def _replay_claimed(self, request_id: str) -> tuple[StatusRecord, StatusRecord]:
        """Replay under the request's claim: no attempt of it runs meanwhile. Another caller may hold
        the claim for a moment (a concurrent replay: then this one is refused as it finds it in progress)."""
        deadline = time.monotonic() + REPLAY_CLAIM_WAIT_SECONDS
        while True:
            record = self.store.read_status(request_id)
            if record is None:
                raise UnknownRequest(f"no request {request_id!r} in the store {self.store.location}")
            refusal = lifecycle.why_not_replay(record)
            if refusal is not None:
                raise RetryRefused(refusal)
            with self.store.claim(request_id) as claimed:
                if claimed:
                    return self.lifecycle.replay(request_id)  # checks again under the status lock
            if time.monotonic() > deadline:
                raise RequestRunning(f"request {request_id!r} is cancelled but its attempt is still stopping")
            time.sleep(0.01)

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

    def gc(self, older_than: float, *, dry_run: bool = False) -> builtins.list[str]:
        """Remove finished requests that ended more than ``older_than`` seconds ago; their IDs.

        Each is removed only if it is still finished and old under the store's
        locks (it may have been submitted again since it was listed). A cancelled
        request whose attempt is still stopping is left for the next gc.
        ``dry_run`` only lists what would be removed. Also forgets the store's
        removals older than 7 days (``REMOVAL_MEMORY_SECONDS``).
        """
        if isinstance(older_than, bool) or not isinstance(older_than, int | float) or not older_than >= 0:
            raise InvalidArgument(f"older_than must be a number of seconds >= 0, not {older_than!r}")
        cutoff = time.time() - older_than

        def finished_before_cutoff(record: StatusRecord | None) -> bool:
            return record is not None and record.is_terminal and (record.completed_at or record.updated_at) < cutoff

        removed: builtins.list[str] = []
        for record in self.store.statuses():
            if not finished_before_cutoff(record):
                continue
            if dry_run or self._remove_if(record.request_id, finished_before_cutoff):
                removed.append(record.request_id)
        if not dry_run:
            self.store.prune_removal_marks(REMOVAL_MEMORY_SECONDS)
        return removed

    def _remove_if(self, request_id: str, only_if: Callable[[StatusRecord | None], bool]) -> bool:
        try:
            return self.store.delete(request_id, only_if=only_if)
        except RequestRunning:
            return False

    def recover(self) -> int:
        """Publish a new run for every unfinished request nobody is running; the count.

        For a store whose messages were lost (a purged queue, a rebuilt broker).
        Safe to repeat: older messages become stale, so nothing runs twice. In
        local mode the in-process worker does it (it also does at start).
        """
        if self._local_worker is not None:
            self._local_worker.start()
            return int(self._local_worker.recover())
        publish = functools.partial(publish_request, self.broker, self.settings.queue_name)
        return recover_pending(self.store, publish)

    def close(self) -> None:
        self._submission.close()
        if self._local_worker is not None:
            self._local_worker.stop()
        with contextlib.suppress(Exception):  # closing a broken connection must not hide the caller's error
            self.broker.close()

    def __enter__(self) -> BackgroundHttpClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


__all__ = ["BackgroundHttpClient", "OnConflict"]
