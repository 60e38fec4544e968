"""What is saved about a response beside its body: :class:`ResponseMeta`, and its JSON form.

The attempt writes one when it commits a body; the client reads it for
``get_response``, and the runner reads it back to learn the answer of an attempt
whose worker died after saving it. ``to_json``/``from_json`` are the only places
that know the file's field names (``responses/<id>.meta.log``, a record log).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

Pairs = tuple[tuple[str, str], ...]


@dataclasses.dataclass(frozen=True)
class ResponseMeta:
    """A saved response's status, headers and size.

    ``headers`` describe the saved file: when the body was decoded (gzip, deflate),
    ``Content-Encoding`` is gone and ``Content-Length`` is the decoded size, and the
    server's own headers are kept in ``raw_headers`` with the codings removed in
    ``decoded_content_encoding``.
    """

    status_code: int
    reason: str = ""
    headers: Pairs = ()
    #: The final URL (after redirects), its password redacted.
    url: str | None = None
    http_version: str | None = None
    elapsed_ms: float | None = None
    #: Bytes saved (decoded), and bytes received (as sent).
    size: int | None = None
    raw_size: int | None = None
    decoded_content_encoding: str | None = None
    raw_headers: Pairs | None = None
    #: ``time.time()`` when it was saved (0.0 in files that do not say).
    saved_at: float = 0.0

    @property
    def was_decoded(self) -> bool:
        return self.raw_headers is not None

    def header_values(self, name: str) -> list[str]:
        """Every value of header ``name`` (any case), in the order saved."""
        wanted = name.lower()
        return [value for key, value in self.headers if key.lower() == wanted]

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "status_code": self.status_code,
            "reason": self.reason,
            "headers": [list(pair) for pair in self.headers],
            "url": self.url,
            "http_version": self.http_version,
            "elapsed_ms": self.elapsed_ms,
            "size": self.size,
            "raw_size": self.raw_size,
        }
        if self.raw_headers is not None:
            data["decoded_content_encoding"] = self.decoded_content_encoding
            data["raw_headers"] = [list(pair) for pair in self.raw_headers]
        data["saved_at"] = self.saved_at
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ResponseMeta:
        """Read a saved metadata record (older files lack some fields); ValueError if it has no status code."""
        status_code = data.get("status_code")
        if not isinstance(status_code, int) or isinstance(status_code, bool):
            raise ValueError(f"response metadata without an integer status_code: {status_code!r}")
        raw_headers = data.get("raw_headers")
        return cls(
            status_code=status_code,
            reason=str(data.get("reason") or ""),
            headers=_pairs(data.get("headers") or ()),
            url=None if data.get("url") is None else str(data["url"]),
            http_version=None if data.get("http_version") is None else str(data["http_version"]),
            elapsed_ms=_number(data.get("elapsed_ms")),
            size=_integer(data.get("size")),
            raw_size=_integer(data.get("raw_size")),
            decoded_content_encoding=(
                None if data.get("decoded_content_encoding") is None else str(data["decoded_content_encoding"])
            ),
            raw_headers=None if raw_headers is None else _pairs(raw_headers),
            saved_at=_number(data.get("saved_at")) or 0.0,
        )


def _pairs(items: Iterable[Any]) -> Pairs:
    return tuple((str(pair[0]), str(pair[1])) for pair in items if len(pair) == 2)


def _number(value: Any) -> float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


__all__ = ["ResponseMeta"]
