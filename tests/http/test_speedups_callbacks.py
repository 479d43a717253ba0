"""The C RequestCallbacks against the pure-Python one, event for event.

Both are driven by the real ``RequestParser.feed`` (a RequestParser whose callbacks and llhttp
parser are swapped for the ones under test, see :func:`make_parser`), so the cross-read head
accounting that feed does with ``in_head``, ``head_seen`` and ``began`` is exercised too. A run
is reduced to what a handler and the caller can see: every head (all RequestHead fields, with
their types), body chunk and end, the parser's state after each feed, and how it stopped
(ProtocolError's status, reason and detail, or another exception's type). Inputs are the raw
request corpus (whole, byte by byte and in seeded random splits, at two sets of limits),
generated pipelines with bodies around every limit, and handlers that raise.

The last section runs tests/http/test_request.py again with each class wired into RequestParser.
"""

from __future__ import annotations

import gc
import importlib.util
import itertools
import random
import sys
import tracemalloc
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httptools
import pytest

from fastproxy.config.schema import LimitsSettings
from fastproxy.http import _speedups
from fastproxy.http import request as http_request
from fastproxy.http.errors import ProtocolError
from fastproxy.http.head import FIELDS, RequestHead
from fastproxy.http.parser import RequestParser

CORPUS = Path(__file__).parent / "requests"
CORPUS_FILES = sorted(CORPUS.glob("*/*.http"))
LIMITS = LimitsSettings(max_url_bytes=1024, max_headers=20, max_header_bytes=4096, max_body_bytes=1000)
TIGHT = LimitsSettings(max_url_bytes=40, max_headers=4, max_header_bytes=160, max_body_bytes=16)
HEAD_FIELDS = (*FIELDS, "has_body")
CREDENTIAL = b"x-api-key"

Outcome = tuple[Any, ...]


def python_callbacks(handler: Any, limits: LimitsSettings) -> Any:
    return http_request.RequestCallbacks(
        handler,
        limits.max_url_bytes,
        limits.max_headers,
        limits.max_header_bytes,
        limits.max_body_bytes,
        CREDENTIAL,
    )


def c_callbacks(handler: Any, limits: LimitsSettings) -> Any:
    return _speedups.RequestCallbacks(
        handler,
        limits.max_url_bytes,
        limits.max_headers,
        limits.max_header_bytes,
        limits.max_body_bytes,
        RequestHead,
        ProtocolError,
        CREDENTIAL,
    )


KINDS: dict[str, Callable[[Any, LimitsSettings], Any]] = {"python": python_callbacks, "c": c_callbacks}


def make_parser(kind: str, handler: Any, limits: LimitsSettings) -> RequestParser:
    """A RequestParser whose callbacks are ``kind``'s, wired as RequestParser.__init__ wires them."""
    parser = RequestParser(handler, limits)
    callbacks = KINDS[kind](handler, limits)
    parser._callbacks = callbacks
    parser._parser = httptools.HttpRequestParser(callbacks)
    parser._feed = parser._parser.feed_data
    parser._start = callbacks.start
    parser._finish = callbacks.finish
    callbacks.parser = parser._parser
    return parser


def shape(value: Any) -> Any:
    """Types as well as values: 0 must not pass for False, nor a list of lists for one of tuples."""
    if isinstance(value, list | tuple):
        return type(value), [shape(item) for item in value]
    return type(value), value


