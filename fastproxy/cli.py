"""The ``fastproxy`` command: run, check, demo.

Exit statuses: 0 success; 1 a runtime failure (cannot listen, ...); 2 a usage or configuration
error (argparse's own convention); 3 workers could not boot.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from fastproxy import __version__
from fastproxy.config import Config, ConfigError, load_config
from fastproxy.config.settings import add_flags, flag_overrides

__all__ = ["main"]

EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastproxy", description="A secure API access proxy.")
    parser.add_argument("--version", action="version", version=f"fastproxy {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="serve (flags override the config file)")
    run.add_argument("--config", metavar="PATH", help="TOML configuration file")
    run.add_argument("--upstream", metavar="URL", help="proxy every path to URL, without a config file")
    add_flags(run)

    check = commands.add_parser("check", help="validate a configuration file")
    check.add_argument("--config", metavar="PATH", required=True)

    demo = commands.add_parser("demo", help="a self-contained demo with a built-in upstream")
    demo.add_argument("--port", type=int, default=8080, help="proxy port (default 8080)")
    return parser


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s fastproxy[%(process)d] %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _load(args: argparse.Namespace) -> Config:
    overrides, errors = flag_overrides(args)
    if errors:
        raise ConfigError(errors)
    return load_config(args.config, overrides, args.upstream)


def _run(args: argparse.Namespace) -> int:
    from fastproxy.server.master import Master

    try:
        config = _load(args)
    except ConfigError as exc:
        for line in exc.errors:
            print(f"fastproxy: {line}", file=sys.stderr)
        return EXIT_CONFIG
    _setup_logging(config.server.log_level)
    return Master(config, lambda: _load(args)).run()


def _check(args: argparse.Namespace) -> int:
    try:
        load_config(args.config)
    except ConfigError as exc:
        for line in exc.errors:
            print(line)
        return EXIT_CONFIG
    print(f"{args.config}: ok")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from fastproxy.demo import run_demo

    return run_demo(args.port)


_COMMANDS: dict[str, Any] = {"run": _run, "check": _check, "demo": _demo}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    status: int = _COMMANDS[args.command](args)
    return status


if __name__ == "__main__":
    sys.exit(main())
