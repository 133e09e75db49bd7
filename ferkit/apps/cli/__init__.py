"""Command line: ``ferkit analyze | video | camera | serve | train | evaluate | export | models``.

The CLI only parses arguments, calls the library and writes results. Library
errors (:class:`~ferkit.errors.FerkitError`) become one line on stderr and a
non-zero exit code, never a traceback. Exit codes: 0 all inputs succeeded,
1 some inputs failed, 2 usage error, 130 interrupted, 141 stdout closed early
(``ferkit analyze ... --json | head -1``: processing stops quietly, no traceback).
"""

from __future__ import annotations

import argparse
import importlib

from ferkit.apps.cli.common import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SOME_FAILED,
    EXIT_STDOUT_CLOSED,
    EXIT_USAGE,
    StdoutClosed,
    UsageError,
    build_recognizer,
    err,
    silence_stdout,
)
from ferkit.errors import ConfigError, FerkitError

#: Modules of this package that each register a group of subcommands (``add_parsers(sub)``), in help order.
COMMAND_GROUPS = ("analyze", "video", "serve", "training", "detector")
__all__ = ["main", "build_parser", "build_recognizer", "UsageError", "EXIT_OK", "EXIT_SOME_FAILED", "EXIT_USAGE",
           "EXIT_INTERRUPTED", "EXIT_STDOUT_CLOSED"]


def build_parser() -> argparse.ArgumentParser:
    """The ``ferkit`` argument parser with every sub-command registered."""
    from ferkit import __version__

    parser = argparse.ArgumentParser(prog="ferkit", description="Facial expression recognition toolkit.")
    parser.add_argument("--version", action="version", version=f"ferkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for group in COMMAND_GROUPS:
        importlib.import_module(f"ferkit.apps.cli.{group}").add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (also used as the process exit status)."""
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on usage errors
    try:
        return int(args.func(args) or 0)
    except (UsageError, ConfigError) as e:  # a flag value the library refused says which setting and why
        err(str(e))
        return EXIT_USAGE
    except FerkitError as e:
        err(str(e))
        return EXIT_SOME_FAILED
    except KeyboardInterrupt:
        err("interrupted")
        return EXIT_INTERRUPTED
    except StdoutClosed:
        silence_stdout()
        return EXIT_STDOUT_CLOSED
