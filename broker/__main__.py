"""Command line: ``yoton-broker [--listen ADDRESS] [--connection-file PATH]
[--python EXE] [--insecure]``."""

from __future__ import annotations

import argparse
import logging
import sys

from .core import Broker, BrokerError


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of yoton-broker."""
    parser = argparse.ArgumentParser(
        prog="yoton-broker",
        description="Run a Python kernel on this machine and let yoton clients "
        "attach to it.",
    )
    parser.add_argument(
        "--listen",
        default="localhost",
        metavar="ADDRESS",
        help="host or host:port for clients (default: localhost on a free port); "
        "a non-loopback address always requires the key",
    )
    parser.add_argument(
        "--connection-file",
        metavar="PATH",
        help="where to write the address and key (default: "
        "$XDG_RUNTIME_DIR/yoton/broker-<pid>.json)",
    )
    parser.add_argument(
        "--python",
        metavar="EXE",
        help="the interpreter that runs the kernel (default: this one)",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="accept clients without a key (loopback addresses only)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the broker; return its exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING,
        format="yoton-broker %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        broker = Broker(
            args.listen,
            python=args.python,
            connection_file=args.connection_file,
            insecure=args.insecure,
        )
        return broker.run()
    except BrokerError as err:
        print(f"yoton-broker: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"yoton-broker: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
