"""The ``bghttp`` command line: submit requests, inspect the store, run workers.

Exit codes (also in ``bghttp --help``)::

    0  success
    1  the request ended failed or cancelled (wait, --wait); cancel: it had already
       finished (completed, failed or cancelled); retry: a request was in progress or
       completed (the others were retried); any other error
    2  bad usage or input (nothing was stored)
    3  not found: unknown request ID, or no saved response
    4  the broker is unavailable (the request was not accepted)
    5  wait timed out before the request finished
    6  the store could not be read or written
    7  the request ID is taken by a different request, or --replace may not replace it
       (nothing was stored)

Errors are one line on stderr (``bghttp: error: ...``), never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn

from ..config import ConfigError, Settings
from ..core.urls import url_host
from ..errors import (
    BghttpError,
    BrokerUnavailable,
    InvalidRequest,
    RequestExists,
    StoreError,
    UnknownRequest,
    WaitTimeout,
)
from ..models import RequestStatus, StatusRecord
from ..reading import StoreReader
from ..store import FileStore
from . import output as out
from .dashboard import add_command as add_dashboard_command
from .input import UsageError, request_options
from .wait_notes import WaitNotes
from .workers import cmd_workers, unserved_notice, visible

if TYPE_CHECKING:
    from ..client import BackgroundHttpClient

    #: What a command reads requests with: a reader, or the client it has anyway.
    Reads = StoreReader | BackgroundHttpClient

# The reading commands (status, response, wait, ls) use a StoreReader alone; the
# client, and with it Dramatiq, pika, httpx and asyncio, is imported only by the
# commands that submit or change requests (tests/cli/test_startup.py).

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_BROKER = 4
EXIT_TIMEOUT = 5
EXIT_STORE = 6
EXIT_CONFLICT = 7

EXIT_CODES_HELP = """\
exit codes:
  0  success
  1  the request ended failed or cancelled (wait, --wait);
     cancel: it had already finished (completed, failed or cancelled);
     retry: a request was in progress or completed (the others were retried); other errors
  2  bad usage or input (nothing was stored)
  3  not found: unknown request ID, or no saved response
  4  the broker is unavailable (the request was not accepted)
  5  wait timed out before the request finished
  6  the store could not be read or written
  7  the request ID is taken by a different request, or --replace may not replace it
     (nothing was stored)
"""

#: Dramatiq CLI's "could not connect to the broker" exit code.
_DRAMATIQ_RET_CONNECT = 3
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_POLL_SECONDS = 0.1
_SUBMIT_METHODS = ("get", "post", "put", "patch", "delete", "head")


class _VersionAction(argparse.Action):
    """``--version``: the package version, read only when asked (importlib.metadata costs every command time)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> NoReturn:
        import bghttp

        print(f"bghttp {bghttp.__version__}")
        parser.exit(EXIT_OK)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One clear line instead of the usage block; --help shows the rest.
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


# ------------------------------------------------------------------- parsing


