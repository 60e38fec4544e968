"""Without the ``bghttp[otel]`` extra nothing changes and nothing of OpenTelemetry is imported.

The dev environment has the extra, so a subprocess hides it with an import hook
(as if it were not installed), then submits a request and lets the local-mode
worker run its attempt against a loopback server.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.support import PROJECT_ROOT, worker_env

SCRIPT = textwrap.dedent(
    """
    import http.server, sys, threading

    class NoOpenTelemetry:
        # Refuse the package as an interpreter without it would: ModuleNotFoundError.
        def find_spec(self, name, path=None, target=None):
            if name == "opentelemetry" or name.startswith("opentelemetry."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NoOpenTelemetry())

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")
            print("traceparent:", self.headers.get("traceparent"), flush=True)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    from bghttp import BackgroundHttpClient, RequestStatus, Settings
    from bghttp import tracing

    settings = Settings(broker_url="local", store_dir=sys.argv[1], fsync=False, propagate_trace=True)
    with BackgroundHttpClient(settings) as client:
        info = client.get(f"http://127.0.0.1:{server.server_port}/")
        record = client.wait(info.request_id, timeout=30)
        spec = client.store.load_request(info.request_id)
    server.shutdown()
    assert record.status is RequestStatus.COMPLETED, record
    assert spec.trace_context is None, spec
    assert not tracing.available()
    loaded = sorted(name for name in sys.modules if name.split(".")[0] == "opentelemetry")
    print("opentelemetry modules:", loaded, flush=True)
    """
)


def test_without_the_extra_a_submit_and_an_attempt_import_nothing_of_opentelemetry(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "store")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=PROJECT_ROOT,
        env=worker_env({"BGHTTP_LOG_LEVEL": "WARNING"}),
    )
    assert result.returncode == 0, result.stderr
    assert "traceparent: None" in result.stdout  # the attempt ran, and propagation had nothing to send
    assert "opentelemetry modules: []" in result.stdout
