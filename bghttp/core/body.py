"""The body sink: a response body on its way from the wire to the file, decoded in bounded steps
(:mod:`.decoding`) and held to ``BGHTTP_MAX_RESPONSE_BYTES``.

The driver feeds it the raw chunks it reads and writes out what comes back;
between chunks it checks its own deadline and cancel. The limit counts both the
bytes received and the bytes decoded, so neither a large body nor a small one
that inflates can pass it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from .decoding import BodyDecoder, can_decode
from .outcomes import ResponseTooLarge


class BodySink:
    def __init__(self, codings: Sequence[str], max_bytes: int | None, *, decode: bool = True) -> None:
        """``codings``: the body's Content-Encoding chain; ``decode=False`` for a body the client has
        decoded already (an in-memory response), saved as given."""
        self._decoder = BodyDecoder(list(codings)) if decode and can_decode(list(codings)) else None
        self._max_bytes = max_bytes
        #: Bytes handed out (decoded), and bytes fed (as received).
        self.size = 0
        self.raw_size = 0

    @property
    def decoded(self) -> bool:
        """Whether the saved body is a decoding of what was received (its Content-Encoding removed)."""
        return self._decoder is not None and self.raw_size > 0

    def feed(self, raw: bytes) -> Iterator[bytes]:
        """The chunks to write for ``raw``; raises ResponseTooLarge when the limit is passed."""
        self.raw_size += len(raw)
        for chunk in self._decoder.feed(raw) if self._decoder is not None else (raw,):
            yield self._admit(chunk)

    def finish(self) -> Iterator[bytes]:
        """What the decoder still holds once the body has ended (raises BadEncoding for a cut-off one)."""
        if self._decoder is not None and self.raw_size:
            for chunk in self._decoder.finish():
                yield self._admit(chunk)

    def _admit(self, chunk: bytes) -> bytes:
        self.size += len(chunk)
        if self._max_bytes is not None and max(self.size, self.raw_size) > self._max_bytes:
            raise ResponseTooLarge(f"response body passed BGHTTP_MAX_RESPONSE_BYTES={self._max_bytes}")
        return chunk


__all__ = ["BodySink"]
