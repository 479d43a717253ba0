"""The shared table itself: layout, hashing, slot reuse, a full window, duplicates, arguments, leaks."""

from __future__ import annotations

import ast
import gc
import os
import subprocess
import sys
import time

import pytest

from fastproxy.ratelimit import ALLOWED, LIMITED, NO_SLOT, new_table
from fastproxy.ratelimit import _gcra as native
from fastproxy.ratelimit import gcra as reference

S = 1_000_000_000
T0 = 5_000 * S
GRACE = native.GRACE_NS


def _home(table: native.Table, key: bytes) -> int:
    return (table.key_hash(key) * table.slots) >> 64


def test_constants_agree_with_the_reference() -> None:
    assert (native.ALLOWED, native.LIMITED, native.NO_SLOT) == (
        reference.ALLOWED,
        reference.LIMITED,
        reference.NO_SLOT,
    )
    assert native.SLOT_BYTES == 16
    assert native.HEADER_BYTES == 128


def test_a_million_slots_fit_in_32_mb_with_a_header() -> None:
    table = new_table(1 << 20)
    assert table.nbytes == 128 + 16 * (1 << 20) <= 32 * 1000 * 1000
    header = table.header
    assert header["magic"] == int.from_bytes(b"FPR1GCRA", "little")
    assert (header["version"], header["header_bytes"]) == (1, 128)
    assert (header["slots"], header["window"], header["grace_ns"]) == (1 << 20, 16, GRACE)
    assert abs(header["created_ns"] - time.monotonic_ns()) < 60 * S
    assert "seed" not in header
    assert table.stats() == dict.fromkeys(
        ("no_slot", "claims", "reclaims", "duplicates", "conflicts", "stalls", "contended", "stale"), 0
    ) | {"slots": 1 << 20, "window": 16}
    assert new_table(5).window == 5


def test_each_table_has_its_own_seed() -> None:
    a, b = new_table(64), new_table(64)
    assert a.key_hash(b"alice") == a.key_hash(b"alice") == a.key_hash("alice")
    assert a.key_hash(b"alice") != b.key_hash(b"alice")
    assert len({new_table(8).key_hash(b"k") for _ in range(20)}) == 20


@pytest.mark.skipif(sys.hash_info.algorithm != "siphash13", reason="CPython's hash is not SipHash-1-3 here")
def test_siphash13_matches_cpython() -> None:
    inputs = [b"a", b"abcdefg", b"abcdefgh", b"0123456789abcdef!", bytes(range(200))]
    code = f"print([hash(x) for x in {inputs!r}])"
    env = dict(os.environ, PYTHONHASHSEED="0")  # CPython then hashes with a zero key
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    expected = ast.literal_eval(out.stdout)
    for data, want in zip(inputs, expected, strict=True):
        got = native.siphash13(bytes(16), data)
        signed = got - (1 << 64) if got >= 1 << 63 else got
        assert (-2 if signed == -1 else signed) == want


def test_a_reclaimed_slot_restarts_its_old_key_from_what_time_gave_it() -> None:
    table = new_table(1)
    assert table.decide_at(T0, b"alice", S, 2) == (ALLOWED, 2, S, 0)
    assert table.decide_at(T0, b"alice", S, 2) == (ALLOWED, 1, 2 * S, 0)
    # alice's TAT is T0 + 2 s: until it has passed by the grace, no one else may have the slot
    for now in (T0, T0 + 2 * S, T0 + 2 * S + GRACE - 1):
        assert table.decide_at(now, b"bob", S, 2)[0] == NO_SLOT
    assert table.stats()["no_slot"] == 3
    assert table.decide_at(T0 + 2 * S + GRACE, b"bob", S, 2) == (ALLOWED, 2, S, 0)
    assert table.stats()["reclaims"] == 1
    assert table.slot(0) == (table.key_hash(b"bob"), T0 + 3 * S + GRACE)
    # alice comes back: no slot while bob is live, then a full bucket, which is what time gave her
    assert table.decide_at(T0 + 3 * S + GRACE - 1, b"alice", S, 2)[0] == NO_SLOT
    assert table.decide_at(T0 + 3 * S + 2 * GRACE, b"alice", S, 2) == (ALLOWED, 2, S, 0)


def test_a_key_keeps_its_own_expired_slot_within_the_grace() -> None:
    table = new_table(1)
    assert table.decide_at(T0, b"alice", S, 0)[0] == ALLOWED
    assert table.decide_at(T0 + S, b"alice", S, 0) == (ALLOWED, 0, S, 0)
    assert table.stats()["claims"] == 1


def test_a_full_window_is_a_distinct_outcome_that_writes_nothing_and_is_counted() -> None:
    table = new_table(4)  # one window covers the whole table
    for k in range(4):
        assert table.decide_at(T0, b"k%d" % k, S, 0)[0] == ALLOWED
    before = [table.slot(i) for i in range(4)]
    assert table.decide_at(T0, b"late", S, 0) == (NO_SLOT, 0, 0, S)
    assert table.decide_at(T0, b"late", S, 0, 3) == (NO_SLOT, 0, 0, 3 * S)
    assert [table.slot(i) for i in range(4)] == before
    assert table.stats()["no_slot"] == 2
    assert table.live_slots(T0) == 4
    assert table.live_slots(T0 + S) == 0
    assert table.stats()["claims"] == 4


def test_a_limited_decision_writes_nothing() -> None:
    table = new_table(16)
    table.decide_at(T0, b"k", S, 0)
    before = [table.slot(i) for i in range(16)]
    assert table.decide_at(T0, b"k", S, 0)[0] == LIMITED
    assert [table.slot(i) for i in range(16)] == before


