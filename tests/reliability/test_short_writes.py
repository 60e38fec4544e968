"""A write that writes less than asked (issue 21, item 1): a request is stored whole or not accepted.

write(2) on a regular file may write less than asked without an error: under a
file-size limit (``RLIMIT_FSIZE``, systemd's ``LimitFSIZE=``) or on a nearly
full filesystem. The store used to ignore the count: a 300,000-byte body was
stored (and later sent) as its first 100,000 bytes, and the submit was accepted.
"""

from __future__ import annotations

import dataclasses
import random
import resource
import subprocess
import threading
from pathlib import Path

import pytest

from bghttp import BackgroundHttpClient, Settings, StoreError
from bghttp.store import FileStore
from tests.cli.helpers import bghttp_command, cli_env
from tests.reliability.full_disk import mounted_tmpfs
from tests.support import PROJECT_ROOT

pytestmark = [pytest.mark.rabbitmq]

FILE_SIZE_LIMIT = 100_000
SUBMITS_PER_THREAD = 1000


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))


def test_a_body_cut_by_a_file_size_limit_is_not_accepted(rabbitmq_settings: Settings, tmp_path: Path) -> None:
    body = bytes(random.Random(1).randrange(256) for _ in range(300_000))
    source = tmp_path / "body.bin"
    source.write_bytes(body)
    result = subprocess.run(
        [*bghttp_command(), "post", "http://127.0.0.1:9/x", "--data-binary", f"@{source}", "--id", "cut"],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(rabbitmq_settings),
        cwd=PROJECT_ROOT,
        preexec_fn=_limit_file_size,
    )
    store = FileStore(rabbitmq_settings.store_dir)
    stored = store.body_path("cut").read_bytes() if store.body_path("cut").exists() else None
    assert result.returncode != 0, f"accepted with a stored body of {len(stored or b'')} bytes"
    assert "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1, result.stderr
    assert store.read_status("cut") is None
    assert stored is None


def test_submits_on_a_filling_disk_store_every_accepted_body_whole(rabbitmq_settings: Settings, tmp_path: Path) -> None:
    with mounted_tmpfs(tmp_path / "tmpfs", "4m") as mountpoint:
        settings = dataclasses.replace(rabbitmq_settings, store_dir=mountpoint / "store")
        accepted: dict[str, bytes] = {}
        refused: list[StoreError] = []
        lock = threading.Lock()

        def submit(thread: int) -> None:
            rng = random.Random(thread)
            mine: list[str] = []
            with BackgroundHttpClient(settings) as client:
                for n in range(SUBMITS_PER_THREAD):
                    body = rng.randbytes(rng.randrange(5_000, 60_000))
                    request_id = f"t{thread}-{n}"
                    try:
                        client.post("http://127.0.0.1:9/x", data=body, request_id=request_id)
                    except StoreError as error:
                        with lock:
                            refused.append(error)
                        if mine:  # make room, so the disk stays at its edge
                            client.remove(mine.pop(rng.randrange(len(mine))))
                        continue
                    mine.append(request_id)
                    with lock:
                        accepted[request_id] = body
                with lock:
                    for gone in set(accepted) - set(mine):
                        if gone.startswith(f"t{thread}-"):
                            del accepted[gone]

        threads = [threading.Thread(target=submit, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        store = FileStore(settings.store_dir)
        cut = {
            request_id: len(store.read_request_body(request_id))
            for request_id, body in accepted.items()
            if store.read_status(request_id) is None or store.read_request_body(request_id) != body
        }
        assert refused, "the disk never filled up: the test did not reach its edge"
        assert len(accepted) > 20
        assert cut == {}, f"{len(cut)} of {len(accepted)} accepted bodies are stored cut: {cut}"
