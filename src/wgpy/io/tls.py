"""TLS for the stream transports (docs/transports.md): the client and server contexts (TLS 1.3 only, the standard
library's ssl module), the certificate pin, and a connection's failure in words.

Failures are remembered per endpoint in words (StreamEndpoint.last_error, shown by `wgpy show` through the UAPI
key wgpy_last_error) and logged with the same words: the socket errors a user meets most by a short name, the
rest by the C library's text; TLS failures start with "TLS: ".
"""

from __future__ import annotations

import errno
import hashlib
import os
import ssl

__all__ = ["client_context", "server_context", "fingerprint", "PIN_MISMATCH", "os_reason", "reason", "tls_reason"]

PIN_MISMATCH = "TLS: certificate does not match the pinned fingerprint"

_ERRNO_WORDS = {
    errno.ECONNREFUSED: "connection refused", errno.ECONNRESET: "connection reset", errno.EPIPE: "connection reset",
    errno.ECONNABORTED: "connection aborted", errno.ETIMEDOUT: "connection timed out",
    errno.EHOSTUNREACH: "host unreachable", errno.ENETUNREACH: "network unreachable",
}


def client_context(ca_file: str | None, pin: bytes | None) -> ssl.SSLContext:
    """TLS 1.3 client context: verify against `ca_file` (or the system's CAs), or, with a pin, accept exactly
    the certificate with that SHA-256 fingerprint (checked after the handshake). Raises OSError/ssl.SSLError."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    if pin is not None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    else:
        ctx.load_default_certs()
    return ctx


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


def fingerprint(sock: ssl.SSLSocket) -> bytes:
    """The SHA-256 fingerprint of the certificate the other side presented (compared with a TLSPin)."""
    return hashlib.sha256(sock.getpeercert(binary_form=True) or b"").digest()


def os_reason(code: int | None, e: BaseException | None = None) -> str:
    """A socket error (errno `code`, or the exception `e`) in words: 'connection refused'."""
    words = _ERRNO_WORDS.get(code or 0)
    if words is None:
        words = os.strerror(code) if code else (getattr(e, "strerror", None) or str(e))
        words = words[:1].lower() + words[1:]
    return words


def reason(e: BaseException) -> str:
    """A connection's exception in words: 'TLS: ...' for TLS errors, else the socket error ('connection reset')."""
    if isinstance(e, ssl.SSLCertVerificationError):
        return f"TLS: certificate verify failed: {e.verify_message}"
    if isinstance(e, ssl.SSLEOFError):
        return "TLS: closed by the other side"
    if isinstance(e, ssl.SSLError):
        return f"TLS: {e.reason.lower().replace('_', ' ') if e.reason else e}"
    if isinstance(e, OSError):
        return os_reason(e.errno, e)
    return str(e)


def tls_reason(e: BaseException) -> str:
    """An exception during a TLS handshake in words, always starting with 'TLS: '."""
    words = reason(e)
    return words if words.startswith("TLS") else f"TLS: {words}"
