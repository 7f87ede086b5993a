"""Give an idle TLS connection's receive-buffer pages back to the kernel (ADR 0050).

The loop's TLS protocol keeps a 256 KiB receive buffer per connection for its whole life
(uvloop: ``malloc``; asyncio: a zeroed ``bytearray``).  Since ADR 0041 such blocks come
from the C heap, where a block reuses memory freed earlier: measured in a 200-device
fleet entry, the buffers of idle sessions held 24 KiB of resident pages each on average
(``mincore``), and asyncio's zeroed buffer all 256 KiB.  The bytes in it are scratch (the
TLS protocol copies every read out before it returns), so after the handshake the pages
inside the buffer are dropped with ``madvise(MADV_DONTNEED)``: they read back as zeros and
cost nothing until a later read touches them again (an idle session's reads: a page).

Linux only; elsewhere (or without libc) both functions do nothing and return 0.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import sys
from typing import Any

_MADV_DONTNEED = 4
_PAGE = mmap.PAGESIZE


def _libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()


def _inner_pages(view: memoryview) -> tuple[int, int]:
    """The whole pages strictly inside ``view``: (address, length), length 0 if none."""
    if view.readonly or not view.contiguous or view.nbytes < _PAGE:
        return 0, 0
    address = ctypes.addressof(ctypes.c_char.from_buffer(view))
    start = (address + _PAGE - 1) & ~(_PAGE - 1)
    end = (address + view.nbytes) & ~(_PAGE - 1)
    return start, max(0, end - start)


def release_pages(view: memoryview) -> int:
    """Drop the resident pages inside ``view`` (its bytes become zeros); bytes released
    (the span advised, resident or not).  The caller must hold nothing in ``view``."""
    if _LIBC is None:
        return 0
    start, length = _inner_pages(view)
    if not length or _LIBC.madvise(start, length, _MADV_DONTNEED) != 0:
        return 0
    return length


def resident_bytes(view: memoryview) -> int:
    """How much of ``view``'s inner pages is resident (``mincore``); 0 off Linux."""
    if _LIBC is None:
        return 0
    start, length = _inner_pages(view)
    if not length:
        return 0
    pages = length // _PAGE
    vector = (ctypes.c_ubyte * pages)()
    if _LIBC.mincore(start, length, vector) != 0:
        return 0
    return sum(byte & 1 for byte in vector) * _PAGE
