"""The worker side: what runs a request once its message arrives.

``actor`` assembles the broker, the middleware and the ``execute_request`` actor
(``dramatiq bghttp.actors`` and the embedded ``local`` worker both use it);
``gate`` holds messages while ``connectivity`` says the network is down;
``runner`` takes one request through an attempt and decides what comes next
(``retry_policy``); ``execution`` performs the HTTP attempt, with ``attempt_io``
(deadline and cancel), ``redirects``, ``decoding`` and ``egress``; ``local`` runs
all of it inside a client's process; ``metrics`` exports Prometheus counters.

The store, the lifecycle, the broker's message format, recovery and the models are
shared with the client and live one level up. The client side imports this package
only inside the functions that need it (a local worker, a probe setting's check),
so ``import bghttp`` loads no worker code. Nothing here is public API.
"""
