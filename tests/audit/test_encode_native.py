"""The C request record against the msgspec reference, byte for byte.

``_encode.request_record(now, boot, worker, seq, ...)`` must return exactly what
``RecordEncoder.request_reference(now, seq, ...)`` returns, or None for a record it leaves to the
reference; and ``RecordEncoder.request`` must return (or raise) what the reference does in both
cases. Records come from fixed lists of the values where an encoder could go wrong (escapes, UTF-8,
number formats, clock readings at boundaries, the size bound) and from a seeded generator.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator

import pytest
from audit_support import T0, Clock

from fastproxy.audit import record
from fastproxy.audit.record import RECORD_MAX, VERSION, RecordEncoder

_encode = pytest.importorskip("fastproxy.audit._encode", reason="the C extension is optional")

pytestmark = pytest.mark.timeout(60)

BOOT = "b00700000000beef"

# RecordEncoder.request's parameters after seq, in order.
ORDER = (
    "request_id", "client_ip", "method", "path", "route", "principal", "auth", "decision", "reason",
    "mode", "would_deny", "status", "upstream", "latency_ms", "bytes_in", "bytes_out", "masked",
    "mask_skipped",
)  # fmt: skip
TEXT = ("client_ip", "method", "path", "route", "principal", "auth", "decision", "reason", "mode", "upstream")
OPTIONAL = ("route", "principal", "auth", "upstream", "would_deny", "mask_skipped")
INTS = ("status", "bytes_in", "bytes_out", "masked")

BASE: dict[str, object] = {
    "request_id": "0123456789abcdef0123456789abcdef",
    "client_ip": "127.0.0.1",
    "method": "GET",
    "path": "/api/things/1",
    "route": "api",
    "principal": "bench-user",
    "auth": "jwt:bench",
    "decision": "allow",
    "reason": "ok",
    "mode": "enforce",
    "would_deny": None,
    "status": 200,
    "upstream": "bench",
    "latency_ms": 0.512,
    "bytes_in": 0,
    "bytes_out": 612,
    "masked": 0,
    "mask_skipped": None,
}

CONTROL = [chr(c) for c in [*range(0x20), 0x7F]]
SPECIAL = ['"', "\\", "/", "'", "<", "&", "\x80", "\xa0", "é", "ÿ", "\u0100", "\u07ff", "\u0800", "☃",
           "\u2028", "\u2029", "\ufeff", "\uffff", "😀", "\U00010000", "\U0010ffff"]  # fmt: skip
SURROGATES = ["\ud800", "\udbff", "\udc00", "\udcff", "\udfff"]
LATENCIES = [0.0, -0.0, 0.001, 0.0005, 0.0004999, 0.5004, 0.512, 1.92, 1.23456789, 12345.6789, 1e-7, 0.1,
             100.0, 1e3, 1e6, 1e9, 999999999999.999, 999999999999.9994, 1e12, 1e15, 1e16, 1e300, 5e-324,
             -0.0001, -0.0005, -0.0006, -0.5004, -1.5, -12345.6789, -999999999999.999, -1e12, -1e16,
             2.0**52, 2.0**53 + 2]  # fmt: skip
BIG_INTS = [0, 1, -1, 9, 10, 99, 100, 2**31, 2**32, 2**53, 2**63 - 1, -(2**63), 10**18, -(10**18)]
HUGE_INTS = [2**63, 2**64 - 1, 2**64, -(2**63) - 1, 10**30, -(10**30)]


def outcome(call: Callable[..., bytes], *args: object) -> bytes | type[BaseException]:
    try:
        return call(*args)
    except Exception as exc:
        return type(exc)


def check(
    now: int = T0, boot: object = BOOT, worker: object = 3, seq: object = 1841, **fields: object
) -> bool:
    """The C record (when it takes it) and RecordEncoder.request are the reference's; True if C took it."""
    values = {**BASE, **fields}
    args = [values[name] for name in ORDER]
    encoder = RecordEncoder(boot, worker, Clock(now))  # type: ignore[arg-type]
    expected = outcome(encoder.request_reference, now, seq, *args)
    native = _encode.request_record(now, boot, worker, seq, *args)
    assert native is None or native == expected, (native, expected)
    assert outcome(encoder.request, seq, *args) == expected
    return native is not None


