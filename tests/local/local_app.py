"""A local-mode process for the tests, run as ``python -m tests.local.local_app``.

``submit URL...``: submit one GET per URL (request IDs ``req-0``, ``req-1`` …,
``retries=3``) with a local-mode client, print ``submitted``, then keep running
(its in-process worker runs them) until killed.

``worker``: ``bghttp.worker.local.run_local_worker`` until SIGINT/SIGTERM.

Settings come from ``BGHTTP_*`` variables (``BGHTTP_BROKER_URL=local``).
"""

from __future__ import annotations

import sys
import time

from bghttp import BackgroundHttpClient, Settings
from bghttp.worker.local import run_local_worker


def submit(urls: list[str]) -> None:
    client = BackgroundHttpClient(Settings.from_env())
    for index, url in enumerate(urls):
        client.get(url, request_id=f"req-{index}", retries=3)
    print("submitted", flush=True)
    while True:
        time.sleep(1)


def main(argv: list[str]) -> None:
    if argv[:1] == ["submit"]:
        submit(argv[1:])
    elif argv == ["worker"]:
        run_local_worker(Settings.from_env())
    else:
        raise SystemExit("usage: python -m tests.local.local_app submit URL... | worker")


if __name__ == "__main__":
    main(sys.argv[1:])
