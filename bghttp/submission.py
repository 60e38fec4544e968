"""The one path from a prepared request to "stored and on its way", for every kind of submit.

Single, bulk, sync and async submits, the CLI and ``submit_request`` messages
all come here. A submit stores the request (or, by ``on_conflict``, settles on
the request that has its ID),
publishes its first message, waits for the broker's confirm while the new files
are made durable, and then marks the status record ``published``. If the
broker does not confirm, the stored request is removed again and the error is
raised, so a returned ``RequestInfo`` always means "accepted, on disk and on its
way".

An ID that is taken is settled by one comparison, :func:`differences`, whatever
the way in: the same request again (a retried call, a redelivered message)
returns the one stored, a different one raises ``RequestExists`` naming what
differs, unless ``on_conflict="replace"`` and the stored one may be replaced
(``lifecycle.why_not_replace``). ``on_conflict="reject"`` refuses any.

A second submit of an ID whose first message is not confirmed yet (its
submitter still waits for the broker, or died) publishes the message itself (a
duplicate with the same token is dropped by the worker), so it too returns only
what is on its way; and a first submitter whose publish fails keeps a request
that someone else confirmed meanwhile.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Literal

from . import tracing
from .errors import InvalidArgument, InvalidRequest, RequestExists, RequestRunning, StoreError
from .lifecycle import RequestLifecycle, is_same_request, is_unconfirmed, why_not_replace
from .models import RequestInfo, RequestSpec, StatusRecord
from .store_api import Batch, Store
from .validation import PreparedRequest

OnConflict = Literal["return", "reject", "replace"]
ON_CONFLICT_CHOICES: tuple[OnConflict, ...] = ("return", "reject", "replace")
#: Rounds a submit goes through while others remove and create its ID meanwhile.
SUBMIT_ROUNDS = 20

#: Publish one first message, confirmed by the broker: ``(request_id, token)``.
PublishOne = Callable[[str, int], None]
#: Publish many first messages at once, all or none: ``[(request_id, token), ...]``.
PublishMany = Callable[[list[tuple[str, int]]], None]


def check_on_conflict(on_conflict: object) -> OnConflict:
    if on_conflict not in ON_CONFLICT_CHOICES:
        raise InvalidArgument(f"on_conflict must be 'return', 'reject' or 'replace', not {on_conflict!r}")
    return on_conflict


class Submission:
    """Stores prepared requests and sees them on their way (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        on_conflict: OnConflict,
        publish_one: PublishOne,
        publish_many: PublishMany,
        queue: str = "",
    ) -> None:
        self.store = store
        self.queue = queue  # recorded in each request it stores: the queue its messages go to
        self.on_conflict = check_on_conflict(on_conflict)
        self.publish_one = publish_one
        self.publish_many = publish_many
        self.lifecycle = RequestLifecycle(store)
        # fsyncs of new requests run here while the submitting thread waits for the broker.
        self._syncer = ThreadPoolExecutor(max_workers=4, thread_name_prefix="bghttp-fsync")

    def close(self) -> None:
        self._syncer.shutdown(wait=True)

    # ------------------------------------------------------------- single
    def submit(self, prepared: PreparedRequest) -> RequestInfo:
        """Store ``prepared`` (or settle on the request that has its ID) and see it on its way."""
        prepared = self._stamped(prepared)
        for _ in range(SUBMIT_ROUNDS):
            # Its files are made durable by an fsync of each, beside the publish (``_publish_durably``).
            with self.store.batch(shared=False) as batch:
                record, created = self._store_or_existing(prepared)
                if (created or is_unconfirmed(record)) and not self._confirm(record, created, batch):
                    continue  # the unconfirmed request we found is gone: submit ours
                return self._info(record)
        raise RequestExists(f"request {prepared.spec.request_id!r} keeps being removed and created by others")

    def _confirm(self, record: StatusRecord, created: bool, batch: Batch) -> bool:
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
            self._publish_durably(request_id, record.token, batch)
        except BaseException as error:
            kept = created and not self.store.discard_unconfirmed(request_id, generation)
            if kept and isinstance(error, Exception) and not isinstance(error, StoreError):
                return True  # another message got through: on its way
            raise
        # A request this call did not create needs its mark: its creator may yet take it back.
        return self.lifecycle.mark_published(request_id, generation, needed=not created) or created

    def _publish_durably(self, request_id: str, token: int, batch: Batch) -> None:
        """Publish the first run while the request's new files are fsynced; return when both are done.

        The submit then waits for the slower of the two, not for their sum.
        Publishing first is safe: the files are written (a worker that gets the
        message reads them), only not yet on disk, and the caller has no
        ``RequestInfo`` until they are, so a crash in between loses nothing that
        was accepted. Raises what the publish raised, or ``StoreError`` if the
        fsync failed (a failing disk); ``_confirm`` decides what to remove.
        """
        batch.add_request(request_id)  # found unconfirmed: its submitter may not have made it durable yet
        sync = self._syncer.submit(batch.commit) if batch.needs_commit else None
        try:
            self.publish_one(request_id, token)
        except BaseException:
            if sync is not None:
                with contextlib.suppress(Exception):
                    sync.result()
            raise
        if sync is not None:
            sync.result()

    # --------------------------------------------------------------- bulk
    def submit_many(self, prepared: Sequence[PreparedRequest]) -> list[RequestInfo]:
        """Store every request, publish the first messages all at once; all or nothing.

        Raises ``InvalidRequest`` before anything is stored if two share a
        ``request_id``. If the publish fails, no request this call created is
        left (unless someone else confirmed it meanwhile).
        """
        _refuse_duplicate_ids(prepared)
        prepared = [self._stamped(request) for request in prepared]
        created: list[StatusRecord] = []  # stored by this call
        to_publish: list[StatusRecord] = []  # created, and found unconfirmed
        infos: list[RequestInfo] = []
        try:
            # Written without per-file fsyncs; one filesystem sync, as the batch ends, covers them all.
            with self.store.batch() as batch:
                for request in prepared:
                    record, is_new = self._store_or_existing(request)
                    if is_new:
                        created.append(record)
                    if is_new or is_unconfirmed(record):
                        to_publish.append(record)
                        batch.add_request(record.request_id)
                    infos.append(self._info(record))
            if to_publish:
                self.publish_many([(record.request_id, record.token) for record in to_publish])
        except BaseException:
            for record in created:
                with contextlib.suppress(Exception):
                    self.store.discard_unconfirmed(record.request_id, record.generation)
            raise
        created_ids = {record.request_id for record in created}
        for record in to_publish:
            marked = self.lifecycle.mark_published(
                record.request_id, record.generation, needed=record.request_id not in created_ids
            )
            if not marked and record.request_id not in created_ids:
                # An unconfirmed request found in the store vanished before it was
                # marked: submit this item on its own, through the single-submit path.
                position = next(i for i, info in enumerate(infos) if info.request_id == record.request_id)
                infos[position] = self.submit(prepared[position])
        return infos

    def _stamped(self, prepared: PreparedRequest) -> PreparedRequest:
        """``prepared`` with what a submit adds to its spec: this submission's queue, the caller's trace context."""
        prepared = _traced(prepared)
        if not self.queue or prepared.spec.queue == self.queue:
            return prepared
        return dataclasses.replace(prepared, spec=dataclasses.replace(prepared.spec, queue=self.queue))

    # ---------------------------------------------------------- conflicts
    def _store_or_existing(self, prepared: PreparedRequest) -> tuple[StatusRecord, bool]:
        """``(its new record, True)``, or by ``on_conflict`` ``(the record that has the ID, False)``."""
        request_id = prepared.spec.request_id
        for _ in range(SUBMIT_ROUNDS):
            record = self.store.create_request(prepared.spec, body=prepared.body, files=prepared.files)
            if record is not None:
                return record, True
            existing = self._resolve_conflict(prepared)
            if existing is not None:
                return existing, False
        raise RequestExists(f"request {request_id!r} keeps being removed and created by others")

    def _resolve_conflict(self, prepared: PreparedRequest) -> StatusRecord | None:
        """Settle a taken ID: the record to return (the same request), None to create again, or RequestExists.

        Creation and removal of an ID exclude each other (the store's ID lock),
        so a request found here is whole; None also when it vanished or was
        replaced meanwhile (the next round judges what is there then).
        """
        request_id = prepared.spec.request_id
        if self.on_conflict == "reject":
            raise RequestExists(f"request {request_id!r} exists already")
        existing = self.store.read_status(request_id)
        stored = None if existing is None else self.store.load_request(request_id)
        if existing is None or stored is None or not is_same_request(stored, existing):
            return None
        differing = differences(self.store, prepared, stored)
        if not differing:
            return existing  # the same request again: one request
        if self.on_conflict == "return":
            raise RequestExists(conflict_message(request_id, differing), differing)
        refusal = why_not_replace(existing)
        if refusal is not None:
            raise RequestExists(refusal, differing)

        def still_replaceable(record: StatusRecord | None) -> bool:
            return record is not None and record.generation == existing.generation and why_not_replace(record) is None

        try:
            # Under its claim: no attempt runs it while it goes; a message of it
            # that comes later finds nothing, or a request of another generation.
            # Judged again under the store's locks: a worker may have taken it up since.
            self.store.delete(request_id, only_if=still_replaceable)
        except RequestRunning:
            raise RequestExists(
                f"request {request_id!r} is running; it cannot be replaced now: cancel it first", differing
            ) from None
        return None

    def _info(self, record: StatusRecord) -> RequestInfo:
        return RequestInfo(record.request_id, self.store.request_file_path(record.request_id), record.status)


