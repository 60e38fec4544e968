"""Decode a response body's ``Content-Encoding`` in bounded memory.

httpx inflates each network read at once: 64 KiB of gzip can become 64 MiB in
one step. Here zlib's ``max_length`` caps every step at ``OUTPUT_STEP`` bytes,
so the memory an attempt holds does not depend on the compression ratio, and
the response size limit is checked after each step.

Decoded: ``gzip`` (and ``x-gzip``, several members), ``deflate`` (zlib format,
or raw deflate as some servers send it), ``identity``, in any chain such as
``gzip, deflate``. A body with any other coding (``br``, ``zstd``, ``compress``
…) is saved as sent, with its ``Content-Encoding`` header intact.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator

from .outcomes import BadEncoding

OUTPUT_STEP = 64 * 1024

_GZIP = {"gzip", "x-gzip"}
_DECODABLE = _GZIP | {"deflate", "identity"}



def content_codings(headers: Iterable[tuple[str, str]]) -> list[str]:
    """The codings of every ``Content-Encoding`` header, in the order they were applied."""
    return [
        coding.strip().lower()
        for name, value in headers
        if name.lower() == "content-encoding"
        for coding in value.split(",")
        if coding.strip()
    ]


def can_decode(codings: list[str]) -> bool:
    """True if bghttp decodes this chain and something is left to decode."""
    return all(c in _DECODABLE for c in codings) and any(c != "identity" for c in codings)


class _Inflater:
    """One coding: feeds compressed bytes in, yields at most OUTPUT_STEP bytes at a time."""

    def __init__(self, coding: str) -> None:
        self.coding = coding
        self._raw_deflate_tried = False
        self._started = False
        self._z = self._new()

    def _new(self, wbits: int | None = None) -> zlib._Decompress:
        if wbits is None:
            wbits = zlib.MAX_WBITS | 16 if self.coding in _GZIP else zlib.MAX_WBITS
        return zlib.decompressobj(wbits)

    def feed(self, data: bytes) -> Iterator[bytes]:
        if self.coding == "identity":
            yield data
            return
        first_input = data
        while data:
            if self._z.eof:
                data = self._next_member(data)
                if not data:
                    return
            try:
                out = self._z.decompress(data, OUTPUT_STEP)
            except zlib.error as error:
                if self.coding == "deflate" and not self._started and not self._raw_deflate_tried:
                    # "deflate" without the zlib header: some servers send raw deflate.
                    self._raw_deflate_tried = True
                    self._z = self._new(-zlib.MAX_WBITS)
                    data = first_input
                    continue
                raise BadEncoding(f"the body is not valid {self.coding}: {error}") from None
            self._started = True
            if out:
                yield out
            data = self._z.unconsumed_tail or (self._z.unused_data if self._z.eof else b"")
            if not data and len(out) == OUTPUT_STEP and not self._z.eof:
                data = b""
                yield from self._drain()

    def _drain(self) -> Iterator[bytes]:
        """Output zlib still holds after a full step (input all consumed)."""
        while True:
            out = self._z.decompress(b"", OUTPUT_STEP)
            if out:
                yield out
            if len(out) < OUTPUT_STEP:
                return

    def _next_member(self, data: bytes) -> bytes:
        if self.coding in _GZIP:  # concatenated gzip members form one body
            self._z = self._new()
            return data
        return b""  # bytes after the end of a deflate stream: ignored, as zlib would

    def finish(self) -> Iterator[bytes]:
        if self.coding == "identity":
            return
        yield from self._drain()
        if not self._z.eof:
            raise BadEncoding(f"the {self.coding} body ends before its compressed stream does")


class BodyDecoder:
    """Undo a chain of content codings step by step (the last applied is undone first)."""

    def __init__(self, codings: list[str]) -> None:
        self.codings = codings
        self._stages = [_Inflater(coding) for coding in reversed(codings)]

    def feed(self, data: bytes) -> Iterator[bytes]:
        return self._through(0, [data])

    def finish(self) -> Iterator[bytes]:
        for index, stage in enumerate(self._stages):
            yield from self._through(index + 1, stage.finish())

    def _through(self, index: int, chunks: Iterable[bytes]) -> Iterator[bytes]:
        if index == len(self._stages):
            yield from chunks
            return
        stage = self._stages[index]
        for chunk in chunks:
            yield from self._through(index + 1, stage.feed(chunk))
