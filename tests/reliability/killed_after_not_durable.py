"""Fault injection, imported by a test's worker processes: a run whose commit failed (``NotDurable``)
writes ``BGHTTP_TEST_NOT_DURABLE_MARK`` and stalls before raising, so the test can kill the worker
before Dramatiq's Retries middleware enqueues the retry (with its ``bghttp_not_durable`` option)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from bghttp.durability import NotDurable
from bghttp.worker.runner import RequestRunner

_run = RequestRunner.run


def _stalling_run(self: RequestRunner, *args: Any, **kwargs: Any) -> None:
    try:
        _run(self, *args, **kwargs)
    except NotDurable:
        Path(os.environ["BGHTTP_TEST_NOT_DURABLE_MARK"]).write_text("not durable")
        time.sleep(120)  # killed here
        raise


RequestRunner.run = _stalling_run  # type: ignore[method-assign]
