"""scripts/fastproxy.service says what the README promises (systemd is not needed to check it)."""

from __future__ import annotations

from pathlib import Path

UNIT = Path(__file__).resolve().parent.parent / "scripts" / "fastproxy.service"


def settings() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def test_the_unit_is_a_hardened_notify_service() -> None:
    unit = settings()
    assert unit["Type"] == ["notify"]
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert int(unit["WatchdogSec"][0]) > 0
    assert unit["User"] == ["fastproxy"]
    assert unit["NoNewPrivileges"] == ["yes"]
    assert unit["ProtectSystem"] == ["strict"]
    assert unit["PrivateTmp"] == ["yes"]
    assert unit["ReadWritePaths"] == ["/var/log/fastproxy"]
    assert int(unit["LimitNOFILE"][0]) >= 65536
    assert unit["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert any("fastproxy run --config" in command for command in unit["ExecStart"])
