"""bghttp: durable background HTTP requests on Dramatiq and RabbitMQ.

The public names load on first use (PEP 562): ``import bghttp`` alone loads
none of Dramatiq, pika, httpx or asyncio, so the CLI's reading commands
(``bghttp ls``, ``status``) start fast. ``from bghttp import X`` works as usual.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .aio import AsyncBackgroundHttpClient
    from .bulk import BulkRequest
    from .client import BackgroundHttpClient
    from .config import Settings
    from .errors import (
        BghttpError,
        BrokerUnavailable,
        ConfigError,
        InvalidArgument,
        InvalidRequest,
        InvalidRequestId,
        LocalWorkerDied,
        RequestExists,
        RequestRunning,
        RetryRefused,
        StoreError,
        UnknownRequest,
        WaitTimeout,
    )
    from .models import MultipartFile, Phase, RequestInfo, RequestStatus, Response, StatusRecord

    __version__: str

__all__ = [
    "AsyncBackgroundHttpClient",
    "BackgroundHttpClient",
    "BghttpError",
    "BrokerUnavailable",
    "BulkRequest",
    "ConfigError",
    "InvalidArgument",
    "InvalidRequest",
    "InvalidRequestId",
    "LocalWorkerDied",
    "MultipartFile",
    "Phase",
    "RequestExists",
    "RequestInfo",
    "RequestRunning",
    "RequestStatus",
    "Response",
    "RetryRefused",
    "Settings",
    "StatusRecord",
    "StoreError",
    "UnknownRequest",
    "WaitTimeout",
]

#: The module each public name lives in.
_HOMES = {
    "AsyncBackgroundHttpClient": "aio",
    "BackgroundHttpClient": "client",
    "BulkRequest": "bulk",
    "Settings": "config",
    **{
        name: "errors"
        for name in (
            "BghttpError", "BrokerUnavailable", "ConfigError", "InvalidArgument", "InvalidRequest",
            "InvalidRequestId", "LocalWorkerDied", "RequestExists", "RequestRunning", "RetryRefused",
            "StoreError", "UnknownRequest", "WaitTimeout",
        )
    },
    **{
        name: "models"
        for name in ("MultipartFile", "Phase", "RequestInfo", "RequestStatus", "Response", "StatusRecord")
    },
}  # fmt: skip

#: What ``__version__`` says when the installed package has no metadata (a bare checkout on sys.path).
UNKNOWN_VERSION = "0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        value: Any = _version()
    elif name in _HOMES:
        value = getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, "__version__"})


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(__name__)
    except PackageNotFoundError:
        return UNKNOWN_VERSION