def build_parser() -> argparse.ArgumentParser:
    # Global options may come before or after the command: SUPPRESS keeps a
    # subcommand's unset copy from overwriting the value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--store", metavar="DIR", default=argparse.SUPPRESS, help="store directory (BGHTTP_STORE_DIR)")
    common.add_argument("--broker", metavar="URL", default=argparse.SUPPRESS, help="broker URL (BGHTTP_BROKER_URL)")
    common.add_argument(
        "--local", action="store_true", default=argparse.SUPPRESS, help="no RabbitMQ: run requests in this process"
    )
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON document")

    parser = _Parser(
        prog="bghttp",
        description="Durable background HTTP requests: submit, inspect, run workers.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.add_argument("--version", action=_VersionAction, help="print the version of bghttp and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    def add(name: str, help_text: str, parents: Sequence[argparse.ArgumentParser] = ()) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            help=help_text,
            description=help_text,
            parents=list[Any]([common, *parents]),
            epilog=EXIT_CODES_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    submit = _submit_options("URL")
    for method in _SUBMIT_METHODS:
        if method == "delete":
            continue
        add(method, f"submit an HTTP {method.upper()} request; prints its request ID", parents=[submit]).set_defaults(
            handler=cmd_submit, method=method.upper()
        )
    # A request ID never contains ':' or '/', a URL always does: one word, two meanings, no ambiguity.
    add(
        "delete",
        "delete URL: submit an HTTP DELETE request; delete ID: remove a request and all its files (like rm)",
        parents=[_submit_options("URL|ID")],
    ).set_defaults(handler=cmd_delete, method="DELETE")

    add("status", "show a request's status record").add_argument("request_id", metavar="ID")
    response = add("response", "show a request's saved response (the last one, for a failed request)")
    response.add_argument("request_id", metavar="ID")
    response.add_argument("--body", action="store_true", help="write the body bytes to stdout instead")
    wait = add("wait", "wait until a request is finished, showing download progress on stderr")
    wait.add_argument("request_id", metavar="ID")
    wait.add_argument("--timeout", type=_seconds, metavar="SECONDS", help="give up after this long (exit 5)")
    wait.add_argument("--no-progress", action="store_true", help="do not show progress on stderr")
    wait.add_argument(
        "--progress", action="store_true", help="say what the request waits for even when stderr is not a terminal"
    )
    ls = add("ls", "list requests, newest first")
    ls.add_argument("--status", choices=[s.value for s in RequestStatus], help="only requests with this status")
    ls.add_argument("--limit", type=_positive_int, metavar="N", help="at most N requests")
    add("cancel", "cancel a request: a queued one never runs, a running one stops soon").add_argument(
        "request_id", metavar="ID"
    )
    add("rm", "remove a request and all its files from the store (cancels it first)").add_argument(
        "request_id", metavar="ID"
    )
    worker = add("worker", "run a worker group (Dramatiq) until SIGTERM; with --local, an in-process worker")
    worker.add_argument("--processes", type=_positive_int, default=2, metavar="N", help="worker processes (2)")
    worker.add_argument(
        "--max-in-flight",
        "--threads",  # its older name: a worker process's threads are its attempts in flight
        dest="max_in_flight",
        type=_positive_int,
        metavar="N",
        help="attempts each process runs at once (BGHTTP_MAX_IN_FLIGHT, 512)",
    )
    worker.add_argument("--metrics-port", type=_port, metavar="PORT", help="serve Prometheus metrics on this port")
    worker.add_argument("--metrics-host", default="0.0.0.0", metavar="HOST", help="metrics address (0.0.0.0)")
    gc = add("gc", "remove finished (completed, failed, cancelled) requests older than an age")
    gc.add_argument("--older-than", type=_duration, required=True, metavar="AGE", help="e.g. 90m, 12h, 7d, 2w")
    gc.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    add("workers", "list the worker processes whose heartbeats are in the store, live and stale")
    add("recover", "re-send every unfinished request from the store (safe to repeat: nothing runs twice)")
    retry = add("retry", "run failed or cancelled requests again under their IDs, with a fresh retry budget")
    retry.add_argument("request_ids", nargs="*", metavar="ID", help="the requests (or select them with --status)")
    retry.add_argument("--status", choices=["failed", "cancelled"], help="every request that ended with this status")
    retry.add_argument("--since", type=_duration, metavar="AGE", help="with --status: that ended within AGE (e.g. 2h)")
    retry.add_argument("--host", metavar="HOST", help="with --status: whose URL's host is HOST")
    add_dashboard_command(add)

    handlers: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
        "status": cmd_status,
        "response": cmd_response,
        "wait": cmd_wait,
        "ls": cmd_ls,
        "cancel": cmd_cancel,
        "rm": cmd_rm,
        "worker": cmd_worker,
        "gc": cmd_gc,
        "recover": cmd_recover,
        "workers": cmd_workers,
        "retry": cmd_retry,
    }
    for name, handler in handlers.items():
        commands.choices[name].set_defaults(handler=handler)
    return parser


