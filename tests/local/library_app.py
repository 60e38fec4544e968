"""A host application using bghttp as a library in local mode, run as ``python -m tests.local.library_app URL``.

It writes exactly one line to stdout itself ("hello"), waits for "go" on stdin
(the test closes the reading end of stdout in between), then submits one GET,
waits for it and reports the outcome on stderr. bghttp must write nothing to
stdout, so a closed stdout must not matter.
"""

from __future__ import annotations

import sys

from bghttp import BackgroundHttpClient, Settings


def main(url: str) -> int:
    print("hello", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 3
    with BackgroundHttpClient(Settings.from_env()) as client:
        info = client.get(url, headers={"Authorization": "Bearer sk-live-library"})
        record = client.wait(info.request_id, timeout=30)
    print(f"outcome: {record.status.value}", file=sys.stderr, flush=True)
    return 0 if record.status.value == "completed" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
