"""Delayed messages (retries, hand-backs) leave the delay queue when they are due, not up to a second later.

Dramatiq's delay-queue consumer holds each delayed message until its eta and
looks for due ones only when it wakes up: on each message it receives, else
every ``worker_timeout`` (1 s by default). A retry then started up to a second
late, plus the hop through the work queue. This middleware makes the consumers
of delay queues (``.DQ``) wake every :data:`DELAY_POLL_MS`; the work queues'
consumers keep Dramatiq's timeout, since they wake on every message anyway (and
hundreds of worker threads keep it too: they wait on the in-process queue).
"""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.middleware import Middleware

#: How often a delay queue's consumer looks for due messages (ms): at most this late, 10 ms on average.
DELAY_POLL_MS = 20


class PromptDelayedMessages(Middleware):
    """Shortens the wake-up of every delay-queue consumer thread to ``DELAY_POLL_MS``."""

    def after_consumer_thread_boot(self, broker: dramatiq.Broker, thread: Any) -> None:
        # Runs in the consumer thread before it starts consuming: the timeout it consumes with.
        if str(thread.queue_name).endswith(".DQ"):
            thread.worker_timeout = min(thread.worker_timeout, DELAY_POLL_MS)


__all__ = ["DELAY_POLL_MS", "PromptDelayedMessages"]
