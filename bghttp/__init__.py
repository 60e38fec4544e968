"""bghttp: durable background HTTP requests on Dramatiq and RabbitMQ."""

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
