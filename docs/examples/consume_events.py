"""Receive bghttp's final-status events: pika and the standard library only, no bghttp.

Binds a durable queue of this service to the topic exchange ``bghttp.events``
(routing keys ``request.completed``, ``request.failed``, ``request.cancelled``,
``request.rejected``), and prints each event once as a JSON line on stdout.
Delivery is at least once: an event may come twice, always with the same
``event_id``, so the consumer deduplicates by it. (A real service records the
``event_id`` in the same database transaction as its own update.)

    AMQP_URL=amqp://guest:guest@localhost:5672/ python consume_events.py
"""

import json
import os
import sys

import pika

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@localhost:5672/")
EXCHANGE = os.environ.get("EVENTS_EXCHANGE", "bghttp.events")
QUEUE = os.environ.get("EVENTS_QUEUE", "my-service.bghttp-events")
#: Stop after this many distinct events (0: run until interrupted).
STOP_AFTER = int(os.environ.get("STOP_AFTER", "0"))


def main() -> None:
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    # Declared with the same arguments as bghttp declares it, so either side may come first.
    channel.exchange_declare(exchange=EXCHANGE, exchange_type="topic", durable=True)
    channel.queue_declare(queue=QUEUE, durable=True)
    channel.queue_bind(queue=QUEUE, exchange=EXCHANGE, routing_key="request.*")
    channel.basic_qos(prefetch_count=100)
    print(f"consuming {EXCHANGE} -> {QUEUE}", file=sys.stderr, flush=True)
    seen: set[str] = set()
    for method, _properties, body in channel.consume(QUEUE):
        event = json.loads(body)
        if event["event_id"] in seen:
            print(f"duplicate {event['event_id']}", file=sys.stderr, flush=True)
        else:
            seen.add(event["event_id"])
            # Handle the event here: match event["metadata"] to your own record.
            print(json.dumps({"routing_key": method.routing_key, **event}), flush=True)
        channel.basic_ack(method.delivery_tag)  # after handling: a crash before this redelivers it
        if STOP_AFTER and len(seen) >= STOP_AFTER:
            break
    channel.cancel()
    connection.close()


if __name__ == "__main__":
    main()