def _submit_options(metavar: str) -> argparse.ArgumentParser:
    submit = argparse.ArgumentParser(add_help=False)
    submit.add_argument("url", metavar=metavar)
    submit.add_argument("-H", "--header", action="append", default=[], metavar="'NAME: VALUE'", help="add a header")
    body = submit.add_mutually_exclusive_group()
    body.add_argument(
        "-d",
        "--data",
        action="append",
        metavar="DATA",
        help="body, as curl's -d: form data (Content-Type application/x-www-form-urlencoded); "
        "@FILE reads a file and @- stdin, without their CR/LF bytes; repeated: joined with &",
    )
    body.add_argument(
        "--data-binary",
        action="append",
        metavar="DATA",
        help="body bytes exactly as given (Content-Type application/octet-stream); @FILE reads a file, @- stdin",
    )
    body.add_argument("--json-body", metavar="JSON", help="JSON body (sets Content-Type); @FILE reads a file")
    body.add_argument(
        "-F",
        "--form",
        action="append",
        metavar="NAME=VALUE",
        help="multipart field; NAME=@PATH[;type=T][;filename=F] for a file",
    )
    submit.add_argument("-q", "--query", action="append", default=[], metavar="KEY=VALUE", help="add a query parameter")
    submit.add_argument("--timeout", type=float, metavar="SECONDS", help="timeout of each attempt")
    submit.add_argument("--retries", type=int, default=0, metavar="N", help="retries after a failed attempt (0-10)")
    submit.add_argument("--id", dest="request_id", metavar="ID", help="request ID (default: a new UUID)")
    submit.add_argument(
        "--replace",
        action="store_true",
        help="with --id: replace a different request under that ID if it is finished or still queued "
        "and never attempted (exit 7 otherwise; the same request again is never sent twice)",
    )
    submit.add_argument(
        "--meta",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="add a metadata entry (a string), kept with the request and shown in status, ls --json and events",
    )
    submit.add_argument(
        "--allow-body", action="store_true", help="let a GET or HEAD request carry a body (-d, --json-body, -F)"
    )
    submit.add_argument(
        "--wait",
        action="store_true",
        help="wait for the result: the ID on stdout, progress and the outcome on stderr (exit codes as for wait)",
    )
    submit.add_argument("--wait-timeout", type=_seconds, metavar="SECONDS", help="with --wait: give up after this long")
    return submit


def _positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {raw!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {raw!r}")
    return value


def _seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {raw!r}") from None
    if not 0 <= value < float("inf"):  # NaN fails too: a deadline of NaN never comes
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0: {raw!r}")
    return value


def _port(raw: str) -> int:
    value = _positive_int(raw)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"not a port number: {raw!r}")
    return value


def _duration(raw: str) -> float:
    match = _DURATION.fullmatch(raw.strip().lower())
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {raw!r} (use e.g. 30s, 90m, 12h, 7d, 2w)")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


# ---------------------------------------------------------------- settings


def settings_from_args(args: argparse.Namespace, environ: dict[str, str] | None = None) -> Settings:
    """The settings: the environment, overridden by the options; a bad value names its option."""
    overrides: dict[str, Any] = {}
    options: dict[str, str] = {}  # setting -> the option that gave it
    if getattr(args, "store", None) is not None:
        if not args.store:
            raise ConfigError("--store '': must be a directory path")
        overrides["store_dir"], options["store_dir"] = Path(args.store), "--store"
    if getattr(args, "broker", None) is not None:
        overrides["broker_url"], options["broker_url"] = args.broker, "--broker"
    if getattr(args, "local", False):
        overrides["broker_url"], options["broker_url"] = "local", "--local"
    if getattr(args, "metrics_port", None) is not None:
        overrides["metrics_port"], options["metrics_port"] = args.metrics_port, "--metrics-port"
    if getattr(args, "max_in_flight", None) is not None:
        overrides["max_in_flight"], options["max_in_flight"] = args.max_in_flight, "--max-in-flight"
    try:
        return Settings.from_env(environ, **overrides)
    except ConfigError as error:
        setting = getattr(error, "setting", None)
        if setting in options:
            shown = getattr(error, "shown", str(overrides[setting]))  # a broker URL without its password
            raise ConfigError(f"{options[setting]} {shown:.200}: {error.reason}") from None  # type: ignore[attr-defined]
        raise


def _reader(settings: Settings) -> StoreReader:
    """What the reading commands read the store with: no broker, no client."""
    _check_store_exists(settings)
    return StoreReader(FileStore(settings.store_dir, fsync=settings.fsync))


def _store_client(settings: Settings) -> BackgroundHttpClient:
    """A client for commands that change the store (cancel, rm, gc): it never needs a broker."""
    from dramatiq.brokers.stub import StubBroker

    from ..client import BackgroundHttpClient

    _check_store_exists(settings)
    return BackgroundHttpClient(settings, broker=StubBroker())


