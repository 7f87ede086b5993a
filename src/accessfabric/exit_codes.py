"""One exit-code convention for every ``accessfabric`` command (node, services, control).

=====  ===========================================================================
code   meaning
=====  ===========================================================================
0      done
1      the command could not do its work (a port in use, a device it cannot make)
2      a mistake the user can fix: an argument, a config file, a key, a token, a
       request the control plane refused, a key already in use by another node
3      the node or control plane did not answer
4-7    ``smoke`` only: TLS, identity mismatch, authentication, protocol
130    interrupted (Ctrl-C before the command set up its own signal handling)
141    stdout closed early (``accessfabric ... | head``)
=====  ===========================================================================

Every non-zero code comes with one line on stderr, never a traceback.
"""

from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    UNREACHABLE = 3
    INTERRUPTED = 130
    BROKEN_PIPE = 141
