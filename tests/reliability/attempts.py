"""Run single attempts in-process against real loopback servers."""

from __future__ import annotations

import time
from collections.abc import Iterable

from bghttp.models import RequestSpec
from bghttp.store import FileStore


def stored_spec(
    store: FileStore,
    url: str,
    *,
    method: str = "GET",
    headers: Iterable[tuple[str, str]] = (),
    body: bytes | None = None,
    timeout: float = 2.0,
    request_id: str = "r1",
    retries: int = 0,
) -> RequestSpec:
    """Write a request straight into the store (no submit validation) and return its spec."""
    spec = RequestSpec(
        request_id=request_id,
        method=method,
        url=url,
        headers=list(headers),
        timeout=timeout,
        max_retries=retries,
        created_at=time.time(),
        has_body=body is not None,
    )
    assert store.create_request(spec, body=body) is not None
    return spec
