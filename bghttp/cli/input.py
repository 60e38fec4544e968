"""Turning the ``bghttp`` submit options into client arguments (-H, -q, -d, --data-binary, --json-body, -F, --meta).

``-d`` and ``--data-binary`` follow curl: ``-d @FILE`` drops the file's CR and
LF bytes, ``--data-binary @FILE`` sends it as it is, and several of either are
joined with ``&``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import InvalidRequest
from ..models import MultipartFile


class UsageError(InvalidRequest):
    """A command line the CLI cannot act on (exit code 2)."""


#: Methods whose requests carry no body unless the user insists (``--allow-body``).
BODILESS_METHODS = frozenset({"GET", "HEAD"})
#: curl's default for ``-d``: form data.
FORM_URLENCODED = "application/x-www-form-urlencoded"


def request_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of ``client.request`` for a submit command line; UsageError if it makes no sense."""
    _check_scheme(args.url)
    body_options = [
        option
        for option, given in (("-d", args.data), ("--data-binary", args.data_binary),
                              ("--json-body", args.json_body is not None), ("-F", args.form))
        if given
    ]  # fmt: skip
    if body_options and args.method in BODILESS_METHODS and not args.allow_body:
        raise UsageError(
            f"{body_options[0]} gives a {args.method} request a body, which servers usually ignore or refuse; "
            "add --allow-body to send it anyway"
        )
    headers = [_header(raw) for raw in args.header]
    options: dict[str, Any] = {
        "headers": headers,
        "query_parameters": _query(args.query),
        "timeout": args.timeout,
        "retries": args.retries,
        "request_id": args.request_id,
        "metadata": _metadata(args.meta),
    }
    if args.form:
        fields, files = _form(args.form)
        options.update(fields=fields, files=files or None, multipart=True)
    elif args.data:
        options["data"] = b"&".join(_read_argument(raw, "--data", strip_newlines=True) for raw in args.data)
        _default_content_type(headers, FORM_URLENCODED)
    elif args.data_binary:
        options["data"] = b"&".join(_read_argument(raw, "--data-binary") for raw in args.data_binary)
        _default_content_type(headers, "application/octet-stream")
    elif args.json_body is not None:
        raw = _read_argument(args.json_body, "--json-body")
        try:
            json.loads(raw)
        except ValueError as error:
            raise UsageError(f"--json-body is not valid JSON: {error}") from None
        options["data"] = raw
        _default_content_type(headers, "application/json")
    return options


def _check_scheme(url: str) -> None:
    """``example.com/x`` is a host without a scheme: say what was probably meant (as the client says it),
    before any body file or stdin is read."""
    from ..validation import missing_scheme_message  # here: validation loads httpx, which ls must not

    message = missing_scheme_message(url)
    if message is not None:
        raise UsageError(message)


def _default_content_type(headers: list[tuple[str, str]], content_type: str) -> None:
    """Add ``Content-Type`` unless a ``-H`` gave one."""
    if not any(name.lower() == "content-type" for name, _ in headers):
        headers.append(("Content-Type", content_type))


def _header(raw: str) -> tuple[str, str]:
    name, sep, value = raw.partition(":")
    if not sep or not name.strip():
        raise UsageError(f"-H needs 'Name: value', got {raw!r}")
    return name.strip(), value.strip()


def _query(items: Sequence[str]) -> dict[str, list[str]] | None:
    if not items:
        return None
    query: dict[str, list[str]] = {}
    for raw in items:
        key, sep, value = raw.partition("=")
        if not sep or not key:
            raise UsageError(f"-q needs KEY=VALUE, got {raw!r}")
        query.setdefault(key, []).append(value)
    return query


def _metadata(items: Sequence[str]) -> dict[str, str] | None:
    if not items:
        return None
    metadata: dict[str, str] = {}
    for raw in items:
        key, sep, value = raw.partition("=")
        if not sep or not key:
            raise UsageError(f"--meta needs KEY=VALUE, got {raw!r}")
        metadata[key] = value
    return metadata


def _form(items: Sequence[str]) -> tuple[list[tuple[str, str]], dict[str, list[MultipartFile]]]:
    fields: list[tuple[str, str]] = []
    files: dict[str, list[MultipartFile]] = {}
    for raw in items:
        name, sep, value = raw.partition("=")
        if not sep or not name:
            raise UsageError(f"-F needs NAME=VALUE or NAME=@PATH, got {raw!r}")
        if not value.startswith("@"):
            fields.append((name, value))
            continue
        path, *params = value[1:].split(";")
        extra: dict[str, str] = {}
        for param in params:
            key, _, param_value = param.partition("=")
            if key.strip() not in {"type", "filename"}:
                raise UsageError(f"-F {name}: unknown option {param!r} (use type= or filename=)")
            extra["content_type" if key.strip() == "type" else "filename"] = param_value
        files.setdefault(name, []).append(MultipartFile(path=path, **extra))
    return fields, files


def _read_argument(value: str, option: str, *, strip_newlines: bool = False) -> bytes:
    """``@-`` reads stdin, ``@PATH`` reads a file, anything else is the text itself (UTF-8).

    ``strip_newlines``: curl's ``-d @FILE`` rule, the CR and LF bytes of what was read are dropped.
    """
    if not value.startswith("@"):
        return os.fsencode(value)  # the argument's bytes, even if they are not UTF-8
    if value == "@-":
        content = sys.stdin.buffer.read()
    else:
        try:
            content = Path(value[1:]).read_bytes()
        except OSError as error:
            raise UsageError(f"{option}: cannot read {value[1:]!r}: {error.strerror}") from None
    return content.replace(b"\r", b"").replace(b"\n", b"") if strip_newlines else content