def test_constants_agree_with_the_reference() -> None:
    assert _encode.VERSION == VERSION
    assert _encode.RECORD_MAX == RECORD_MAX


def test_a_realistic_record_is_taken_by_c() -> None:
    assert check()
    assert check(request_id=b"0123456789abcdef0123456789abcdef", would_deny="forbidden:role")
    assert check(mask_skipped="too_large", masked=2, route=None, principal=None, auth=None, upstream=None)


def test_request_reads_the_clock_once_on_either_path() -> None:
    # The reference path is given the reading C was given: a second reading could be another second.
    for path in ("/api/things/1", "/x\udcff"):
        args = [{**BASE, "path": path}[name] for name in ORDER]
        readings = iter([T0 + 999_999_999])
        encoder = RecordEncoder(BOOT, 3, lambda: next(readings))  # noqa: B023 - used at once
        expected = RecordEncoder(BOOT, 3).request_reference(T0 + 999_999_999, 7, *args)  # type: ignore[arg-type]
        assert encoder.request(7, *args) == expected  # type: ignore[arg-type]


def test_without_the_extension_request_is_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(record, "_request_record", None)
    args = [BASE[name] for name in ORDER]
    encoder = RecordEncoder(BOOT, 3, Clock())
    assert encoder.request(7, *args) == RecordEncoder(BOOT, 3).request_reference(T0, 7, *args)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", [*TEXT, "request_id", "would_deny", "mask_skipped"])
def test_every_character_class_in_every_text_field(name: str) -> None:
    for char in [*CONTROL, *SPECIAL, *map(chr, range(0x20, 0x7F))]:
        assert check(**{name: char}), repr(char)
        assert check(**{name: f"a{char}b{char}{char}"}), repr(char)
        for at in range(17):  # at every place in the C's 8-byte chunks
            assert check(**{name: "x" * at + char + "y" * (16 - at)}), (repr(char), at)
    assert check(**{name: ""})
    assert check(**{name: "".join(CONTROL + SPECIAL)})
    assert check(**{name: "é" * 3 + "x"})  # Latin-1 only: one byte a character in memory
    assert check(**{name: "☃" + '"'})  # two bytes a character
    assert check(**{name: "\\😀\n"})  # four bytes a character


@pytest.mark.parametrize("name", [*TEXT, "request_id", "would_deny", "mask_skipped"])
def test_a_lone_surrogate_is_left_to_the_reference(name: str) -> None:
    for surrogate in SURROGATES:
        for text in (surrogate, f"/a{surrogate}b", f"😀{surrogate}", f"é{surrogate}\n"):
            assert not check(**{name: text})
    assert not check(boot="boot\udc80")  # the reference raises UnicodeEncodeError on it


@pytest.mark.parametrize("name", [*TEXT, "request_id"])
def test_none_is_null_in_every_text_field(name: str) -> None:
    assert check(**{name: None})


@pytest.mark.parametrize("name", ["would_deny", "mask_skipped"])
def test_optional_fields_are_left_out_only_when_none(name: str) -> None:
    assert check(**{name: None})
    assert check(**{name: ""})
    assert check(**{name: "forbidden:role"})
    assert check(would_deny="forbidden:role", mask_skipped="too_large")


def test_bytes_request_ids_read_as_ascii_with_replacement() -> None:
    assert check(request_id=b"")
    assert check(request_id=bytes(range(256)))
    assert check(request_id=b'a"b\\c\x00\x1f\x7f\x80\xff')
    for byte in range(256):
        assert check(request_id=bytes([byte]))
        for at in range(17):
            assert check(request_id=b"x" * at + bytes([byte]) + b"y" * (16 - at)), (byte, at)
    assert not check(request_id=bytearray(b"abc"))  # the reference gives it to msgspec: base64


