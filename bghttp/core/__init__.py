"""The pure core of an attempt and a run: it decides, its drivers wait.

Nothing here opens a socket, touches the store or knows Dramatiq (a test in
``tests/test_import_graph.py`` holds it to that). The worker's runner and
attempt drive it:

* :mod:`.outcomes`: the outcome types and the one judge of an attempt's end;
* :mod:`.response_meta`: a saved response's metadata, typed;
* :mod:`.redirects`, :mod:`.body`, :mod:`.decoding`, :mod:`.retry_after`: the attempt flow;
* :mod:`.run_plan`: what a message does now;
* :mod:`.urls`: URL to host.
"""