def differences(store: Store, prepared: PreparedRequest, stored: RequestSpec) -> tuple[str, ...]:
    """What differs between ``prepared`` and ``stored``, the request under its ID; empty if they are the same.

    The one comparison behind "the same request again is one request" for every
    way in (client, bulk, CLI, ``submit_request`` messages). What the submitter
    chose is compared: method, URL (query included), headers, body, timeout,
    retries, metadata, on_complete, multipart fields and files (their bytes);
    not what a submit adds (creation time, generation, trace context, queue). A
    ``timeout`` left out counts as the submitter's default timeout.
    StoreError if the stored body or a stored file cannot be read.
    """
    mine = prepared.spec
    checks: list[tuple[str, bool]] = [
        ("method", stored.method == mine.method),
        ("URL", stored.url == mine.url),
        ("headers", [tuple(pair) for pair in stored.headers] == [tuple(pair) for pair in mine.headers]),
        ("timeout", stored.timeout == mine.timeout),
        ("retries", stored.max_retries == mine.max_retries),
        ("metadata", stored.metadata == mine.metadata),
        ("on_complete", stored.on_complete == mine.on_complete),
        ("fields", _pairs(stored.form_fields) == _pairs(mine.form_fields)),
    ]
    differing = [name for name, same in checks if not same]
    if stored.has_body != mine.has_body or (
        mine.has_body and store.read_request_body(mine.request_id) != prepared.body
    ):
        differing.insert(3, "body")
    if not _same_files(store, prepared, stored):
        differing.append("files")
    return tuple(differing)


