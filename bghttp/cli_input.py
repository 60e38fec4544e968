"""Turning the ``bghttp`` submit options into client arguments (-H, -q, -d, --json-body, -F)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import InvalidRequest
from .models import MultipartFile


class UsageError(InvalidRequest):
    """A command line the CLI cannot act on (exit code 2)."""


def request_options(args: argparse.Namespace) -> dict[str, Any]:
    headers = [_header(raw) for raw in args.header]
    options: dict[str, Any] = {
        "headers": headers,
        "query_parameters": _query(args.query),
        "timeout": args.timeout,
        "retries": args.retries,
        "request_id": args.request_id,
    }
    if args.form:
        fields, files = _form(args.form)
        options.update(fields=fields, files=files or None, multipart=True)
    elif args.data is not None:
        options["data"] = _read_argument(args.data, "--data")
    elif args.json_body is not None:
        raw = _read_argument(args.json_body, "--json-body")
        try:
            json.loads(raw)
        except ValueError as error:
            raise UsageError(f"--json-body is not valid JSON: {error}") from None
        options["data"] = raw.encode() if isinstance(raw, str) else raw
        if not any(name.lower() == "content-type" for name, _ in headers):
            headers.append(("Content-Type", "application/json"))
    return options


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


def _read_argument(value: str, option: str) -> str | bytes:
    """``@-`` reads stdin, ``@PATH`` reads a file (as bytes), anything else is the text itself."""
    if not value.startswith("@"):
        return value
    if value == "@-":
        return sys.stdin.buffer.read()
    try:
        return Path(value[1:]).read_bytes()
    except OSError as error:
        raise UsageError(f"{option}: cannot read {value[1:]!r}: {error.strerror}") from None