def _check_store_exists(settings: Settings) -> None:
    if not settings.store_dir.is_dir():
        # A mistyped --store should say so, not create an empty store and report "not found".
        raise StoreError(f"no store at {settings.store_dir} (set --store or BGHTTP_STORE_DIR)")


# ---------------------------------------------------------------- submits


def cmd_submit(args: argparse.Namespace, settings: Settings) -> int:
    """Submit; stdout gets the request ID and nothing else, so ``id=$(bghttp post …)`` works in every mode.

    With ``--wait`` (and always in local mode, whose worker lives in this
    process: leaving at once would strand the request) the progress and the
    outcome line go to stderr; ``--json`` prints one document instead.
    """
    from ..client import BackgroundHttpClient

    if args.wait_timeout is not None and not args.wait:
        raise UsageError("--wait-timeout needs --wait")
    options = request_options(args)
    waits = args.wait or settings.is_local
    with BackgroundHttpClient(settings, on_conflict="replace" if args.replace else "return") as client:
        try:
            info = client.request(args.method, args.url, **options)
        except RequestExists as error:
            if error.differences and not args.replace:
                raise RequestExists(f"{error}, or give --replace", error.differences) from None
            raise
        if args.json and not waits:
            out.print_json(
                {
                    "request_id": info.request_id,
                    "request_file_path": str(info.request_file_path),
                    "status": info.status.value,
                }
            )
        elif not args.json:
            print(info.request_id)
            sys.stdout.flush()
        if waits:
            return _wait_and_report(
                client,
                info.request_id,
                args.wait_timeout,
                show_progress=True,
                as_json=args.json,
                outcome_to=sys.stderr,
                settings=settings,
            )
    return EXIT_OK


# ------------------------------------------------------------------ reads


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    with _reader(settings) as client:
        record = _existing(client, args.request_id)
        spec = client.store.load_request(args.request_id)
        if args.json:
            out.print_json(out.status_json(record, spec))
        else:
            out.print_status(record, spec)
    notice = unserved_notice(record, settings, queue=spec.queue if spec is not None else "")
    if notice is not None:
        print(f"warning: {visible(notice)}", file=sys.stderr)
    return EXIT_OK


def cmd_response(args: argparse.Namespace, settings: Settings) -> int:
    with _reader(settings) as client:
        record = _existing(client, args.request_id)
        response = client.get_response(args.request_id)
        if response is None:
            if record.is_terminal:
                raise UnknownRequest(
                    f"request {args.request_id!r} ended {record.status.value} without a saved response"
                )
            raise UnknownRequest(
                f"request {args.request_id!r} has no saved response yet ({record.status.value}/{record.phase.value})"
            )
        if args.body:
            out.write_body(response.response_file_path, sys.stdout.buffer)
        elif args.json:
            out.print_json(out.response_json(response))
        else:
            out.print_response(response)
    return EXIT_OK


def cmd_wait(args: argparse.Namespace, settings: Settings) -> int:
    with _reader(settings) as client:
        return _wait_and_report(
            client,
            args.request_id,
            args.timeout,
            show_progress=not args.no_progress,
            as_json=args.json,
            settings=settings,
            narrate=args.progress or (not args.no_progress and sys.stderr.isatty()),
        )


def _wait_and_report(
    client: Reads,
    request_id: str,
    timeout: float | None,
    *,
    show_progress: bool,
    as_json: bool,
    outcome_to: IO[str] | None = None,
    settings: Settings,
    narrate: bool | None = None,
) -> int:
    """Wait, then print the outcome: a JSON document on stdout, or one line on ``outcome_to`` (stdout).

    ``narrate`` (default: stderr is a terminal and progress is shown) says on stderr what the
    request waits for (see ``wait_notes``); without it only a missing worker is reported.
    """
    if narrate is None:
        narrate = show_progress and sys.stderr.isatty()
    submitted = client.store.load_request(request_id)  # the queue it was submitted to
    notes = WaitNotes(settings, sys.stderr, narrate=narrate, queue=submitted.queue if submitted is not None else "")
    record = _wait(client, request_id, timeout, show_progress, notes)
    spec = client.store.load_request(request_id)
    if as_json:
        out.print_json(out.status_json(record, spec))
    else:
        code = f" (HTTP {record.last_status_code})" if record.last_status_code is not None else ""
        error = f": {record.last_error}" if record.last_error and record.status is not RequestStatus.COMPLETED else ""
        out.say(f"{request_id} {record.status.value}{code}{error}", outcome_to)
    return EXIT_OK if record.status is RequestStatus.COMPLETED else EXIT_FAILED


