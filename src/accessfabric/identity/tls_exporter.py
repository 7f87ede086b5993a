"""RFC 9266 ``tls-exporter`` channel binding for stdlib ``ssl`` objects (ADR 0020).

Python 3.11's ``ssl`` has no ``export_keying_material``.  OpenSSL has
``SSL_export_keying_material``, and the ``SSL *`` of an ``ssl.SSLObject`` (what asyncio's
SSL transport uses) or ``ssl.SSLSocket`` sits in CPython's ``PySSLSocket`` struct right
after ``PyObject_HEAD`` and a weak reference.  We call the exporter of the very libssl that
``_ssl`` is linked against, through ``ctypes``, and only after three checks that we hold
the right pointer, so a different CPython layout fails closed with
:class:`ChannelBindingUnavailable` instead of signing garbage or crashing:

1. the ``PySSLSocket.ctx`` slot (the word after ``ssl``) is the address of the object's
   own ``SSLContext`` — a pure memory compare, no call through an unchecked pointer;
2. ``SSL_get_SSL_CTX(ssl)`` is the ``SSL_CTX *`` held by that ``SSLContext``;
3. ``SSL_get_finished`` or ``SSL_get_peer_finished`` equals what
   ``get_channel_binding("tls-unique")`` returns for the same object.

The value is ``TLS-Exporter("EXPORTER-Channel-Binding", "", 32)`` (RFC 9266 §2, RFC 8446
§7.5): the same on both ends of one TLS 1.3 connection, different on every other, and
computable with any TLS 1.3 stack (Go ``ConnectionState.ExportKeyingMaterial``, rustls,
BoringSSL, Conscrypt).
"""

from __future__ import annotations

import _ssl
import ctypes
import ssl
from functools import cache
from typing import Any

TLS_EXPORTER_LABEL = b"EXPORTER-Channel-Binding"
TLS_EXPORTER_LENGTH = 32

_WORD = ctypes.sizeof(ctypes.c_void_p)
_SSL_SLOT = 3 * _WORD  # PyObject_HEAD (refcount, type), PyObject *Socket, then SSL *ssl
_CTX_SLOT = 4 * _WORD  # then PySSLContext *ctx
_SSL_CTX_SLOT = 2 * _WORD  # PySSLContext: PyObject_HEAD, then SSL_CTX *ctx


class ChannelBindingUnavailable(ValueError):
    """The TLS exporter cannot be read from this ``ssl`` object (no TLS 1.3, or an
    interpreter whose ``_ssl`` layout we do not recognise)."""


class _LibSsl:
    """The three libssl calls we need, with their C signatures."""

    def __init__(self) -> None:
        library = ctypes.CDLL(_ssl.__file__)  # dlsym searches _ssl's own libssl
        self.export = library.SSL_export_keying_material
        self.export.argtypes = [
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_int,
        ]
        self.export.restype = ctypes.c_int
        self.get_ssl_ctx = library.SSL_get_SSL_CTX
        self.get_ssl_ctx.argtypes = [ctypes.c_void_p]
        self.get_ssl_ctx.restype = ctypes.c_void_p
        self.finished = library.SSL_get_finished
        self.peer_finished = library.SSL_get_peer_finished
        for function in (self.finished, self.peer_finished):
            function.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
            function.restype = ctypes.c_size_t


@cache
def _libssl() -> _LibSsl:
    try:
        return _LibSsl()
    except (OSError, AttributeError) as error:
        raise ChannelBindingUnavailable(f"libssl exporter not found: {error}") from None


def _word_at(address: int) -> int:
    value = ctypes.c_void_p.from_address(address).value
    return 0 if value is None else value


def _ssl_pointer(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> int:
    """The checked ``SSL *`` of ``ssl_object`` (see the module docstring)."""
    inner: Any = getattr(ssl_object, "_sslobj", None)
    if type(inner) is not getattr(_ssl, "_SSLSocket", None):
        raise ChannelBindingUnavailable("not a connected stdlib ssl object")
    if type(inner).__basicsize__ < _CTX_SLOT + _WORD:
        raise ChannelBindingUnavailable("unrecognised _ssl object layout")
    context: Any = inner.context
    if _word_at(id(inner) + _CTX_SLOT) != id(context):
        raise ChannelBindingUnavailable("unrecognised _ssl object layout (context slot)")
    pointer = _word_at(id(inner) + _SSL_SLOT)
    library = _libssl()
    if not pointer or library.get_ssl_ctx(pointer) != _word_at(id(context) + _SSL_CTX_SLOT):
        raise ChannelBindingUnavailable("unrecognised _ssl object layout (SSL pointer)")
    expected = ssl_object.get_channel_binding("tls-unique")
    for finished in (library.finished, library.peer_finished):
        buffer = ctypes.create_string_buffer(64)
        size = finished(pointer, buffer, len(buffer))
        if expected and buffer.raw[: min(size, len(buffer))] == expected:
            return pointer
    raise ChannelBindingUnavailable("unrecognised _ssl object layout (finished check)")


def tls_exporter(
    ssl_object: ssl.SSLObject | ssl.SSLSocket,
    label: bytes = TLS_EXPORTER_LABEL,
    length: int = TLS_EXPORTER_LENGTH,
) -> bytes:
    """RFC 8446 §7.5 ``TLS-Exporter(label, "", length)`` of a finished TLS 1.3 connection.

    The context is empty (not absent: TLS 1.3 makes no difference, RFC 8446 §7.5).
    Raises :class:`ChannelBindingUnavailable` when the value cannot be read safely.
    """
    if ssl_object.version() != "TLSv1.3":
        raise ChannelBindingUnavailable(
            f"tls-exporter needs a finished TLS 1.3 handshake, got {ssl_object.version()!r}"
        )
    pointer = _ssl_pointer(ssl_object)
    out = ctypes.create_string_buffer(length)
    ok = _libssl().export(pointer, out, length, label, len(label), b"", 0, 1)
    if ok != 1:
        raise ChannelBindingUnavailable("SSL_export_keying_material failed")
    return out.raw
