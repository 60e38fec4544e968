"""ResponseMeta: the saved response's metadata, typed, and its JSON form unchanged (no I/O)."""

from __future__ import annotations

import json

import pytest

from bghttp.core.response_meta import ResponseMeta

#: A metadata record as the worker wrote it before it was typed (a plain body, and a decoded one).
PLAIN = (
    '{"status_code":200,"reason":"OK","headers":[["Content-Type","text/plain"],["X-A","1"],["x-a","2"]],'
    '"url":"http://h.test/a","http_version":"HTTP/1.1","elapsed_ms":12.345,"size":5,"raw_size":5,'
    '"saved_at":1700000000.5}'
)
DECODED = (
    '{"status_code":503,"reason":"Service Unavailable","headers":[["Retry-After","7"],["Content-Length","100"]],'
    '"url":"http://[redacted]@h.test/","http_version":"HTTP/1.1","elapsed_ms":1.0,"size":100,"raw_size":40,'
    '"decoded_content_encoding":"gzip","raw_headers":[["Retry-After","7"],["Content-Encoding","gzip"],'
    '["Content-Length","40"]],"saved_at":1700000001.0}'
)


@pytest.mark.parametrize("line", [PLAIN, DECODED])
def test_a_saved_record_round_trips_to_the_same_json(line: str) -> None:
    meta = ResponseMeta.from_json(json.loads(line))
    assert json.dumps(meta.to_json(), separators=(",", ":")) == line
    assert ResponseMeta.from_json(meta.to_json()) == meta


def test_fields_are_typed() -> None:
    plain = ResponseMeta.from_json(json.loads(PLAIN))
    assert plain.headers == (("Content-Type", "text/plain"), ("X-A", "1"), ("x-a", "2"))
    assert plain.header_values("x-a") == ["1", "2"] and not plain.was_decoded
    decoded = ResponseMeta.from_json(json.loads(DECODED))
    assert decoded.was_decoded and decoded.decoded_content_encoding == "gzip"
    assert decoded.raw_headers is not None and ("Content-Encoding", "gzip") in decoded.raw_headers
    assert (decoded.status_code, decoded.reason, decoded.size, decoded.raw_size) == (
        503, "Service Unavailable", 100, 40
    )


def test_an_older_file_with_few_fields_loads_with_defaults() -> None:
    meta = ResponseMeta.from_json({"status_code": 201, "headers": [], "size": 10})
    assert meta == ResponseMeta(status_code=201, size=10)
    assert meta.saved_at == 0.0 and meta.url is None and meta.reason == ""


@pytest.mark.parametrize("data", [{}, {"status_code": "200"}, {"status_code": True}, {"status_code": None}])
def test_a_record_without_an_integer_status_code_is_refused(data: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="status_code"):
        ResponseMeta.from_json(data)


def test_fields_of_the_wrong_type_are_read_as_unknown() -> None:
    meta = ResponseMeta.from_json({"status_code": 200, "size": "10", "elapsed_ms": True, "saved_at": "x"})
    assert (meta.size, meta.elapsed_ms, meta.saved_at) == (None, None, 0.0)