def _wait(client: Reads, request_id: str, timeout: float | None, show_progress: bool, notes: WaitNotes) -> StatusRecord:
    """The client's wait, showing how much of the response has been streamed so far, and what it waits for."""
    progress = out.Progress(request_id) if show_progress else None
    if progress is not None:
        notes.before_line = progress.clear_line

    def show(record: StatusRecord) -> None:
        notes.update(record)
        if progress is not None:
            progress.update(record.phase.value, client.received_bytes(request_id))

    try:
        return client.wait(request_id, timeout, poll_interval=_POLL_SECONDS, on_poll=show)
    finally:
        if progress is not None:
            progress.finish()


def cmd_ls(args: argparse.Namespace, settings: Settings) -> int:
    """A store that does not exist yet (a fresh machine) lists nothing and stays uncreated; stderr names it,
    so that a mistyped ``--store`` still shows."""
    if not settings.store_dir.is_dir():
        print(f"bghttp: no store at {settings.store_dir} yet (nothing was submitted to it)", file=sys.stderr)
    with StoreReader(FileStore(settings.store_dir, fsync=settings.fsync)) as client:
        records = client.list(status=args.status, limit=args.limit)
        rows = [(record, _spec_or_none(client, record.request_id)) for record in records]
        if args.json:
            out.print_json([out.status_json(record, spec) for record, spec in rows])
        else:
            out.print_table(rows)
    return EXIT_OK


def _spec_or_none(client: Reads, request_id: str) -> Any:
    try:
        return client.store.load_request(request_id)
    except StoreError:
        return None  # a request deleted while listing


def _existing(client: Reads, request_id: str) -> StatusRecord:
    record = client.get_request_status(request_id)
    if record is None:
        raise UnknownRequest(f"no request {request_id!r} in the store {client.store.root}")
    return record


# ---------------------------------------------------------------- changes


def cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    """Exit 0 if the request was unfinished and is now cancelled; 1 if it had already
    finished, whatever its final status (cancelled included): this call changed nothing."""
    with _store_client(settings) as client:
        before = _existing(client, args.request_id)
        record = before if before.is_terminal else client.cancel(args.request_id)
        cancelled = not before.is_terminal and record.status is RequestStatus.CANCELLED
        if args.json:
            out.print_json({"request_id": args.request_id, "status": record.status.value, "cancelled": cancelled})
        elif cancelled:
            print(f"{args.request_id} cancelled")
        else:
            print(f"{args.request_id} was already {record.status.value}; nothing to cancel")
    return EXIT_OK if cancelled else EXIT_FAILED


def cmd_delete(args: argparse.Namespace, settings: Settings) -> int:
    if ":" in args.url or "/" in args.url:
        return cmd_submit(args, settings)
    given = [flag for flag, value in _submit_flags(args).items() if value]
    if given:
        raise UsageError(f"delete ID removes a stored request and takes no {', '.join(given)}; for HTTP give a URL")
    args.request_id = args.url
    try:
        return cmd_rm(args, settings)
    except UnknownRequest as error:
        raise UnknownRequest(f"{error} (for an HTTP DELETE, give a full http:// or https:// URL)") from None


def _submit_flags(args: argparse.Namespace) -> dict[str, object]:
    return {
        "-H": args.header,
        "-d": args.data,
        "--data-binary": args.data_binary,
        "--json-body": args.json_body is not None,
        "-F": args.form,
        "-q": args.query,
        "--timeout": args.timeout is not None,
        "--retries": args.retries,
        "--id": args.request_id is not None,
        "--replace": args.replace,
        "--meta": args.meta,
        "--wait": args.wait,
        "--allow-body": args.allow_body,
    }


def cmd_rm(args: argparse.Namespace, settings: Settings) -> int:
    with _store_client(settings) as client:
        if not client.remove(args.request_id):
            raise UnknownRequest(f"no request {args.request_id!r} in the store {client.store.root}")
    if args.json:
        out.print_json({"request_id": args.request_id, "deleted": True})
    else:
        print(f"{args.request_id} deleted")
    return EXIT_OK


