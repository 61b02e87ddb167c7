"""The ``regionadapt`` command. Each command group lives in its own module under ``commands/`` and adds
itself with ``register(subparsers)``; heavy imports (torch, onnxruntime) happen inside the handlers so that
``regionadapt --help`` and the light commands start fast."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import signal
import sys
from typing import NoReturn

from regionadapt_ros.core.errors import RegionAdaptError
from regionadapt_ros.core.safe_read import one_line, printable_text

# Order is the order of the --help listing.
COMMAND_MODULES = (
    "regionadapt_ros.commands.demo",
    "regionadapt_ros.commands.replay",
    "regionadapt_ros.commands.drive",
    "regionadapt_ros.commands.geofence",
    "regionadapt_ros.commands.bag",
    "regionadapt_ros.commands.bundle",
    "regionadapt_ros.commands.data",
    "regionadapt_ros.commands.train",
    "regionadapt_ros.commands.infer",
    "regionadapt_ros.commands.engine",
)


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse with a usage error on one line (``regionadapt finetune: error: argument --lr: ...``) and exit status
    2; ``--help`` still prints the usage. Subcommand parsers inherit the class."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="regionadapt",
        description="Region-adaptive driving: demo, replay, geofences, bundles, training and engines.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # command group not part of this build
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except RegionAdaptError as exc:
        print(f"regionadapt {args.command}: error: {printable_text(one_line(str(exc)))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # stdout's reader went away (`regionadapt ... | head`): end quietly as a tool killed by SIGPIPE does;
        # stdout is pointed at /dev/null so that the interpreter's last flush does not raise again.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + int(getattr(signal, "SIGPIPE", 13))
    except OSError as exc:  # a file the command was pointed at: the message names it
        # the file name may come from a hostile file (a bag's metadata): bounded and escaped like any message
        print(f"regionadapt {args.command}: error: {exc.strerror or exc}"
              + (f": {printable_text(one_line(str(exc.filename), 300))}" if exc.filename else ""), file=sys.stderr)
        return 1
    except MemoryError:
        print(f"regionadapt {args.command}: error: out of memory", file=sys.stderr)
        return 1
    except Exception as exc:
        # A defect, not bad input (bad input raises the project's errors): one line, the traceback with -v.
        if args.verbose:
            raise
        print(f"regionadapt {args.command}: internal error: {type(exc).__name__}: "
              f"{printable_text(one_line(str(exc)))} (run with -v for the traceback)", file=sys.stderr)
        return 70


if __name__ == "__main__":
    sys.exit(main())