@pytest.mark.parametrize("name", [*INTS, "worker", "seq"])
def test_ints(name: str) -> None:
    for value in BIG_INTS:
        assert check(**{name: value}), value
    for odd in [*HUGE_INTS, True, False, 200.0, "200", None]:
        assert not check(**{name: odd}), odd


def test_latencies() -> None:
    for latency in LATENCIES:
        k = int(latency * 1000.0 + 0.5)
        assert check(latency_ms=latency) == (abs(k) < 10**15), latency
    for odd in [float("nan"), float("inf"), float("-inf"), 5, True, None, "1.5"]:
        assert not check(latency_ms=odd), odd


def test_latencies_rounded_to_every_microsecond_near_zero() -> None:
    encoder = RecordEncoder(BOOT, 3)
    args = [BASE[name] for name in ORDER]
    at = ORDER.index("latency_ms")
    for k in range(-30_000, 30_001):
        for latency in (k / 1000.0, (k + 0.4999) / 1000.0, (k - 0.5) / 1000.0):
            args[at] = latency
            native = _encode.request_record(T0, BOOT, 3, 1, *args)
            assert native is not None
            assert native == encoder.request_reference(T0, 1, *args), latency  # type: ignore[arg-type]


def test_latencies_of_every_magnitude() -> None:
    rng = random.Random(20261128)
    encoder = RecordEncoder(BOOT, 3)
    args = [BASE[name] for name in ORDER]
    at = ORDER.index("latency_ms")
    taken = 0
    for _ in range(20_000):
        latency = rng.choice([-1, 1]) * 10 ** rng.uniform(-8, 17)
        args[at] = latency
        native = _encode.request_record(T0, BOOT, 3, 1, *args)
        if native is not None:
            taken += 1
            assert native == encoder.request_reference(T0, 1, *args), latency  # type: ignore[arg-type]
    assert taken > 10_000


def ns(second: int, micro: int = 0, nano: int = 0) -> int:
    return (second * 1_000_000 + micro) * 1000 + nano


NEW_YEAR_2027 = 1_798_761_600  # 2027-01-01T00:00:00Z
LEAP_DAY_2028 = 1_835_395_200  # 2028-02-29T00:00:00Z
LAST_SECOND_OF_INT64 = (2**63 - 1) // 10**9  # 2262-04-11T23:47:16Z: C reads the clock as int64


def boundary_readings() -> Iterator[int]:
    for second in (0, 1, 59, 86_399, T0 // 10**9, NEW_YEAR_2027 - 1, NEW_YEAR_2027, LEAP_DAY_2028 - 1,
                   LEAP_DAY_2028, 2**31 - 1, 2**31, 2**32, LAST_SECOND_OF_INT64 - 1):  # fmt: skip
        for micro, nano in itertools.product((0, 1, 9, 10, 999_999), (0, 1, 999)):
            yield ns(second, micro, nano)
    yield 2**63 - 1


def test_timestamps_at_boundaries() -> None:
    for now in boundary_readings():
        assert check(now=now), now
    assert check(now=ns(NEW_YEAR_2027) - 1)  # 2026-12-31T23:59:59.999999Z
    assert check(now=2**63 - 1)


def test_clock_readings_left_to_the_reference() -> None:
    for now in (-1, -1000, -(10**9), 2**63, ns(253_402_300_799), ns(253_402_300_800), 2**80):
        assert not check(now=now), now
    assert not check(now=float(T0))  # type: ignore[arg-type]
    assert not check(now=True)  # type: ignore[arg-type]