def cmd_gc(args: argparse.Namespace, settings: Settings) -> int:
    with _store_client(settings) as client:
        removed = client.gc(args.older_than, dry_run=args.dry_run)
    if args.json:
        out.print_json({"removed": len(removed), "dry_run": args.dry_run, "request_ids": removed})
    else:
        for request_id in removed:
            print(request_id)
        verb = "would remove" if args.dry_run else "removed"
        print(f"{verb} {len(removed)} finished request(s)", file=sys.stderr)
    return EXIT_OK


def cmd_recover(args: argparse.Namespace, settings: Settings) -> int:
    if settings.is_local:
        raise UsageError("recover re-sends to RabbitMQ; in local mode `bghttp worker --local` recovers at start")
    _check_store_exists(settings)  # a mistyped --store must not read as "nothing left to re-send"
    from ..client import BackgroundHttpClient

    with BackgroundHttpClient(settings) as client:
        count = client.recover()
    if args.json:
        out.print_json({"recovered": count})
    else:
        print(f"re-sent {count} unfinished request(s)")
    return EXIT_OK


def cmd_retry(args: argparse.Namespace, settings: Settings) -> int:
    """Replay each request; one that cannot be replayed is reported and the rest go on (exit: the first error's)."""
    if bool(args.request_ids) == bool(args.status):
        raise UsageError("give request IDs or --status failed|cancelled (not both)")
    if args.request_ids and (args.since is not None or args.host is not None):
        raise UsageError("--since and --host select with --status; not with request IDs")
    if settings.is_local:
        raise UsageError("retry sends to RabbitMQ; in local mode call client.retry() in the process running the worker")
    _check_store_exists(settings)
    from ..client import BackgroundHttpClient

    retried: list[str] = []
    refused: dict[str, str] = {}
    code = EXIT_OK
    with BackgroundHttpClient(settings) as client:
        request_ids = args.request_ids or _select_ended(client, args.status, args.since, args.host)
        for request_id in request_ids:
            try:
                client.retry(request_id)
            except BrokerUnavailable:
                raise  # every other would fail too: stop (those retried so far stay retried)
            except BghttpError as error:
                refused[request_id] = str(error)
                code = code or _exit_code(error)
                if not args.json:
                    out.say(f"bghttp: error: {error}", sys.stderr)
                continue
            retried.append(request_id)
            if not args.json:
                print(request_id)
    if args.json:
        out.print_json({"retried": retried, "refused": refused})
    elif args.status:
        print(f"retried {len(retried)} {args.status} request(s)", file=sys.stderr)
    return code


def _select_ended(client: BackgroundHttpClient, status: str, since: float | None, host: str | None) -> list[str]:
    """IDs of the requests that ended with ``status`` (within ``since`` seconds, to ``host``), oldest first."""
    cutoff = None if since is None else time.time() - since
    chosen: list[str] = []
    for record in reversed(client.list(status=status)):
        if cutoff is not None and (record.completed_at or record.updated_at) < cutoff:
            continue
        if host is not None:
            spec = _spec_or_none(client, record.request_id)
            target = None if spec is None else url_host(spec.url)
            if target is None or target != host.lower().rstrip("."):
                continue
        chosen.append(record.request_id)
    return chosen


