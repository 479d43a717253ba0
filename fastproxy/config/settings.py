"""Command-line flags derived from the schema.

A field of a flagged section whose metadata carries ``extra={"cli": True}`` becomes the flag
``--<prefix><name>`` of ``fastproxy run``. Flags are parsed as plain strings and converted with the
field's own type and bounds, so a flag and a TOML key can never disagree about what is valid.
"""

from __future__ import annotations

import argparse
import typing
from dataclasses import dataclass
from typing import Any

import msgspec

from fastproxy.config.schema import AuditSettings, LimitsSettings, ServerSettings, UpstreamSettings

__all__ = ["SECTIONS", "Setting", "add_flags", "all_settings", "flag_overrides"]


@dataclass(frozen=True, slots=True)
class Setting:
    section: str  # "server", "limits", "upstreams.*" or "audit"
    key: str
    flag: str | None
    type: Any  # the annotated type, bounds included
    default: Any
    help: str

    @property
    def dest(self) -> str:
        return f"{self.section}:{self.key}"

    @property
    def repeatable(self) -> bool:
        return typing.get_origin(_bare(self.type)) is list


# (TOML section, schema, flag prefix)
SECTIONS: tuple[tuple[str, type[msgspec.Struct], str], ...] = (
    ("server", ServerSettings, ""),
    ("limits", LimitsSettings, ""),
    ("upstreams.*", UpstreamSettings, "upstream-"),
    ("audit", AuditSettings, "audit-"),
)


def _bare(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _meta(tp: Any) -> tuple[str, bool]:
    """(description, is-a-flag) from the outermost msgspec.Meta of an annotated type."""
    for extra in reversed(typing.get_args(tp)[1:] if typing.get_origin(tp) is typing.Annotated else ()):
        if isinstance(extra, msgspec.Meta):
            return extra.description or "", bool((extra.extra or {}).get("cli"))
    return "", False


def all_settings() -> list[Setting]:
    """Every setting of the flagged sections, in declaration order (the README reference)."""
    rows = []
    for section, schema, prefix in SECTIONS:
        for field in msgspec.structs.fields(schema):
            description, is_flag = _meta(field.type)
            if field.default is not msgspec.NODEFAULT:
                default = field.default
            elif field.default_factory is not msgspec.NODEFAULT:
                default = field.default_factory()
            else:
                default = None
            flag = "--" + prefix + field.name.replace("_", "-") if is_flag else None
            rows.append(Setting(section, field.name, flag, field.type, default, description))
    return rows


def add_flags(parser: argparse.ArgumentParser) -> None:
    """Add one flag per flagged setting; values stay strings until :func:`flag_overrides`."""
    for setting in all_settings():
        if setting.flag is None:
            continue
        shown = setting.default if setting.default not in (None, []) else "none"
        parser.add_argument(
            setting.flag,
            dest=setting.dest,
            action="append" if setting.repeatable else "store",
            default=None,
            metavar=setting.key.upper(),
            help=f"{setting.help} (default: {shown}; TOML: {setting.section}.{setting.key})",
        )


def flag_overrides(args: argparse.Namespace) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The flags given on the command line as {section: {key: value}}, converted and checked."""
    overrides: dict[str, dict[str, Any]] = {}
    errors = []
    for setting in all_settings():
        raw = getattr(args, setting.dest, None) if setting.flag else None
        if raw is None:
            continue
        try:
            value = msgspec.convert(raw, setting.type, strict=False)
        except msgspec.ValidationError as exc:
            errors.append(f"{setting.flag}: {exc}")
            continue
        overrides.setdefault(setting.section, {})[setting.key] = value
    return overrides, errors
