"""`fastproxy check --config PATH`: exit 0 when valid, 2 with one line per error (file and key)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fastproxy.cli import main

ROOT = Path(__file__).resolve().parents[2]

VALID = """
[server]
listen = ["127.0.0.1:8080"]

[upstreams.api]
url = "http://127.0.0.1:9000"

[[routes]]
name = "all"
path = "/*"
upstream = "api"
public = true
"""

INVALID = """
[server]
workers = 0
colour = "blue"

[upstreams.api]
url = "http://127.0.0.1:9000"
timeout = "long"

[[routes]]
name = "all"
path = "/*"
upstream = "api"
public = true
retries = 2
"""
INVALID_KEYS = ["routes[0].retries", "server.colour", "server.workers", "upstreams.api.timeout"]

MEANING_ERRORS = """
[server]
listen = ["127.0.0.1"]

[upstreams.api]
url = "http://127.0.0.1:9000"

[[routes]]
name = "orders"
path = "/api/orders/*"
upstream = "orders"
"""
MEANING_KEYS = ["routes[0].identity", "routes[0].upstream", "server.listen[0]"]


def check(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], str]:
    status = main(["check", "--config", str(path)])
    captured = capsys.readouterr()
    return status, captured.out.splitlines(), captured.err


def test_valid_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ok.toml"
    path.write_text(VALID)
    status, out, err = check(path, capsys)
    assert status == 0
    assert out == [f"{path}: ok"]
    assert err == ""


@pytest.mark.parametrize(("text", "keys"), [(INVALID, INVALID_KEYS), (MEANING_ERRORS, MEANING_KEYS)])
def test_invalid_config_one_line_per_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, keys: list[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    status, out, _ = check(path, capsys)
    assert status == 2
    assert len(out) == len(keys)
    for line in out:
        assert line.startswith(f"{path}: ")
    assert sorted(line.split(": ")[1] for line in out) == keys


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "absent.toml"
    status, out, _ = check(path, capsys)
    assert status == 2
    assert len(out) == 1
    assert out[0].startswith(f"{path}: ")


def test_not_toml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('[server]\nlisten = ["127.0.0.1:8080"\n')
    status, out, _ = check(path, capsys)
    assert status == 2
    assert len(out) == 1
    assert out[0].startswith(f"{path}: not valid TOML")


def test_check_requires_config(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["check"])
    assert info.value.code == 2
    assert "--config" in capsys.readouterr().err


def test_check_as_a_command(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(MEANING_ERRORS)
    good = tmp_path / "good.toml"
    good.write_text(VALID)
    done = subprocess.run(
        [sys.executable, "-m", "fastproxy", "check", "--config", str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stdout.splitlines()
    assert sorted(line.split(": ")[1] for line in lines) == MEANING_KEYS
    assert all(line.startswith(f"{bad}: ") for line in lines)
    done = subprocess.run(
        [sys.executable, "-m", "fastproxy", "check", "--config", str(good)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{good}: ok\n"
