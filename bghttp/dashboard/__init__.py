"""``bghttp dashboard``: a web view of one store and its queue, with cancel and retry.

Needs the ``bghttp[dashboard]`` extra (Starlette, uvicorn, Jinja2). Nothing in
``bghttp`` or the worker imports this package; the CLI imports it only when the
command runs. Modules: ``app`` (routes, pages, security headers), ``queries``
(store reads, the fast listing), ``queues`` (queue depth by passive declare),
``fleet`` (heartbeats), ``auth`` (secret, sessions, CSRF), ``visible`` (control and
bidi characters made visible).
"""
