"""Running a worker from a checkout: ``dramatiq actors`` is ``dramatiq bghttp.actors``.

A thin entry point for the repository's own layout, never installed (see
pyproject.toml): an installed top-level ``actors`` would shadow, or be shadowed
by, a project's own ``actors.py``. Use ``dramatiq bghttp.actors`` or
``bghttp worker`` everywhere else.
"""

from bghttp.actors import broker, runner

__all__ = ["broker", "runner"]
