"""The Dramatiq entry point: ``dramatiq bghttp.actors`` starts a bghttp worker.

A module inside the ``bghttp`` package, so no module of the current directory
(a project's own ``actors.py``) can take its place. Settings come from
``BGHTTP_*`` environment variables (see the README); a bad one stops each
worker process at start with one line on stderr and exit code 2.
"""

from __future__ import annotations

import sys

from .errors import ConfigError
from .worker.actor import setup_worker_broker
from .worker.orphans import end_with_parent

# A worker process of a master that was killed (SIGKILL) ends within seconds, instead of running on.
end_with_parent()
try:
    broker, runner = setup_worker_broker()
except ConfigError as error:
    # Dramatiq would log the import's traceback; a bad setting deserves one line.
    print(f"bghttp: error: {error}", file=sys.stderr, flush=True)
    raise SystemExit(2) from None

__all__ = ["broker", "runner"]
