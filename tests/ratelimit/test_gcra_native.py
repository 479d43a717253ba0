"""fastproxy refuses to run without the C table, and the C builds warning-free."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import fastproxy.ratelimit
from fastproxy.ratelimit import new_table, require_native
from fastproxy.ratelimit import table as loader

SOURCE = Path(fastproxy.ratelimit.__file__).with_name("_gcra.c")


def test_the_extension_is_usable_here() -> None:
    require_native()
    assert fastproxy.ratelimit.Table is type(new_table(1))


def test_a_missing_extension_stops_fastproxy_with_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "_native", None)
    monkeypatch.setattr(loader, "_import_error", ImportError("No module named 'fastproxy.ratelimit._gcra'"))
    with pytest.raises(RuntimeError, match="cannot start") as info:
        require_native()
    message = str(info.value)
    assert "fastproxy.ratelimit._gcra" in message
    assert "No module named" in message
    assert "scripts/install" in message
    assert "never falls back" in message
    with pytest.raises(RuntimeError):
        new_table(8)
    with pytest.raises(RuntimeError):
        fastproxy.ratelimit.Table  # noqa: B018


def test_a_stale_build_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "LAYOUT_VERSION", loader.LAYOUT_VERSION + 1)
    with pytest.raises(RuntimeError, match="stale build"):
        require_native()


def test_importing_the_package_needs_no_extension() -> None:
    code = (
        "import sys; sys.modules['fastproxy.ratelimit._gcra'] = None\n"
        "import fastproxy.ratelimit as r\n"
        "try:\n    r.require_native()\nexcept RuntimeError as e:\n    print('refused:', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("refused: fastproxy cannot start")


@pytest.mark.skipif(shutil.which("gcc") is None, reason="no gcc")
def test_the_c_source_is_warning_free() -> None:
    include = sysconfig.get_paths()["include"]
    flags = ["-mcx16"] if sysconfig.get_platform().endswith("x86_64") else []
    warnings = ["-Wall", "-Wextra", "-Wshadow", "-Wconversion", "-Werror"]
    command = ["gcc", "-fsyntax-only", "-O2", *warnings, *flags, "-I", include, str(SOURCE)]
    subprocess.run(command, check=True, capture_output=True)


def test_admit_is_decide_on_the_joined_key_with_the_headers_formatted() -> None:
    from fastproxy.ratelimit import ALLOWED, LIMITED

    table = new_table(1 << 10)
    interval, burst = 1_000_000_000, 2  # one a second, three at once
    for n in range(3):
        lines = table.admit(b"limit\x00", "10.0.0.1", interval, burst, b"3")
        assert isinstance(lines, bytes) and lines.endswith(b"\r\n")
        fields = dict(line.split(b": ") for line in lines.split(b"\r\n") if line)
        assert list(fields) == [b"RateLimit-Limit", b"RateLimit-Remaining", b"RateLimit-Reset"]
        assert fields[b"RateLimit-Limit"] == b"3"
        assert fields[b"RateLimit-Remaining"] == b"%d" % (2 - n)
        # Seconds until the bucket is full again, rounded up: n + 1 charges of one second each.
        assert fields[b"RateLimit-Reset"] == b"%d" % (n + 1)
    refused = table.admit(b"limit\x00", b"10.0.0.1", interval, burst, b"3")
    assert isinstance(refused, tuple) and refused[0] == LIMITED
    # The key is prefix + value, as decide() spells it whole.
    assert table.decide(b"limit\x0010.0.0.1", interval, burst)[0] == LIMITED
    assert table.decide(b"limit\x0010.0.0.2", interval, burst)[0] == ALLOWED
    long_value = b"v" * 1000  # past the stack buffer
    assert isinstance(table.admit(b"p\x00", long_value, interval, burst, b"3"), bytes)
    # The same key: its second charge leaves two intervals (less the time since) to a full bucket.
    assert table.decide(b"p\x00" + long_value, interval, burst)[2] > interval
    with pytest.raises(TypeError):
        table.admit(b"p", b"v", interval, burst, "3")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        table.admit(b"p", b"v", interval, burst)  # type: ignore[call-arg]


@pytest.mark.parametrize("burst", [0, 9, 10, 99, 12_345_678_901, 2**40])
def test_admitted_lines_spell_every_number_in_decimal(burst: int) -> None:
    # The lines are put together by hand in C (not snprintf): zero, digit-count boundaries and
    # numbers past 32 bits, against Python's formatting of the tuple decide() gives.
    table = new_table(1 << 10)
    interval = 1_000
    lines = table.admit(b"p\x00", b"k", interval, burst, b"1000")
    assert isinstance(lines, bytes)
    remaining, reset = burst, -(-interval // 1_000_000_000)
    assert lines == b"RateLimit-Limit: 1000\r\nRateLimit-Remaining: %d\r\nRateLimit-Reset: %d\r\n" % (
        remaining,
        reset,
    )


def test_the_longest_admitted_lines_fit() -> None:
    # The longest shown limit (32 bytes) and the largest remaining count a burst can leave.
    table = new_table(1 << 10)
    burst = 2**62 - 1
    lines = table.admit(b"p\x00", b"k", 1, burst, b"9" * 32)
    assert isinstance(lines, bytes)
    assert lines == b"RateLimit-Limit: %s\r\nRateLimit-Remaining: %d\r\nRateLimit-Reset: 1\r\n" % (
        b"9" * 32,
        burst,
    )
