"""Sealing whole batches: the C seal and its Python twin give the same bytes and the same errors."""

from __future__ import annotations

import random
from collections.abc import Callable

import orjson
import pytest

from fastproxy.audit import chain
from fastproxy.audit.chain import GENESIS, Chain, check_line, seal, seal_batch_reference
from fastproxy.audit.protocol import count_records_reference

Sealer = Callable[[bytes | memoryview, bytes], tuple[bytes, bytes, int]]

try:
    from fastproxy.audit._seal import count as native_count
    from fastproxy.audit._seal import seal as native_seal
except ImportError:  # pragma: no cover - only without a compiler or OpenSSL's headers
    native_seal = native_count = None

SEALERS: list[Sealer] = [seal_batch_reference] + ([native_seal] if native_seal is not None else [])


def random_record(rng: random.Random) -> bytes:
    obj: dict[str, object] = {"v": 1, "seq": rng.randrange(1 << 40)}
    for _ in range(rng.randrange(0, 8)):
        key = "".join(rng.choice("abcdefgh_") for _ in range(rng.randrange(1, 12)))
        obj[key] = rng.choice(
            [
                rng.randrange(-(10**12), 10**12),
                "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randrange(0, 300))),
                None,
                rng.random(),
                ["x\n", {"y": "}"}],  # newlines and braces inside strings stay escaped or quoted
            ]
        )
    return orjson.dumps(obj)


def test_the_writer_uses_the_native_seal_when_it_is_built() -> None:
    if native_seal is None:
        pytest.skip("fastproxy.audit._seal is not built")
    assert chain.seal_batch is native_seal


@pytest.mark.parametrize("sealer", SEALERS)
def test_a_batch_seals_as_record_by_record(sealer: Sealer) -> None:
    rng = random.Random(5)
    prev = GENESIS
    for size in (1, 2, 3, 17, 512):
        records = [random_record(rng) for _ in range(size)]
        lines, head, count = sealer(b"\n".join(records), prev)
        expected = []
        for record in records:
            line, prev = seal(record, prev)
            expected.append(line)
        assert (lines, head, count) == (b"".join(expected), prev, size)
        for line in lines.splitlines():
            check_line(line)


BAD_PAYLOADS = [
    b"", b"{}", b'{"a":1}\n', b'\n{"a":1}', b'{"a":1}\n\n{"b":2}', b"[1]", b'{"a":1}\n[2]', b'"x"', b'{"',
    b'{"a":1} ', b'{"a":1}\n{"', b'{"\n{"a":1}',
]  # fmt: skip


@pytest.mark.parametrize("payload", BAD_PAYLOADS)
@pytest.mark.parametrize("sealer", SEALERS)
def test_what_is_not_a_batch_of_objects_is_refused(sealer: Sealer, payload: bytes) -> None:
    with pytest.raises(ValueError):
        sealer(payload, GENESIS)


@pytest.mark.parametrize("prev", [b"", b"0" * 63, b"0" * 65, b"A" * 64, b"g" * 64])
@pytest.mark.parametrize("sealer", SEALERS)
def test_a_bad_head_is_refused(sealer: Sealer, prev: bytes) -> None:
    with pytest.raises(ValueError, match="prev"):
        sealer(b'{"a":1}', prev)


def test_chain_seal_moves_the_head_and_only_on_success() -> None:
    chain_ = Chain()
    lines, count = chain_.seal(b'{"a":1}\n{"b":2}')
    assert count == 2 and chain_.head == orjson.loads(lines.splitlines()[-1])["hash"].encode()
    head = chain_.head
    with pytest.raises(ValueError):
        chain_.seal(b'{"a":1}\n[2]')
    assert chain_.head == head


Counter = Callable[[bytes | memoryview], int]
COUNTERS: list[Counter] = [count_records_reference] + ([native_count] if native_count is not None else [])


@pytest.mark.parametrize("counter", COUNTERS)
def test_count_agrees_with_seal_on_what_is_a_batch(counter: Counter) -> None:
    rng = random.Random(9)
    for size in (1, 2, 5):
        payload = b"\n".join(random_record(rng) for _ in range(size))
        assert counter(payload) == size == seal_batch_reference(payload, GENESIS)[2]
    for payload in BAD_PAYLOADS:
        with pytest.raises(ValueError):
            counter(payload)


@pytest.mark.parametrize("counter", COUNTERS)
@pytest.mark.parametrize("sealer", SEALERS)
def test_a_view_into_a_message_seals_and_counts_as_its_bytes(sealer: Sealer, counter: Counter) -> None:
    # The writer hands over the payload as a view of the message it received, past its header.
    rng = random.Random(11)
    payload = b"\n".join(random_record(rng) for _ in range(7))
    message = b"B" + bytes(16) + payload
    view = memoryview(message)[17:]
    assert sealer(view, GENESIS) == sealer(payload, GENESIS)
    assert counter(view) == 7
    for bad in BAD_PAYLOADS:
        with pytest.raises(ValueError):
            sealer(memoryview(b"B" + bad)[1:], GENESIS)


@pytest.mark.skipif(native_seal is None, reason="fastproxy.audit._seal is not built")
def test_the_native_functions_refuse_what_is_not_a_buffer() -> None:
    assert native_seal is not None and native_count is not None
    with pytest.raises(TypeError):
        native_seal("{}", GENESIS)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        native_seal(b'{"a":1}', bytearray(GENESIS))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        native_count(None)  # type: ignore[arg-type]
