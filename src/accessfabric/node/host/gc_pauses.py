"""Keep the garbage collector's full passes short in a long-running node process.

CPython's oldest generation holds everything a process built at start-up: modules,
classes, the TLS contexts, the node's configuration — about 30 000 objects in a
node process and 55 000 once the services are imported.  A full (generation-2)
collection walks all of them every time it runs, which stalls the event loop for
tens of milliseconds on a busy 2-core machine (measured in ``bench hol``: a full
collection took 24-34 ms under load average ~5, and 0.7-0.8 ms once the start-up
objects were frozen).  Every session's frames wait for that stall.

:func:`freeze_startup_objects` collects once, then moves every surviving object
into the permanent generation (:func:`gc.freeze`): later collections skip them.
Reference counting still frees them; only reference cycles made of start-up
objects are never reclaimed, and a node builds those once.  The collector's
thresholds stay at CPython's defaults: young collections measured 0.1-0.2 ms
while a link was saturated, and larger thresholds only make each one longer.
"""

from __future__ import annotations

import gc


def freeze_startup_objects() -> int:
    """Collect, then exempt every live object from later collections; how many were frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
