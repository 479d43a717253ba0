"""TLS on the client listeners: one server context per worker, made from the configured PEM files.

TLS 1.2 is the minimum; the ssl module's defaults choose the ciphers (OpenSSL's secure set, with
forward secrecy), ALPN offers only http/1.1 (no h2: fastproxy speaks HTTP/1.1). The files are read
when a configuration is loaded — so ``fastproxy check`` and a reload refuse a bad certificate
before any worker starts — and again by each worker, so a HUP picks up a renewed certificate.
"""

from __future__ import annotations

import ssl

__all__ = ["server_context"]


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A server context for ``cert_file`` (the chain, leaf first) and ``key_file``.

    Raises ValueError naming the problem (unreadable file, not PEM, key not matching).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.set_alpn_protocols(["http/1.1"])
    for path in (cert_file, key_file):
        # OpenSSL reports a missing file as a PEM error; name the file instead.
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    try:
        context.load_cert_chain(cert_file, key_file)
    except ssl.SSLError as exc:  # before OSError, which it subclasses
        raise ValueError(f"unusable certificate or key ({exc.reason or exc})") from None
    except OSError as exc:
        raise ValueError(f"cannot read the certificate or key: {exc.strerror}") from None
    return context
