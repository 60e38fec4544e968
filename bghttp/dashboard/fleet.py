"""The workers the store's heartbeats describe, summed up for the overview and the workers page."""

from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path

from ..heartbeats import WorkerHeartbeat, read_heartbeats, skew_warnings


@dataclasses.dataclass(frozen=True)
class Fleet:
    workers: list[WorkerHeartbeat]  # live and stale, by host and pid
    now: datetime.datetime

    @property
    def live(self) -> list[WorkerHeartbeat]:
        return [worker for worker in self.workers if not worker.stale]

    @property
    def stale(self) -> list[WorkerHeartbeat]:
        return [worker for worker in self.workers if worker.stale]

    @property
    def offline(self) -> list[WorkerHeartbeat]:
        """Live workers whose gate says the network is down (they take no work)."""
        return [worker for worker in self.live if not worker.online]

    @property
    def in_flight(self) -> int:
        return sum(worker.in_flight for worker in self.live)

    @property
    def warnings(self) -> list[str]:
        return skew_warnings(self.workers, now=self.now)

    def age(self, worker: WorkerHeartbeat) -> float:
        return worker.age(self.now)


def read(store_dir: str | Path, now: float) -> Fleet:
    moment = datetime.datetime.fromtimestamp(now, datetime.UTC)
    return Fleet(read_heartbeats(store_dir, now=moment), moment)