# ----------------------------------------------------------------- worker


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    if settings.is_local:
        from ..worker.local import run_local_worker  # only local mode needs the embedded worker

        if settings.metrics_port is not None:
            raise UsageError("--metrics-port needs a RabbitMQ worker group; local mode serves no metrics")

        run_local_worker(settings)
        return EXIT_OK
    from dramatiq.cli import main as dramatiq_main
    from dramatiq.cli import make_argument_parser

    from ..worker.http_env import load_http_environment

    # A proxy or CA variable httpx cannot use stops the group here, in one line
    # (each worker process checks again, for `dramatiq bghttp.actors`).
    load_http_environment(use_proxies=not settings.block_private_addresses)
    # Worker processes read their settings from the environment (bghttp/actors.py).
    os.environ.update(settings.to_env())
    metrics_dir: str | None = None
    if settings.metrics_port is not None:
        import importlib.util

        from ..worker.metrics import prepare_exposition

        if importlib.util.find_spec("prometheus_client") is None:
            raise UsageError("--metrics-port needs prometheus-client: pip install 'bghttp[metrics]'")

        _check_port_free(args.metrics_host, settings.metrics_port)
        own_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        path = prepare_exposition(settings.metrics_port, args.metrics_host, own_dir)
        metrics_dir = None if own_dir else path  # a directory we made is ours to remove
    # bghttp.actors, never a bare "actors": a project's own actors.py in the current directory would win.
    # No --threads: BGHTTP_MAX_IN_FLIGHT sizes each process (bghttp.worker.in_flight.WorkerSlots).
    argv = ["bghttp.actors", "--processes", str(args.processes), "--skip-logging"]
    try:
        # Our logging is set up (JSON or console) before Dramatiq starts, and
        # --skip-logging keeps Dramatiq's plain-text format away from every process.
        dramatiq_args = make_argument_parser().parse_args(argv)  # type: ignore[no-untyped-call]
        code = int(dramatiq_main(dramatiq_args) or 0)  # type: ignore[no-untyped-call]
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    if code == _DRAMATIQ_RET_CONNECT:
        return EXIT_BROKER
    return EXIT_OK if code == 0 else EXIT_FAILED


def _check_port_free(host: str, port: int) -> None:
    """ConfigError now if the metrics port is taken, instead of a worker group running without metrics."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as error:
        raise ConfigError(f"--metrics-host {host}: cannot be resolved ({error})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the exposition server does
        try:
            probe.bind(address)
        except OSError as error:
            raise ConfigError(
                f"--metrics-port {port}: cannot listen on {host}:{port} ({error.strerror}); choose a free port"
            ) from None


# ------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns (and, as a console script, exits with) the exit code."""
    args = build_parser().parse_args(argv)
    args.json = getattr(args, "json", False)
    try:
        settings = settings_from_args(args)
        _configure_logging(args, settings)
        code = int(args.handler(args, settings))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `bghttp ls | head`: the reader left; that is not an error.
        sys.stderr.close()
        return EXIT_OK
    except Exception as error:  # every failure becomes one line and an exit code
        return _report(error, settings if "settings" in locals() else None)
    return code


def _configure_logging(args: argparse.Namespace, settings: Settings) -> None:
    # Log lines go to stderr; stdout stays for results. Only the worker and
    # recover log at INFO: the other commands' output is their result.
    is_service = args.handler in (cmd_worker, cmd_recover)
    level = settings.log_level if is_service else "WARNING"
    if args.handler in (cmd_status, cmd_response, cmd_wait, cmd_ls):
        from .deferred_logging import configure_logging_on_first_record  # they start without structlog

        configure_logging_on_first_record(settings.log_format, level)
    else:
        from ..logs import configure_logging

        configure_logging(settings.log_format, level)
    if args.handler is not cmd_worker:
        # A broker failure is reported as one line with exit code 4; pika's own
        # connection errors would only repeat it at length.
        logging.getLogger("pika").setLevel(logging.CRITICAL)


def _report(error: Exception, settings: Settings | None) -> int:
    code = _exit_code(error)
    message = str(error) or type(error).__name__
    if not isinstance(error, BghttpError):
        message = f"{type(error).__name__}: {message}"
    out.say(f"bghttp: error: {message}", sys.stderr)  # it may quote a stored URL or a server's text
    if settings is not None and settings.log_level == "DEBUG" and not isinstance(error, BghttpError):
        import traceback

        traceback.print_exception(error)
    return code


def _exit_code(error: Exception) -> int:
    if isinstance(error, (InvalidRequest, ConfigError)):
        return EXIT_USAGE
    if isinstance(error, UnknownRequest):
        return EXIT_NOT_FOUND
    if isinstance(error, BrokerUnavailable):
        return EXIT_BROKER
    if isinstance(error, WaitTimeout):
        return EXIT_TIMEOUT
    if isinstance(error, StoreError):
        return EXIT_STORE
    if isinstance(error, RequestExists):
        return EXIT_CONFLICT
    return EXIT_FAILED


def console_main() -> NoReturn:
    sys.exit(main())


__all__ = ["EXIT_CODES_HELP", "build_parser", "main", "settings_from_args"]
