"""The Dramatiq entry point: ``dramatiq actors`` starts a bghttp worker.

Settings come from ``BGHTTP_*`` environment variables (see the README).
"""

from bghttp.worker import setup_worker_broker

broker, runner = setup_worker_broker()

__all__ = ["broker", "runner"]