def test_a_live_duplicate_denies_without_writing_until_it_passes() -> None:
    table = new_table(64)
    tag, home = table.key_hash(b"k"), _home(table, b"k")
    strong, weak = (home + 3) % 64, (home + 1) % 64
    table._store(strong, tag, T0 + 5 * S)
    table._store(weak, tag, T0 + 3 * S)  # as a race between two first requests could leave it
    assert table.decide_at(T0, b"k", S, 10) == (LIMITED, 0, 5 * S, 3 * S)
    assert table.stats()["duplicates"] == 1
    assert table.slot(strong) == (tag, T0 + 5 * S) and table.slot(weak) == (tag, T0 + 3 * S)
    # once the weaker copy has passed, the stronger one (the highest TAT) carries on
    assert table.decide_at(T0 + 3 * S, b"k", S, 10) == (ALLOWED, 8, 3 * S, 0)
    assert table.slot(strong) == (tag, T0 + 6 * S)
    assert table.slot(weak) == (tag, T0 + 3 * S)


def test_the_real_clock_path_decides_and_counts_no_stall() -> None:
    table = new_table(1024)
    assert abs(native.monotonic_ns() - time.monotonic_ns()) < S
    assert table.decide(b"k", S, 1)[0] == ALLOWED
    assert table.decide("k", S, 1)[0] == ALLOWED
    status, remaining, reset_after, retry_after = table.decide(b"k", S, 1)
    assert (status, remaining) == (LIMITED, 0)
    assert S < reset_after <= 2 * S and 0 < retry_after <= S
    assert table.live_slots() == 1
    assert table.stats()["stalls"] == table.stats()["conflicts"] == 0


def test_a_forked_child_shares_the_table() -> None:
    table = new_table(1024)
    pid = os.fork()
    if pid == 0:
        os._exit(0 if table.decide_at(T0, b"k", S, 0)[0] == ALLOWED else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert table.decide_at(T0, b"k", S, 0)[0] == LIMITED


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((1, S, 0), TypeError),
        ((bytearray(b"k"), S, 0), TypeError),
        ((b"k", 1.5, 0), TypeError),
        ((b"k", True, 0), TypeError),
        ((b"k", S, None), TypeError),
        ((b"k", S, 0, "1"), TypeError),
        ((b"k", S), TypeError),
        ((b"k", S, 0, 1, 2), TypeError),
        ((b"k", 0, 0), ValueError),
        ((b"k", -1, 0), ValueError),
        ((b"k", S, -1), ValueError),
        ((b"k", S, 0, 0), ValueError),
        ((b"k", 1 << 63, 0), ValueError),
        ((b"k", 1 << 200, 0), ValueError),
        ((b"k", 1 << 61, 2), ValueError),
        ((b"k", 1 << 61, 0, 3), ValueError),
        (("\ud800", S, 0), UnicodeEncodeError),
    ],
)
def test_every_argument_is_checked(args: tuple[object, ...], error: type[Exception]) -> None:
    table = new_table(8)
    with pytest.raises(error):
        table.decide(*args)  # type: ignore[arg-type]
    with pytest.raises(error):
        table.decide_at(T0, *args)  # type: ignore[arg-type]


def test_other_methods_check_their_arguments() -> None:
    table = new_table(8)
    for bad_now in (0, -1, 1 << 62 + 1, "1", 1.0):
        with pytest.raises((TypeError, ValueError)):
            table.decide_at(bad_now, b"k", S, 0)  # type: ignore[arg-type]
    for bad_slots in (0, -1, (1 << 32) + 1):
        with pytest.raises(ValueError):
            new_table(bad_slots)
    for bad in ("8", 8.0, True):
        with pytest.raises(TypeError):
            native.Table(bad)  # type: ignore[arg-type]
    with pytest.raises(IndexError):
        table.slot(8)
    with pytest.raises(TypeError):
        table.key_hash(memoryview(b"k"))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        native.siphash13(b"short", b"x")
    with pytest.raises(TypeError):
        type(table)("x", "y")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        table.live_slots(1, 2)  # type: ignore[call-arg]


def _vm_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1])
    raise AssertionError("no VmSize")


def test_no_leak_per_call_or_per_table() -> None:
    table = new_table(1024)
    bad_calls: list[tuple[object, ...]] = [(1, S, 0), (b"k", 0, 0), (b"k", S), ("\ud800", S, 0)]

    def loop() -> None:
        for i in range(20_000):
            table.decide(b"k%d" % (i % 50), 1000, 10)
            table.decide_at(T0 + i, "s", 1000, 10, 2)
            table.decide_at(T0, b"limited", 10 * S, 0)
            table.key_hash(b"x")
            table.slot(i % 1024)
            if i % 100 == 0:
                table.stats()
                table.live_slots(T0)
                assert table.header["slots"] == 1024
                for args in bad_calls:
                    with pytest.raises((TypeError, ValueError)):
                        table.decide(*args)  # type: ignore[arg-type]

    loop()
    gc.collect()
    blocks = sys.getallocatedblocks()
    loop()
    gc.collect()
    assert sys.getallocatedblocks() - blocks < 50

    vm = _vm_kib()
    for _ in range(64):  # 1 GiB of mappings if any were kept
        big = new_table(1 << 20)
        big.decide(b"k", S, 0)
        del big
    assert _vm_kib() - vm < 16 * 1024
