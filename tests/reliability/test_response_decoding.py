"""Compressed responses: bounded memory whatever the ratio, and saved headers that match the saved body."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import textwrap
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from bghttp.store import FileStore
from bghttp.worker.execution import build_http_client, perform_attempt
from bghttp.worker.retry_policy import Outcome
from tests.reliability.attempts import stored_spec
from tests.reliability.scripted_server import Connection, ScriptedServer, response_head
from tests.support import PROJECT_ROOT

BODY = json.dumps({"items": [{"n": n, "text": "hello " * 20} for n in range(500)]}).encode()


def deflate(data: bytes) -> bytes:
    return zlib.compress(data)  # "deflate" is the zlib format (RFC 9110)


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-15)  # what some servers send for "deflate"
    return compressor.compress(data) + compressor.flush()


def serve(encoding: str, payload: bytes) -> Callable[[Connection], None]:
    def script(conn: Connection) -> None:
        conn.read_request()
        headers = {"Content-Type": "application/json", "Content-Length": str(len(payload))}
        if encoding:
            headers["Content-Encoding"] = encoding
        conn.send(response_head(headers=headers) + payload)

    return script


@pytest.mark.parametrize(
    ("encoding", "payload"),
    [
        ("gzip", gzip.compress(BODY)),
        ("deflate", deflate(BODY)),
        ("deflate", raw_deflate(BODY)),
        ("gzip, deflate", deflate(gzip.compress(BODY))),
        ("", BODY),
        ("identity", BODY),
    ],
    ids=["gzip", "deflate", "raw-deflate", "gzip-then-deflate", "none", "identity"],
)
def test_saved_headers_describe_the_saved_body(encoding: str, payload: bytes, tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store", fsync=False)
    with ScriptedServer(serve(encoding, payload)) as server, build_http_client() as http:
        spec = stored_spec(store, server.url("/"))
        result = perform_attempt(http, store, spec)
    assert result.outcome is Outcome.SUCCESS, result
    saved = store.response_body_path(spec.request_id).read_bytes()
    metadata = store.read_response_metadata(spec.request_id)
    assert metadata is not None
    headers = {name.lower(): value for name, value in metadata["headers"]}
    assert saved == BODY
    assert headers["content-length"] == str(len(saved)) == str(metadata["size"])
    assert metadata["raw_size"] == len(payload)
    sent = [["Content-Type", "application/json"], ["Content-Length", str(len(payload))]]
    if encoding in ("", "identity"):  # nothing decoded: the headers are the server's
        assert metadata["headers"] == sent + ([["Content-Encoding", encoding]] if encoding else [])
        assert "raw_headers" not in metadata and "decoded_content_encoding" not in metadata
        return
    assert "content-encoding" not in headers  # the file is not encoded
    # What the server sent stays visible.
    assert metadata["decoded_content_encoding"] == encoding
    assert metadata["raw_headers"] == [*sent, ["Content-Encoding", encoding]]


def test_an_encoding_bghttp_does_not_decode_is_saved_as_sent(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store", fsync=False)
    payload = b"\x8b\x00not really brotli"
    with ScriptedServer(serve("x-custom", payload)) as server, build_http_client() as http:
        spec = stored_spec(store, server.url("/"))
        result = perform_attempt(http, store, spec)
    assert result.outcome is Outcome.SUCCESS, result
    metadata = store.read_response_metadata(spec.request_id)
    assert metadata is not None
    assert store.response_body_path(spec.request_id).read_bytes() == payload
    assert ["Content-Encoding", "x-custom"] in metadata["headers"]  # the body is still encoded: say so
    assert metadata.get("decoded_content_encoding") is None


def gzip_bomb(size: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1024 * 1024)
    parts = [compressor.compress(block) for _ in range(size // len(block))]
    return b"".join(parts) + compressor.flush()


PEAK_RSS_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from bghttp.worker.execution import build_http_client, perform_attempt
    from bghttp.store import FileStore
    from tests.reliability.attempts import stored_spec

    def peak_kib():  # VmHWM: this process's own peak (ru_maxrss would include the parent's before exec)
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])

    url, root, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = FileStore(root, fsync=False)
    with build_http_client() as http:
        # Warm up: imports, the pool, one small attempt; then the peak so far is "idle".
        perform_attempt(http, store, stored_spec(store, url + "?small", request_id="warm"))
        idle = peak_kib()
        result = perform_attempt(http, store, stored_spec(store, url, request_id="bomb"), max_response_bytes=limit)
        peak = peak_kib()
    print(json.dumps({"idle_kib": idle, "peak_kib": peak, "outcome": result.outcome.value, "error": result.error}))
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_a_decompression_bomb_keeps_memory_bounded(encoding: str, tmp_path: Path) -> None:
    bomb = gzip_bomb(1024**3) if encoding == "gzip" else deflate(bytes(256 * 1024**2))
    small = gzip.compress(b"small") if encoding == "gzip" else deflate(b"small")

    def script(conn: Connection) -> None:
        head = conn.read_request()
        payload = small if b"?small" in head.split(b"\r\n")[0] else bomb
        conn.send(response_head(headers={"Content-Encoding": encoding, "Content-Length": str(len(payload))}))
        conn.send(payload)

    with ScriptedServer(script) as server:
        run = subprocess.run(
            [sys.executable, "-c", PEAK_RSS_SCRIPT, server.url("/bomb"), str(tmp_path / "store"), "1000000"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    rise_mib = (report["peak_kib"] - report["idle_kib"]) / 1024
    print(f"\n{encoding} bomb ({len(bomb)} bytes): peak RSS rose {rise_mib:.1f} MiB above idle; {report}")
    assert report["outcome"] == "too_large", report
    assert rise_mib < 16
