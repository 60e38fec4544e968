"""Python loads this at start when its directory is on PYTHONPATH: the process's wall clock
(``time.time``) runs ``BGHTTP_TEST_CLOCK_OFFSET`` seconds off, as on a host with a wrong clock.

Monotonic clocks and the kernel's file times stay true, as they would on such a host.
"""

import os
import time

_offset = float(os.environ.get("BGHTTP_TEST_CLOCK_OFFSET", "0") or 0)
if _offset:
    _real_time, _real_time_ns = time.time, time.time_ns
    time.time = lambda: _real_time() + _offset
    time.time_ns = lambda: _real_time_ns() + int(_offset * 1e9)
