"""RequestParser: client bytes through llhttp into a RequestHandler (see fastproxy.http.request).

A module of its own so that it can be compiled (setup.py): ``feed`` runs for every read of every
client connection. The callbacks it drives, their Python reference and RequestHead stay in
:mod:`fastproxy.http.request`, interpreted, beside the C twins they are checked against.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httptools

from fastproxy.http.errors import ProtocolError
from fastproxy.http.request import RequestHandler, make_callbacks

if TYPE_CHECKING:
    from fastproxy.config.schema import LimitsSettings

__all__ = ["RequestParser"]


class RequestParser:
    """Feeds raw client bytes to llhttp and a :class:`RequestHandler`; see the module doc."""

    __slots__ = ("_callbacks", "_feed", "_finish", "_head_limit", "_parser", "_start", "upgraded")

    def __init__(
        self, handler: RequestHandler, limits: LimitsSettings, credential_header: bytes | None = None
    ) -> None:
        self._head_limit = limits.max_header_bytes + limits.max_url_bytes
        self._callbacks = make_callbacks(handler, limits, credential_header)
        self._parser = httptools.HttpRequestParser(self._callbacks)
        self._callbacks.parser = self._parser
        # Bound once: a method call on an object that is not compiled looks the name up on its
        # type every time.
        self._feed = self._parser.feed_data
        self._start = self._callbacks.start  # the accounting around each feed
        self._finish = self._callbacks.finish
        # A request with Upgrade (or CONNECT) ends llhttp's HTTP parsing of the connection: the
        # request itself is complete and proxied as plain HTTP, then the connection is closed.
        self.upgraded = False

    @property
    def in_head(self) -> bool:
        """True while a request has begun and its head is not complete (the header timeout)."""
        return self._callbacks.in_head

    def feed(self, data: bytes) -> None:
        """Parse ``data``; raises ProtocolError for input the connection must be closed over."""
        self._start(data)
        try:
            self._feed(data)
        except httptools.HttpParserUpgrade:
            self.upgraded = True
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, ProtocolError):
                raise cause from None
            raise
        except httptools.HttpParserError as exc:
            raise ProtocolError(400, "bad_request", str(exc)) from None
        finally:
            seen = self._finish(data)  # the bytes of a head still open, -1 when none is
        if seen > self._head_limit:
            raise ProtocolError(431, "headers_too_large", "request head over max_header_bytes")
