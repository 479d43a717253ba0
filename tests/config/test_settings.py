"""Flags of `fastproxy run`, derived from the schema: names, conversion, errors, help."""

from __future__ import annotations

import argparse
import typing
from typing import Any

import msgspec
import pytest

from fastproxy.cli import main
from fastproxy.config.schema import AuditSettings, LimitsSettings, ServerSettings, UpstreamSettings
from fastproxy.config.settings import add_flags, all_settings, flag_overrides

# Flags the SPEC names for `fastproxy run`, with the TOML key each one sets.
SPEC_FLAGS = {
    "--listen": ("server", "listen"),
    "--workers": ("server", "workers"),
    "--admin-listen": ("server", "admin_listen"),
    "--audit-path": ("audit", "path"),
    "--graceful-timeout": ("server", "graceful_timeout"),
    "--max-connections": ("server", "max_connections"),
    "--header-timeout": ("limits", "header_timeout"),
    "--keepalive-timeout": ("limits", "keepalive_timeout"),
    "--upstream-connect-timeout": ("upstreams.*", "connect_timeout"),
    "--upstream-timeout": ("upstreams.*", "timeout"),
    "--max-body-bytes": ("limits", "max_body_bytes"),
    "--max-header-bytes": ("limits", "max_header_bytes"),
    "--ratelimit-slots": ("server", "ratelimit_slots"),
    "--tls-cert": ("server", "tls_cert"),
    "--tls-key": ("server", "tls_key"),
    "--log-level": ("server", "log_level"),
    "--pid-file": ("server", "pid_file"),
}


def schema_cli_fields() -> list[tuple[str, str, str]]:
    """(section, key, flag) of every schema field whose outermost Meta says cli, read directly."""
    found = []
    for section, struct, prefix in (
        ("server", ServerSettings, ""),
        ("limits", LimitsSettings, ""),
        ("upstreams.*", UpstreamSettings, "upstream-"),
        ("audit", AuditSettings, "audit-"),
    ):
        for name, hint in typing.get_type_hints(struct, include_extras=True).items():
            metas = [m for m in getattr(hint, "__metadata__", ()) if isinstance(m, msgspec.Meta)]
            if metas and (metas[-1].extra or {}).get("cli"):
                found.append((section, name, "--" + prefix + name.replace("_", "-")))
    return found


def parse(*argv: str) -> tuple[dict[str, dict[str, Any]], list[str]]:
    parser = argparse.ArgumentParser()
    add_flags(parser)
    return flag_overrides(parser.parse_args(list(argv)))


def run_help(capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as info:
        main(["run", "--help"])
    assert info.value.code == 0
    return capsys.readouterr().out


def test_the_schema_declares_cli_fields() -> None:
    fields = schema_cli_fields()
    assert len(fields) >= len(SPEC_FLAGS)
    assert ("server", "trusted_proxies", "--trusted-proxies") not in fields


def test_settings_follow_the_schema() -> None:
    flagged = {(s.section, s.key, s.flag) for s in all_settings() if s.flag is not None}
    assert flagged == set(schema_cli_fields())


@pytest.mark.parametrize(("flag", "where"), sorted(SPEC_FLAGS.items()))
def test_spec_flags_set_the_key_of_the_same_name(flag: str, where: tuple[str, str]) -> None:
    by_flag = {s.flag: (s.section, s.key) for s in all_settings() if s.flag}
    assert by_flag[flag] == where


def test_every_cli_field_is_a_flag_of_run(capsys: pytest.CaptureFixture[str]) -> None:
    text = run_help(capsys)
    for _, _, flag in schema_cli_fields():
        assert f"{flag} " in text, flag
    for flag in SPEC_FLAGS:
        assert f"{flag} " in text, flag
    assert "--upstream URL" in text
    assert "--config PATH" in text


def test_fields_not_marked_cli_are_not_flags(capsys: pytest.CaptureFixture[str]) -> None:
    text = run_help(capsys)
    for flag in ("--trusted-proxies", "--audit-batch-max", "--audit-fsync", "--upstream-url"):
        assert flag not in text
    assert not [s for s in all_settings() if s.key == "trusted_proxies" and s.flag]


def test_defaults_come_from_the_schema() -> None:
    defaults = {(s.section, s.key): s.default for s in all_settings()}
    assert defaults[("server", "listen")] == ["127.0.0.1:8080"]
    assert defaults[("server", "admin_listen")] == "127.0.0.1:9901"
    assert defaults[("server", "graceful_timeout")] == 30.0
    assert defaults[("limits", "max_body_bytes")] == 1048576
    assert defaults[("limits", "max_header_bytes")] == 32768
    assert defaults[("upstreams.*", "connect_timeout")] == 5.0
    assert defaults[("upstreams.*", "timeout")] == 30.0
    assert defaults[("upstreams.*", "url")] is None


def test_no_flags_no_overrides() -> None:
    assert parse() == ({}, [])


def test_flag_values_are_converted_with_the_field_type() -> None:
    overrides, errors = parse(
        "--workers",
        "3",
        "--listen",
        "0.0.0.0:80",
        "--listen",
        "[::]:80",
        "--admin-listen",
        "off",
        "--header-timeout",
        "2.5",
        "--max-body-bytes",
        "0",
        "--log-level",
        "debug",
        "--upstream-timeout",
        "7",
        "--audit-path",
        "/tmp/a.jsonl",
    )
    assert errors == []
    assert overrides == {
        "server": {
            "workers": 3,
            "listen": ["0.0.0.0:80", "[::]:80"],
            "admin_listen": "off",
            "log_level": "debug",
        },
        "limits": {"header_timeout": 2.5, "max_body_bytes": 0},
        "upstreams.*": {"timeout": 7.0},
        "audit": {"path": "/tmp/a.jsonl"},
    }
    assert isinstance(overrides["server"]["workers"], int)
    assert isinstance(overrides["upstreams.*"]["timeout"], float)


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (("--workers", "abc"), "--workers"),
        (("--workers", "0"), "--workers"),
        (("--workers", "1000"), "--workers"),
        (("--max-body-bytes", "-1"), "--max-body-bytes"),
        (("--max-body-bytes", "1MiB"), "--max-body-bytes"),
        (("--header-timeout", "0"), "--header-timeout"),
        (("--header-timeout", "soon"), "--header-timeout"),
        (("--log-level", "loud"), "--log-level"),
        (("--upstream-connect-timeout", "-1"), "--upstream-connect-timeout"),
    ],
)
def test_a_bad_flag_value_names_the_flag(argv: tuple[str, str], flag: str) -> None:
    overrides, errors = parse(*argv)
    assert overrides == {}
    assert len(errors) == 1
    assert errors[0].startswith(f"{flag}: ")


def test_every_bad_flag_is_reported() -> None:
    overrides, errors = parse("--workers", "x", "--max-headers", "0", "--body-timeout", "2")
    assert sorted(e.split(":")[0] for e in errors) == ["--max-headers", "--workers"]
    assert overrides == {"limits": {"body_timeout": 2.0}}


def test_run_with_a_bad_flag_exits_2_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["run", "--upstream", "http://127.0.0.1:9", "--workers", "many"])
    assert status == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    assert err[0].startswith("fastproxy: --workers: ")


def test_run_with_a_bad_config_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["run", "--upstream", "ftp://127.0.0.1:9"])
    assert status == 2
    err = capsys.readouterr().err
    assert "only http://" in err