class Events:
    """A RequestHandler that records everything it is given."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def on_request(self, head: RequestHead) -> None:
        self.events.append(("head", tuple(getattr(head, name) for name in HEAD_FIELDS)))

    def on_body(self, chunk: bytes) -> None:
        self.events.append(("body", chunk))

    def on_request_end(self) -> None:
        self.events.append(("end",))


def error_key(exc: BaseException) -> Outcome:
    if isinstance(exc, ProtocolError):
        return ("protocol", exc.status, exc.reason, exc.detail, str(exc), exc.args)
    if isinstance(exc, httptools.HttpParserCallbackError):
        cause = exc.__context__
        return ("callback", str(exc), type(cause), str(cause))
    return ("raised", type(exc), str(exc))


def state(parser: RequestParser) -> Outcome:
    callbacks = parser._callbacks
    return (parser.in_head, callbacks.in_head, callbacks.head_seen, callbacks.began, parser.upgraded)


def run(
    kind: str, pieces: list[bytes], limits: LimitsSettings, handler: Events | None = None
) -> tuple[list[Any], Outcome | None, list[Outcome]]:
    """Feed the pieces until the first error: (events, error, state after each feed)."""
    handler = handler if handler is not None else Events()
    parser = make_parser(kind, handler, limits)
    states = []
    error = None
    try:
        for piece in pieces:
            parser.feed(piece)
            states.append(state(parser))
    except Exception as exc:
        error = error_key(exc)
        states.append(state(parser))
    return handler.events, error, states


def check(pieces: list[bytes], limits: LimitsSettings) -> tuple[list[Any], Outcome | None, list[Outcome]]:
    expected = run("python", pieces, limits)
    got = run("c", pieces, limits)
    assert shape(got) == shape(expected)
    return got


def random_pieces(data: bytes, rng: random.Random) -> list[bytes]:
    if len(data) < 2:
        return [data]
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 40))))
    return [data[a:b] for a, b in itertools.pairwise([0, *cuts, len(data)])]


def splits(data: bytes, seed: str) -> Iterator[list[bytes]]:
    yield [data]
    yield [data[i : i + 1] for i in range(len(data))]
    rng = random.Random(seed)
    for _ in range(10):
        yield random_pieces(data, rng)


# -- the corpus ------------------------------------------------------------------------------------


@pytest.mark.parametrize("limits", [LIMITS, TIGHT], ids=["limits", "tight"])
@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_corpus_matches_python(path: Path, limits: LimitsSettings) -> None:
    data = path.read_bytes()
    for pieces in splits(data, f"callbacks:{path.stem}"):
        events, error, _ = check(pieces, limits)
        if limits is LIMITS:
            assert (error is None) == (path.parent.name == "valid"), error
            assert events or error is not None


def test_the_corpus_reaches_every_limit_and_every_kind_of_end() -> None:
    reasons = set()
    for path in CORPUS_FILES:
        for limits in (LIMITS, TIGHT):
            _, error, _ = run("c", [path.read_bytes()], limits)
            if error is not None:
                reasons.add(error[2] if error[0] == "protocol" else error[0])
    limits_reasons = {"url_too_long", "too_many_headers", "headers_too_large", "too_large"}
    assert limits_reasons | {"bad_request", "bad_host", "bad_framing"} <= reasons, reasons


# -- generated pipelines ---------------------------------------------------------------------------


def near(rng: random.Random, limit: int, small: list[int]) -> int:
    """Mostly one of the small values; otherwise the limit, one under or one over."""
    return rng.choice(small) if rng.random() < 0.75 else limit + rng.choice([-1, 0, 1])


def gen_request(rng: random.Random, limits: LimitsSettings) -> bytes:
    """One request whose URL, header count, header bytes and body sit around the limits."""
    url_len = near(rng, limits.max_url_bytes, [1, 10])
    url = b"/" + b"a" * max(0, url_len - 1)
    if rng.random() < 0.1:
        url = b"http://h.example" + url  # absolute form counts its authority too
    lines = [b"%s %s HTTP/1.%d" % (rng.choice([b"GET", b"POST", b"PUT"]), url, rng.choice([1, 1, 1, 0]))]
    headers = [(b"Host", b"h.example")]
    n = near(rng, limits.max_headers - 1, [0, 1, 2])
    headers += [(b"X-N%d" % i, b"v" * rng.randrange(0, 8)) for i in range(max(0, n))]
    if rng.random() < 0.15:
        # Pad the last header to put the header bytes at, just under or just over the limit.
        used = sum(len(name) + len(value) + 4 for name, value in headers)
        pad = limits.max_header_bytes - used - len(b"X-Pad") - 4 + rng.choice([-1, 0, 0, 1])
        if pad >= 0:
            headers.append((b"X-Pad", b"p" * pad))
    if rng.random() < 0.1:
        headers.append((b"Connection", rng.choice([b"close", b"keep-alive", b"X-N0"])))
    body = b""
    framing = rng.choice(["none", "length", "chunked"])
    size = near(rng, limits.max_body_bytes, [0, 1, 5])
    if framing == "length":
        headers.append((b"Content-Length", b"%d" % size))
        body = b"b" * size
    elif framing == "chunked":
        headers.append((b"Transfer-Encoding", b"chunked"))
        left = size
        while left > 0:
            chunk = min(left, rng.randint(1, max(1, size // 2)))
            body += b"%x\r\n%s\r\n" % (chunk, b"c" * chunk)
            left -= chunk
        body += b"0\r\n\r\n"
    rng.shuffle(headers)
    lines += [name + b": " + value for name, value in headers]
    return b"".join(line + b"\r\n" for line in lines) + b"\r\n" + body


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("limits", [LIMITS, TIGHT], ids=["limits", "tight"])
def test_generated_pipelines_match_python(seed: int, limits: LimitsSettings) -> None:
    rng = random.Random(seed)
    outcomes: dict[Any, int] = {}
    for _ in range(60):
        data = b"".join(gen_request(rng, limits) for _ in range(rng.randint(1, 4)))
        pieces = [data] if rng.random() < 0.3 else random_pieces(data, rng)
        events, error, _ = check(pieces, limits)
        key = "ok" if error is None else error[2]
        outcomes[key] = outcomes.get(key, 0) + 1
        assert any(event[0] == "head" for event in events) or error is not None
    assert outcomes.get("ok", 0) >= 5, outcomes
    assert len(outcomes) >= 3, outcomes


def head(target: bytes, *headers: tuple[bytes, bytes]) -> bytes:
    lines = [b"GET " + target + b" HTTP/1.1", *(name + b": " + value for name, value in headers)]
    return b"".join(line + b"\r\n" for line in lines) + b"\r\n"


HOST = (b"Host", b"h")


def one_chunk(body: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)


def edge_cases(limits: LimitsSettings) -> Iterator[tuple[str, bytes, str | None]]:
    """(name, request, the ProtocolError reason expected or None) at and just over each limit."""
    at = limits.max_url_bytes
    yield "url-at", head(b"/" + b"u" * (at - 1), HOST), None
    yield "url-over", head(b"/" + b"u" * at, HOST), "url_too_long"
    extra = [(b"X-%d" % i, b"v") for i in range(limits.max_headers - 1)]
    yield "headers-at", head(b"/", HOST, *extra), None
    yield "headers-over", head(b"/", HOST, *extra, (b"X-Last", b"v")), "too_many_headers"
    pad = limits.max_header_bytes - (len(b"Host") + len(b"h") + 4) - (len(b"X-Pad") + 4)
    yield "bytes-at", head(b"/", HOST, (b"X-Pad", b"p" * pad)), None
    yield "bytes-over", head(b"/", HOST, (b"X-Pad", b"p" * (pad + 1))), "headers_too_large"
    body = b"b" * limits.max_body_bytes
    length = (b"Content-Length", b"%d" % len(body))
    yield "length-at", head(b"/", HOST, length) + body, None
    yield "length-over", head(b"/", HOST, (b"Content-Length", b"%d" % (len(body) + 1))), "too_large"
    chunked = (b"Transfer-Encoding", b"chunked")
    yield "chunked-at", head(b"/", HOST, chunked) + one_chunk(body), None
    yield "chunked-over", head(b"/", HOST, chunked) + one_chunk(body + b"b"), "too_large"


@pytest.mark.parametrize("limits", [LIMITS, TIGHT], ids=["limits", "tight"])
def test_limit_edges(limits: LimitsSettings) -> None:
    for name, data, reason in edge_cases(limits):
        for pieces in splits(data, f"edge:{name}"):
            events, error, _ = check([*pieces, head(b"/next", HOST)], limits)
            if reason is None:
                assert error is None, (name, error)
                assert [event[0] for event in events].count("head") == 2, name
            else:
                assert error is not None and error[2] == reason, (name, error)


# -- handlers that raise ---------------------------------------------------------------------------


class Boom(Exception):
    pass


class Raising(Events):
    def __init__(self, where: str) -> None:
        super().__init__()
        self.where = where
        self.raised: list[Boom] = []

    def _maybe_raise(self, where: str) -> None:
        if where == self.where:
            self.raised.append(Boom(where))
            raise self.raised[-1]

    def on_request(self, head: RequestHead) -> None:
        super().on_request(head)
        self._maybe_raise("on_request")

    def on_body(self, chunk: bytes) -> None:
        super().on_body(chunk)
        self._maybe_raise("on_body")

    def on_request_end(self) -> None:
        super().on_request_end()
        self._maybe_raise("on_request_end")


@pytest.mark.parametrize("where", ["on_request", "on_body", "on_request_end"])
def test_handler_exceptions_propagate_unchanged(where: str) -> None:
    data = head(b"/", HOST, (b"Content-Length", b"3")) + b"abc"
    outcomes = []
    for kind in KINDS:
        handler = Raising(where)
        parser = make_parser(kind, handler, LIMITS)
        with pytest.raises(httptools.HttpParserCallbackError) as info:
            parser.feed(data)
        assert len(handler.raised) == 1
        assert info.value.__context__ is handler.raised[0]
        outcomes.append((handler.events, state(parser)))
    assert shape(outcomes[0]) == shape(outcomes[1])


def test_a_handler_missing_a_method_raises_attribute_error_in_both() -> None:
    class NoBody:
        def on_request(self, head: RequestHead) -> None:
            pass

    data = head(b"/", HOST, (b"Content-Length", b"3")) + b"abc"
    keys = []
    for kind in KINDS:
        with pytest.raises(httptools.HttpParserCallbackError) as info:
            make_parser(kind, NoBody(), LIMITS).feed(data)
        assert isinstance(info.value.__context__, AttributeError)
        keys.append(type(info.value.__context__))
    assert keys[0] == keys[1]


def test_protocol_errors_are_the_given_class_with_python_arguments() -> None:
    for data in (head(b"/" + b"u" * 2000, HOST), head(b"/a/../b", HOST)):
        errors = []
        for kind in KINDS:
            with pytest.raises(ProtocolError) as info:
                make_parser(kind, Events(), LIMITS).feed(data)
            assert type(info.value) is ProtocolError
            errors.append((*info.value.args, info.value.status, info.value.reason, info.value.detail))
        assert errors[0] == errors[1]


def test_error_class_is_called_with_status_reason_detail() -> None:
    class Refused(Exception):
        pass

    callbacks = _speedups.RequestCallbacks(Events(), 3, 1, 100, 5, RequestHead, Refused, None)
    callbacks.on_message_begin()
    with pytest.raises(Refused) as info:
        callbacks.on_url(b"/abcd")
    assert info.value.args == (414, "url_too_long", "request target over max_url_bytes")


# -- the callbacks called directly -----------------------------------------------------------------


class FakeParser:
    """What on_headers_complete asks of the httptools parser, with a record of the calls."""

    def __init__(self, method: Any = b"GET", version: Any = "1.1", keep_alive: Any = True) -> None:
        self.calls: list[str] = []
        self.answers = {"get_method": method, "get_http_version": version, "should_keep_alive": keep_alive}

    def _answer(self, name: str) -> Any:
        self.calls.append(name)
        answer = self.answers[name]
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def get_method(self) -> Any:
        return self._answer("get_method")

    def get_http_version(self) -> Any:
        return self._answer("get_http_version")

    def should_keep_alive(self) -> Any:
        return self._answer("should_keep_alive")


def direct(kind: str, steps: list[tuple[str, tuple[Any, ...]]], parser: Any, limits: LimitsSettings) -> Any:
    handler = Events()
    callbacks = KINDS[kind](handler, limits)
    callbacks.parser = parser
    for method, args in steps:
        try:
            getattr(callbacks, method)(*args)
        except Exception as exc:
            return handler.events, error_key(exc), parser.calls if isinstance(parser, FakeParser) else None
    return handler.events, None, parser.calls if isinstance(parser, FakeParser) else None


BEGIN = ("on_message_begin", ())
COMPLETE = ("on_headers_complete", ())


@pytest.mark.parametrize(
    ("steps", "parser"),
    [
        ([BEGIN, ("on_url", (b"/x",)), ("on_header", (b"Host", b"h")), COMPLETE], FakeParser()),
        ([BEGIN, ("on_url", (b"/x",)), COMPLETE], FakeParser(b"GET", "1.0", False)),
        ([BEGIN, ("on_url", (b"/x",)), COMPLETE], FakeParser(b"G\xc9T")),  # not ASCII
        ([BEGIN, ("on_url", (b"/x",)), COMPLETE], FakeParser(bytearray(b"GET"), "1.0")),  # .decode()
        ([BEGIN, ("on_url", (b"/x",)), COMPLETE], FakeParser(b"GET", b"1.1")),  # version not str
        ([BEGIN, ("on_url", (b"/x",)), COMPLETE], FakeParser(b"GET", "1.0", 1)),  # keep_alive not bool
        ([BEGIN, ("on_url", (b"/x",)), COMPLETE], FakeParser(Boom("m"))),
        ([BEGIN, ("on_url", (b"/x",)), COMPLETE], FakeParser(b"GET", Boom("v"))),
        ([BEGIN, ("on_url", (b"/x",)), COMPLETE], FakeParser(b"GET", "1.0", Boom("k"))),
        ([BEGIN, ("on_url", (b"/x",)), COMPLETE], FakeParser(b"GET", "2.0")),  # scan refuses
        ([BEGIN, ("on_url", (b"/x",)), COMPLETE], None),  # assert parser is not None
        (
            [BEGIN, ("on_url", (b"",)), ("on_url", (b"/a",)), ("on_url", (b"b",)), COMPLETE],
            FakeParser(b"GET", "1.0"),
        ),
        ([BEGIN, ("on_body", (b"12345",)), ("on_body", (b"",)), ("on_message_complete", ())], None),
        ([BEGIN, ("on_body", (b"x" * 1000,)), ("on_body", (b"y",))], None),
        ([("on_url", (b"/a",)), BEGIN, ("on_url", (b"/b",)), COMPLETE], FakeParser(b"GET", "1.0")),
    ],
)
def test_direct_calls_match_python(steps: list[tuple[str, tuple[Any, ...]]], parser: Any) -> None:
    results = []
    for kind in KINDS:
        fresh = None if parser is None else FakeParser(*parser.answers.values())
        results.append(direct(kind, steps, fresh, LIMITS))
    assert shape(results[0]) == shape(results[1])


def test_on_headers_complete_without_a_parser_attribute() -> None:
    for kind in KINDS:
        callbacks = KINDS[kind](Events(), LIMITS)
        del callbacks.parser
        with pytest.raises(AttributeError):
            callbacks.parser  # noqa: B018
        callbacks.on_message_begin()
        with pytest.raises(AttributeError):
            callbacks.on_headers_complete()
        assert callbacks.in_head is False


def test_limits_outside_a_ssize_t_and_negative_limits_compare_like_python_ints() -> None:
    steps = [BEGIN, ("on_url", (b"/x",)), ("on_header", (b"Host", b"h")), ("on_body", (b"b",))]
    for limit in (2**64, 2**200, 0, -1, -(2**70), True, False):
        results = []
        for make in (http_request.RequestCallbacks, _speedups.RequestCallbacks):
            extra = (None,) if make is http_request.RequestCallbacks else (RequestHead, ProtocolError, None)
            for position in range(4):
                limits = [10**6] * 4
                limits[position] = limit
                handler = Events()
                callbacks = make(handler, *limits, *extra)
                error = None
                for method, args in steps:
                    try:
                        getattr(callbacks, method)(*args)
                    except ProtocolError as exc:
                        error = exc.reason
                        break
                results.append((position, error, handler.events))
        assert results[:4] == results[4:], limit


# -- attributes and construction -------------------------------------------------------------------


def test_attributes_round_trip() -> None:
    callbacks = c_callbacks(Events(), LIMITS)
    assert callbacks.in_head is False
    assert callbacks.began is False
    assert callbacks.head_seen == 0
    assert callbacks.parser is None
    callbacks.in_head = True
    callbacks.began = True
    callbacks.head_seen = 12345
    parser = httptools.HttpRequestParser(callbacks)
    callbacks.parser = parser
    assert callbacks.in_head is True
    assert callbacks.began is True
    assert callbacks.head_seen == 12345
    assert type(callbacks.head_seen) is int
    assert callbacks.parser is parser
    callbacks.head_seen += 7  # as start does for a head still open
    assert callbacks.head_seen == 12352
    callbacks.in_head = False
    assert callbacks.in_head is False
    callbacks.on_message_begin()
    assert (callbacks.in_head, callbacks.began, callbacks.head_seen) == (True, True, 0)
    callbacks.parser = None
    assert callbacks.parser is None


@pytest.mark.parametrize("kind", KINDS)
def test_start_and_finish_keep_the_accounting_of_an_open_head(kind: str) -> None:
    callbacks = KINDS[kind](Events(), LIMITS)
    callbacks.start(b"abc")  # no head open: nothing counted, the chunk kept
    assert (callbacks.head_seen, callbacks.began, callbacks.chunk) == (0, False, b"abc")
    assert callbacks.finish(b"abc") == -1 and callbacks.chunk is None
    callbacks.in_head = True
    callbacks.head_seen = 10
    callbacks.start(b"12345")  # a head open since an earlier read: the read counts in full
    assert callbacks.head_seen == 15
    assert callbacks.finish(b"12345") == 15
    callbacks.start(b"x\r\n\r\nGET / HTTP/1.1\r\n")
    callbacks.on_message_begin()  # a head began in this read: only what follows the blank line
    assert callbacks.finish(b"x\r\n\r\nGET / HTTP/1.1\r\n") == 16
    callbacks.start(b"GET / HT")
    callbacks.on_message_begin()  # no blank line in the read: all of it
    assert callbacks.finish(b"GET / HT") == 8
    assert callbacks.chunk is None


def test_start_and_finish_take_bytes() -> None:
    callbacks = c_callbacks(Events(), LIMITS)
    with pytest.raises(TypeError):
        callbacks.start("GET")  # type: ignore[arg-type]
    callbacks.start(b"GET")
    callbacks.on_message_begin()
    with pytest.raises(TypeError):
        callbacks.finish(bytearray(b"GET"))  # type: ignore[arg-type]


def test_attribute_errors() -> None:
    callbacks = c_callbacks(Events(), LIMITS)
    with pytest.raises(TypeError):
        callbacks.in_head = 1  # only bools: RequestParser sets nothing else
    with pytest.raises(TypeError):
        callbacks.began = None
    with pytest.raises(TypeError):
        callbacks.head_seen = "1"
    with pytest.raises(AttributeError):
        del callbacks.in_head
    with pytest.raises(AttributeError):
        callbacks.something_else = 1
    with pytest.raises(AttributeError):
        callbacks._url  # noqa: B018
    with pytest.raises(TypeError):
        type("Sub", (_speedups.RequestCallbacks,), {})


GOOD = (Events(), 1, 1, 1, 1, RequestHead, ProtocolError, None)


@pytest.mark.parametrize(
    ("index", "value"),
    [
        (1, "1"),
        (1, None),
        (2, 1.0),
        (3, b"1"),
        (4, None),
        (5, None),
        (5, 1),
        (6, None),
        (6, ProtocolError(400, "x")),
        (6, int),
    ],
)
def test_constructor_rejects_wrong_types(index: int, value: object) -> None:
    args = list(GOOD)
    args[index] = value
    with pytest.raises(TypeError):
        _speedups.RequestCallbacks(*args)


def test_constructor_arguments_are_positional_and_counted() -> None:
    with pytest.raises(TypeError):
        _speedups.RequestCallbacks(*GOOD[:7])
    with pytest.raises(TypeError):
        _speedups.RequestCallbacks(*GOOD, None)
    with pytest.raises(TypeError):
        _speedups.RequestCallbacks(*GOOD[:7], credential_header=None)
    callbacks = _speedups.RequestCallbacks(*GOOD)
    for method, args in [("on_url", ()), ("on_header", (b"a",)), ("on_body", (b"a", b"b"))]:
        with pytest.raises(TypeError):
            getattr(callbacks, method)(*args)
    for method, args in [("on_url", ("/",)), ("on_header", (b"a", "b")), ("on_body", (bytearray(b"a"),))]:
        with pytest.raises(TypeError):
            getattr(callbacks, method)(*args)
    with pytest.raises(TypeError):
        callbacks.on_message_begin(None)


def test_bytes_subclasses_are_taken_as_bytes() -> None:
    class B(bytes):
        pass

    steps = [BEGIN, ("on_url", (B(b"/x"),)), ("on_header", (B(b"Host"), B(b"h"))), COMPLETE]
    results = [direct(kind, steps, FakeParser(), LIMITS) for kind in KINDS]
    assert shape(results[0]) == shape(results[1])


# -- garbage collection and memory -----------------------------------------------------------------


class Owner(Events):
    """A handler that owns its parser, as a connection does: callbacks -> handler -> callbacks."""

    parser: RequestParser | None = None


def instances() -> int:
    return sum(type(o) is _speedups.RequestCallbacks for o in gc.get_objects())


def test_a_cycle_through_the_handler_and_parser_is_collected() -> None:
    gc.collect()
    before = instances()
    handler = Owner()
    handler.parser = make_parser("c", handler, LIMITS)
    handler.parser.feed(head(b"/", HOST) + b"GET / HTTP/1.1\r\nHo")  # a head left open
    callbacks = handler.parser._callbacks
    assert gc.is_tracked(callbacks)
    referents = gc.get_referents(callbacks)
    assert handler in referents
    assert callbacks.parser in referents
    assert instances() == before + 2  # and the one RequestParser built, unreferenced now
    alive = weakref.ref(handler)
    del handler, callbacks, referents
    gc.collect()
    assert alive() is None
    assert instances() == before


def test_no_memory_is_leaked_on_any_path() -> None:
    requests = [
        head(b"/p?q", HOST, (b"Content-Length", b"3")) + b"abc",
        head(b"/c", HOST, (b"Transfer-Encoding", b"chunked")) + b"2\r\nab\r\n0\r\n\r\n",
        head(b"/" + b"u" * 2000, HOST),  # 414
        head(b"/", HOST, *((b"X-%d" % i, b"v") for i in range(30))),  # 431
        head(b"/", HOST, (b"X-Pad", b"p" * 5000)),  # 431 bytes
        head(b"/", HOST, (b"Content-Length", b"5000")),  # 413 declared
        head(b"/", HOST, (b"Transfer-Encoding", b"chunked")) + b"5000\r\n" + b"x" * 2000,  # 413 chunked
        head(b"/a/../b", HOST),  # scan refuses
        b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",  # llhttp
    ]

    def once() -> None:
        for data in requests:
            for where in ("on_request", "none"):
                handler = Raising(where)
                parser = make_parser("c", handler, LIMITS)
                try:
                    parser.feed(data)
                    parser.feed(data)
                except (ProtocolError, httptools.HttpParserCallbackError):
                    pass

    once()
    tracemalloc.start()
    try:
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(200):
            once()
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 50_000, grown  # one leaked object per request would be well over 200 kB


# -- tests/http/test_request.py with each class wired in ------------------------------------------


def c_factory(
    handler: Any,
    max_url: int,
    max_headers: int,
    max_header_bytes: int,
    max_body: int,
    credential_header: bytes | None = None,
) -> Any:
    """request.RequestCallbacks' signature, building the C class."""
    return _speedups.RequestCallbacks(
        handler,
        max_url,
        max_headers,
        max_header_bytes,
        max_body,
        RequestHead,
        ProtocolError,
        credential_header,
    )


