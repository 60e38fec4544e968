"""The body sink: bounded decoding and the size limit, fed scripted chunks (no I/O)."""

from __future__ import annotations

import gzip
import zlib

import pytest

from bghttp.core.body import BodySink
from bghttp.core.decoding import OUTPUT_STEP
from bghttp.core.outcomes import BadEncoding, ResponseTooLarge


def drain(sink: BodySink, chunks: list[bytes]) -> list[bytes]:
    out = [chunk for raw in chunks for chunk in sink.feed(raw)]
    return out + list(sink.finish())


def test_a_plain_body_passes_as_received() -> None:
    sink = BodySink([], None)
    assert drain(sink, [b"ab", b"cd"]) == [b"ab", b"cd"]
    assert (sink.size, sink.raw_size, sink.decoded) == (4, 4, False)


def test_a_gzip_body_is_decoded_in_steps_no_larger_than_the_output_step() -> None:
    body = b"x" * (5 * OUTPUT_STEP)
    packed = gzip.compress(body)
    sink = BodySink(["gzip"], None)
    chunks = drain(sink, [packed[:10], packed[10:]])
    assert b"".join(chunks) == body and max(map(len, chunks)) <= OUTPUT_STEP
    assert (sink.size, sink.raw_size, sink.decoded) == (len(body), len(packed), True)


def test_a_coding_it_cannot_decode_is_saved_as_sent() -> None:
    sink = BodySink(["br"], None)
    assert drain(sink, [b"\x0b\x02"]) == [b"\x0b\x02"] and not sink.decoded


def test_an_in_memory_body_the_client_decoded_is_not_decoded_again() -> None:
    sink = BodySink(["gzip"], None, decode=False)
    assert drain(sink, [b"already plain"]) == [b"already plain"] and not sink.decoded


def test_an_empty_encoded_body_is_not_decoded() -> None:
    sink = BodySink(["gzip"], None)
    assert drain(sink, []) == [] and not sink.decoded


def test_the_limit_counts_decoded_bytes() -> None:
    bomb = zlib.compress(b"\0" * (4 * OUTPUT_STEP))
    sink = BodySink(["deflate"], 2 * OUTPUT_STEP)
    with pytest.raises(ResponseTooLarge, match="BGHTTP_MAX_RESPONSE_BYTES=131072"):
        drain(sink, [bomb])
    assert sink.size <= 3 * OUTPUT_STEP  # stopped within a step of the limit, not after inflating it all


def test_the_limit_counts_received_bytes() -> None:
    sink = BodySink(["br"], 5)
    with pytest.raises(ResponseTooLarge):
        drain(sink, [b"abc", b"def"])
    assert BodySink([], 6) and drain(BodySink([], 6), [b"abc", b"def"]) == [b"abc", b"def"]


def test_a_body_that_is_not_what_its_encoding_says_is_bad_encoding() -> None:
    with pytest.raises(BadEncoding):
        drain(BodySink(["gzip"], None), [b"not gzip at all"])
    with pytest.raises(BadEncoding):
        drain(BodySink(["gzip"], None), [gzip.compress(b"x" * 1000)[:20]])  # cut off
