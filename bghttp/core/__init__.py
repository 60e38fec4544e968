"""The pure core of an attempt and a run: it decides, its drivers wait.

Nothing here opens a socket, touches the store or knows Dramatiq (a test in
``tests/test_import_graph.py`` holds it to that). The worker's runner and
attempt drive it: :mod:`.outcomes` judges errors and answers, :mod:`.retry_after`
reads ``Retry-After`` and :mod:`.decoding` decodes a body in bounded steps.
"""