@pytest.fixture(params=["python", "c"])
def wired(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """RequestParser builds the ``request.param`` callbacks for the length of the test."""
    # RequestParser prefers the module's C class when it has one; take it out of the way and
    # put the class under test in RequestCallbacks' place.
    monkeypatch.setattr(http_request, "_CRequestCallbacks", None, raising=False)
    if request.param == "c":
        monkeypatch.setattr(http_request, "RequestCallbacks", c_factory)
    built = RequestParser(Events(), LIMITS)._callbacks
    expected = _speedups.RequestCallbacks if request.param == "c" else http_request.RequestCallbacks
    assert type(built) is expected
    return str(request.param)


def _request_suite() -> dict[str, Any]:
    path = Path(__file__).with_name("test_request.py")
    spec = importlib.util.spec_from_file_location("_request_suite_for_callbacks", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return {name: staticmethod(test) for name, test in vars(module).items() if name.startswith("test_")}


TestRequestSuiteWithEachCallbacks = pytest.mark.usefixtures("wired")(
    type("TestRequestSuiteWithEachCallbacks", (), _request_suite())
)


def test_the_request_suite_is_rerun() -> None:
    assert len([name for name in vars(TestRequestSuiteWithEachCallbacks) if name.startswith("test_")]) >= 30


# -- the version, read from the request line -------------------------------------------------------


class CountingParser:
    """The httptools parser on_headers_complete asks, counting get_http_version calls."""

    def __init__(self, parser: httptools.HttpRequestParser) -> None:
        self.parser = parser
        self.version_calls = 0

    def get_method(self) -> bytes:
        return self.parser.get_method()

    def get_http_version(self) -> str:
        self.version_calls += 1
        return self.parser.get_http_version()

    def should_keep_alive(self) -> bool:
        return self.parser.should_keep_alive()


def counted(pieces: list[bytes]) -> tuple[list[str], int]:
    """(each head's version, get_http_version calls) through the C callbacks."""
    handler = Events()
    parser = make_parser("c", handler, LIMITS)
    counting = CountingParser(parser._parser)
    parser._callbacks.parser = counting
    for piece in pieces:
        parser.feed(piece)
    versions = [event[1][HEAD_FIELDS.index("version")] for event in handler.events if event[0] == "head"]
    return versions, counting.version_calls


@pytest.mark.parametrize("version", [b"1.0", b"1.1"])
def test_a_request_line_that_starts_the_chunk_gives_its_version(version: bytes) -> None:
    request = b"GET /a?b=%20 HTTP/" + version + b"\r\nHost: h\r\n\r\n"
    assert counted([request]) == ([version.decode()], 0)
    check([request], LIMITS)


@pytest.mark.parametrize(
    "pieces",
    [
        # pipelined: only the first head began the chunk; the second asks llhttp
        [b"GET / HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.0\r\nHost: h\r\n\r\n"],
        # the line split across reads, at each byte
        *(
            [b"GET /x HTTP/1.0\r\nHost: h\r\n\r\n"[:i], b"GET /x HTTP/1.0\r\nHost: h\r\n\r\n"[i:]]
            for i in range(1, 30)
        ),
        # a blank line before the request line
        [b"\r\nGET / HTTP/1.0\r\nHost: h\r\n\r\n"],
        # a head that began in an earlier read
        [b"GET / HTTP/1.0\r\nHost: h\r\n", b"X: 1\r\n\r\n"],
    ],
)
def test_a_request_line_elsewhere_asks_llhttp_and_gets_the_same(pieces: list[bytes]) -> None:
    events, _, _ = check(pieces, LIMITS)
    versions, calls = counted(pieces)
    assert versions == [event[1][HEAD_FIELDS.index("version")] for event in events if event[0] == "head"]
    whole = b"".join(pieces)
    if whole.startswith(b"GET / HTTP/1.1\r\nHost: h\r\n\r\nGET"):
        assert versions == ["1.1", "1.0"] and calls == 1


def test_the_chunk_is_dropped_after_each_feed() -> None:
    parser = make_parser("c", Events(), LIMITS)
    parser.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert parser._callbacks.chunk is None
    callbacks = c_callbacks(Events(), LIMITS)
    callbacks.chunk = b"x"
    assert callbacks.chunk == b"x"
    with pytest.raises(AttributeError):
        del callbacks.chunk


def test_handler_methods_are_bound_once_or_called_by_name() -> None:
    # The C callbacks bind the handler's methods when they are made; a handler that lacks one
    # then is called by name, as the Python callbacks always do.
    class Late:
        pass

    handler: Any = Late()
    callbacks = c_callbacks(handler, LIMITS)
    seen: list[object] = []
    handler.on_request = lambda head: seen.append(head.method)
    handler.on_body = lambda body: seen.append(body)
    handler.on_request_end = lambda: seen.append("end")
    parser = httptools.HttpRequestParser(callbacks)
    callbacks.parser = parser
    parser.feed_data(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi")
    assert seen == ["POST", b"hi", "end"]

    bound = Events()
    callbacks = c_callbacks(bound, LIMITS)
    # Bound when the callbacks were made: replacing the method afterwards changes nothing.
    bound.on_request_end = lambda: seen.append("replaced")  # type: ignore[method-assign]
    parser = httptools.HttpRequestParser(callbacks)
    callbacks.parser = parser
    parser.feed_data(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert [event[0] for event in bound.events] == ["head", "end"]
    assert "replaced" not in seen
