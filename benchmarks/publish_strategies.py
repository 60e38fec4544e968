"""Compare three ways to publish a batch durably on RabbitMQ (the evidence behind ``bghttp.bulk``).

    python -m benchmarks.publish_strategies [--count 3000]

* one publisher confirm per message (what ``BackgroundHttpClient.request`` does);
* one transaction (``tx.select`` … ``tx.commit``), what ``submit_many`` does;
* pipelined confirms (publish all, then wait for every ack) through pika's
  private ``_impl`` channel, the fastest but not public API.

Messages are persistent, on a durable queue of their own that is deleted afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import time
import uuid
from typing import Any

import pika

from bghttp.broker import request_message

from .infra import BROKER_URL, load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=3000)
    count = parser.parse_args().count
    queue = f"bghttp-bench-publish-{uuid.uuid4().hex[:8]}"
    connection = pika.BlockingConnection(pika.URLParameters(BROKER_URL))
    try:
        _compare(connection, queue, count)
    finally:
        with contextlib.suppress(Exception):
            connection.channel().queue_delete(queue)
        connection.close()


def _compare(connection: Any, queue: str, count: int) -> None:
    connection.channel().queue_declare(queue, durable=True)
    bodies = [request_message(queue, uuid.uuid4().hex, 1).encode() for _ in range(count)]
    properties = pika.BasicProperties(delivery_mode=2)
    print(f"load {load()}, {count} persistent messages per strategy")
    for name, publish in (("confirm each", _confirm_each), ("transaction", _transaction),
                          ("pipelined confirms", _pipelined_confirms)):
        channel = connection.channel()
        started = time.perf_counter()
        publish(connection, channel, queue, bodies, properties)
        seconds = time.perf_counter() - started
        channel.close()
        print(f"{name:20s} {count / seconds:8,.0f} messages/s")


def _confirm_each(connection: Any, channel: Any, queue: str, bodies: list[bytes], properties: Any) -> None:
    channel.confirm_delivery()
    for body in bodies:
        channel.basic_publish("", queue, body, properties, mandatory=True)


def _transaction(connection: Any, channel: Any, queue: str, bodies: list[bytes], properties: Any) -> None:
    channel.tx_select()
    for body in bodies:
        channel.basic_publish("", queue, body, properties, mandatory=True)
    channel.tx_commit()


def _pipelined_confirms(connection: Any, channel: Any, queue: str, bodies: list[bytes], properties: Any) -> None:
    impl = channel._impl  # private pika API: the only way to pipeline confirms on a BlockingConnection
    state = {"acked": 0, "nacked": 0, "ready": False}

    def on_confirm(frame: Any) -> None:
        method = frame.method
        key = "acked" if isinstance(method, pika.spec.Basic.Ack) else "nacked"
        state[key] = method.delivery_tag if method.multiple else state[key] + 1

    impl.confirm_delivery(ack_nack_callback=on_confirm, callback=lambda _frame: state.update(ready=True))
    while not state["ready"]:
        connection.process_data_events(0.01)
    for body in bodies:
        impl.basic_publish("", queue, body, properties)
    while state["acked"] + state["nacked"] < len(bodies):
        connection.process_data_events(0.01)
    if state["nacked"]:
        raise RuntimeError(f"{state['nacked']} messages were nacked")


if __name__ == "__main__":
    main()