def test_the_cached_second_is_refreshed() -> None:
    # One cache serves every caller: interleave seconds forwards, backwards and across a year.
    seconds = [T0 // 10**9, T0 // 10**9 + 1, T0 // 10**9, NEW_YEAR_2027 - 1, NEW_YEAR_2027, 0, NEW_YEAR_2027]
    for second in seconds * 3:
        for micro in (0, 500_000, 999_999):
            assert check(now=ns(second, micro))
    # A reading left to the reference does not spoil the cache for the next one.
    assert not check(now=2**63)
    assert check(now=ns(NEW_YEAR_2027 - 1, 999_999))
    assert check(now=ns(NEW_YEAR_2027))


def test_records_at_and_over_the_size_bound() -> None:
    encoder = RecordEncoder(BOOT, 3)
    bare = encoder.request_reference(T0, 1841, *[{**BASE, "path": ""}[n] for n in ORDER])  # type: ignore[arg-type]
    room = RECORD_MAX - len(bare)
    assert check(path="a" * room)
    assert not check(path="a" * (room + 1))
    assert check(path="\x01" * (room // 6) + "a" * (room % 6))
    assert not check(path="\x01" * (room // 6 + 1))
    for n in range(room // 6 + 1, room // 2, 151):  # fits only unescaped: C measures before writing
        assert not check(path="\x01" * n)
        assert not check(path="\U0010ffff" * (n // 2 + room // 4))
        assert not check(path="", request_id=b"\x01" * (n + 6))
    assert check(path="😀" * (room // 4) + "a" * (room % 4))
    assert not check(path="😀" * (room // 4 + 1))
    id_room = room + len(str(BASE["request_id"]))
    assert check(path="", request_id=b"\xff" * (id_room // 3) + b"x" * (id_room % 3))
    assert not check(path="", request_id=b"\xff" * (id_room // 3 + 1))
    assert not check(path="/" + "\x01" * 20000, principal="p" * 5000)
    assert not check(path="a" * (RECORD_MAX + 1))


def test_wrong_argument_counts_raise() -> None:
    with pytest.raises(TypeError):
        _encode.request_record(T0, BOOT, 3, 1)
    with pytest.raises(TypeError):
        _encode.request_record(*[None] * 23)


# -- generated records -----------------------------------------------------------------------------

ALPHABETS = [
    [chr(c) for c in range(0x20, 0x7F)],
    [*CONTROL, '"', "\\"],
    [*CONTROL, *SPECIAL, "a", "b", "/"],
    [chr(c) for c in range(0x80, 0x100)],
    [chr(c) for c in range(0x100, 0x800)] + ["x"],
    ["☃", "\u2028", "\uffff", "\ue000", "z"],
    ["😀", "\U0010ffff", "\U00010000", "\n"],
]


def random_text(rng: random.Random) -> str:
    alphabet = rng.choice(ALPHABETS)
    text = "".join(rng.choice(alphabet) for _ in range(rng.choice([0, 1, 2, 5, 20, 100])))
    if rng.random() < 0.03:
        at = rng.randint(0, len(text))
        text = text[:at] + rng.choice(SURROGATES) + text[at:]
    return text


def random_record(rng: random.Random) -> dict[str, object]:
    fields: dict[str, object] = {name: random_text(rng) for name in (*TEXT, "would_deny", "mask_skipped")}
    for name in OPTIONAL:
        if rng.random() < 0.4:
            fields[name] = None
    roll = rng.random()
    if roll < 0.3:
        fields["request_id"] = bytes(rng.randrange(256) for _ in range(rng.choice([0, 8, 32])))
    elif roll < 0.4:
        fields["request_id"] = f"{rng.getrandbits(128):032x}"
    else:
        fields["request_id"] = random_text(rng)
    for name in INTS:
        fields[name] = rng.choice([rng.randrange(1000), rng.choice(BIG_INTS), rng.randrange(-(2**63), 2**63)])
    if rng.random() < 0.01:
        fields[rng.choice(INTS)] = rng.choice(HUGE_INTS)
    fields["latency_ms"] = rng.choice(
        [rng.choice(LATENCIES), rng.uniform(0, 5), rng.uniform(-1, 1e4), 10 ** rng.uniform(-7, 16)]
    )
    return fields


def test_generated_records() -> None:
    rng = random.Random(0xA0D17)
    readings = list(boundary_readings())
    taken = 0
    count = 4000
    for _ in range(count):
        now = rng.choice([rng.choice(readings), rng.randrange(0, 2**63), T0])
        boot = rng.choice([BOOT, f"{rng.getrandbits(64):016x}", random_text(rng)])
        taken += check(now, boot, rng.randrange(1, 64), rng.randrange(1, 2**40), **random_record(rng))
    assert taken > count * 0.6
