"""Submit HTTP requests to bghttp by message: pika and the standard library only, no bghttp.

Reads one request object per line of stdin (the schema is on the Messages page),
publishes each as a Dramatiq message ``submit_request(request)`` on the queue
``bghttp.submit``, and prints the request ID of each on stdout: its ``request_id``,
or else the message's ``message_id``, which the worker takes as the ID.

    echo '{"method": "GET", "url": "https://example.com/", "metadata": {"order": 7}}' |
        AMQP_URL=amqp://guest:guest@localhost:5672/ python submit_by_message.py
"""

import json
import os
import sys
import time
import uuid

import pika

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@localhost:5672/")
SUBMIT_QUEUE = os.environ.get("SUBMIT_QUEUE", "bghttp.submit")  # <BGHTTP_QUEUE>.submit


def dramatiq_message(request: dict, message_id: str) -> bytes:
    """The Dramatiq envelope: actor ``submit_request``, one positional argument."""
    return json.dumps(
        {
            "queue_name": SUBMIT_QUEUE,
            "actor_name": "submit_request",
            "args": [request],
            "kwargs": {},
            "options": {},
            "message_id": message_id,
            "message_timestamp": int(time.time() * 1000),
        }
    ).encode("utf-8")


def main() -> None:
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    # Publisher confirms: basic_publish returns once RabbitMQ has the message, or raises.
    channel.confirm_delivery()
    # The workers declare the queue when they start; passive: fail here if none ever ran.
    channel.queue_declare(queue=SUBMIT_QUEUE, passive=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        message_id = str(uuid.uuid4())
        channel.basic_publish(
            exchange="",
            routing_key=SUBMIT_QUEUE,
            body=dramatiq_message(request, message_id),
            properties=pika.BasicProperties(delivery_mode=2, content_type="application/json"),
            mandatory=True,  # an unroutable message raises instead of vanishing
        )
        print(request.get("request_id") or message_id, flush=True)
    connection.close()


if __name__ == "__main__":
    main()