#: The names of :func:`differences` that take a plural verb ("headers differ").
_PLURAL_NAMES = frozenset({"headers", "fields", "files"})


def conflict_message(request_id: str, differing: Sequence[str]) -> str:
    """The one line every way in says for a different request under a taken ID."""
    what = differing[0] if len(differing) == 1 else ", ".join(differing[:-1]) + " and " + differing[-1]
    verb = "differs" if len(differing) == 1 and differing[0] not in _PLURAL_NAMES else "differ"
    return (
        f"request_id {request_id!r} exists with a different request ({what} {verb});"
        " it was not submitted: use a new request_id"
    )


def _pairs(pairs: Sequence[Sequence[str]] | None) -> list[tuple[str, ...]] | None:
    return None if pairs is None else [tuple(pair) for pair in pairs]


def _same_files(store: Store, prepared: PreparedRequest, stored: RequestSpec) -> bool:
    """Whether the multipart file parts are the same: names, types, and the bytes of each."""
    mine, theirs = prepared.spec.file_parts or [], stored.file_parts or []
    if [(p.field, p.filename, p.content_type) for p in mine] != [(p.field, p.filename, p.content_type) for p in theirs]:
        return False
    sources = dict((stored_name, path) for path, stored_name in prepared.files)
    for mine_part, their_part in zip(mine, theirs, strict=True):
        try:
            with (
                open(sources[mine_part.stored_name], "rb") as source,
                store.open_request_file(stored.request_id, their_part.stored_name) as copy,
            ):
                if not _same_bytes(source, copy):
                    return False
        except OSError as error:
            raise StoreError(f"cannot compare multipart file {mine_part.filename!r}: {error}") from error
    return True


def _same_bytes(first: IO[bytes], second: IO[bytes], chunk: int = 1024 * 1024) -> bool:
    for a, b in itertools.zip_longest(iter(lambda: first.read(chunk), b""), iter(lambda: second.read(chunk), b"")):
        if a != b:
            return False
    return True


def _traced(prepared: PreparedRequest) -> PreparedRequest:
    """``prepared`` with the caller's current trace context saved in its spec (``bghttp[otel]``)."""
    spec = tracing.with_trace_context(prepared.spec)
    return prepared if spec is prepared.spec else dataclasses.replace(prepared, spec=spec)


def _refuse_duplicate_ids(prepared: Sequence[PreparedRequest]) -> None:
    seen: set[str] = set()
    for request in prepared:
        request_id = request.spec.request_id
        if request_id in seen:
            raise InvalidRequest(f"request_id {request_id!r} appears twice in one bulk submit")
        seen.add(request_id)
