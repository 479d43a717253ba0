"""The ``fastproxy`` command: run, check, demo, audit verify, token, hash-key.

Exit statuses: 0 success; 1 a runtime failure (cannot listen, ...); 2 a usage or configuration
error (argparse's own convention); 3 workers could not boot.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
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

    audit = commands.add_parser("audit", help="audit file tools")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True, metavar="COMMAND")
    verify = audit_commands.add_parser(
        "verify", help="check hash chain, sequence and gap records; exit 0, or 1 at the first bad line"
    )
    verify.add_argument("paths", nargs="+", metavar="PATH", help="audit files, rotated ones first, in order")
    verify.add_argument(
        "--head", metavar="HASH", help="the hash the chain must end with (detects records removed at the end)"
    )

    token = commands.add_parser("token", help="mint a signed JWT (for tests, demos and load tests)")
    token.add_argument("--key", metavar="PEM", required=True, help="private key file (RSA, EC or Ed25519)")
    token.add_argument("--sub", required=True, help="subject")
    token.add_argument("--roles", default="", help="comma-separated roles")
    token.add_argument(
        "--scope", default=None, help='space-separated scopes, e.g. "orders:read orders:write"'
    )
    token.add_argument("--ttl", type=float, default=3600.0, help="seconds until it expires (default 3600)")
    token.add_argument("--aud", default=None, help="audience")
    token.add_argument("--iss", default=None, help="issuer")
    token.add_argument("--kid", default=None, help="key id for the header (as in the JWKS)")
    token.add_argument(
        "--alg", default=None, help="algorithm (default: RS256, ES256/384/512 by curve, EdDSA)"
    )

    hash_key = commands.add_parser("hash-key", help="read an API key on stdin, print its config line")
    hash_key.add_argument("--id", default="CHANGE-ME", help="the key's id in the audit and X-Auth-Method")
    hash_key.add_argument("--roles", default="", help="comma-separated roles")
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


def _audit(args: argparse.Namespace) -> int:
    from fastproxy.audit.verify import VerifyError, verify_files

    try:
        summary = verify_files(args.paths, head=args.head)
    except VerifyError as exc:
        print(f"fastproxy audit verify: {exc}")
        return 1
    except OSError as exc:
        print(f"fastproxy audit verify: cannot read {exc.filename}: {exc.strerror}", file=sys.stderr)
        return EXIT_CONFIG
    print(summary)
    return 0


def _token(args: argparse.Namespace) -> int:
    from fastproxy.identity.mint import mint

    try:
        with open(args.key, "rb") as f:
            pem = f.read()
    except OSError as exc:
        print(f"fastproxy token: cannot read {args.key}: {exc.strerror}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        token = mint(
            pem,
            sub=args.sub,
            roles=_split_roles(args.roles),
            scope=args.scope,
            ttl=args.ttl,
            aud=args.aud,
            iss=args.iss,
            now=time.time(),
            kid=args.kid,
            alg=args.alg,
        )
    except ValueError as exc:
        print(f"fastproxy token: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(token.decode())
    return 0


def _hash_key(args: argparse.Namespace) -> int:
    from fastproxy.identity.apikeys import config_line

    # One key on stdin; the line break a shell pipe or heredoc adds is not part of it.
    key = sys.stdin.buffer.read().rstrip(b"\r\n")
    if not key:
        print("fastproxy hash-key: no key on stdin", file=sys.stderr)
        return EXIT_CONFIG
    print(config_line(key, args.id, _split_roles(args.roles)))
    return 0


def _split_roles(text: str) -> list[str]:
    return [role.strip() for role in text.split(",") if role.strip()]


_COMMANDS: dict[str, Any] = {
    "run": _run,
    "check": _check,
    "demo": _demo,
    "audit": _audit,
    "token": _token,
    "hash-key": _hash_key,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    status: int = _COMMANDS[args.command](args)
    return status


if __name__ == "__main__":
    sys.exit(main())
