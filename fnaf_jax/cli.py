"""The ``fnaf`` command: one sub-command per module in ``fnaf_jax.commands``.

Each command module defines ``register(subparsers)``, which adds its parser and sets
``func`` (called with the parsed args; returns an exit status or None). An ``FnafError``
(bad input) becomes one clear line on stderr with exit status 2; an environment failure
(disk full, permission denied, out of memory) one line with exit status 1.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from fnaf_jax import __version__
from fnaf_jax.errors import FnafError

COMMANDS = (
    "synth",
    "train",
    "convert",
    "reconstruct",
    "evaluate",
    "attack",
    "report",
    "profile",
    "reproduce",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fnaf",
        description="Find the small features an MRI reconstruction model erases (FNAF).",
    )
    parser.add_argument("--version", action="version", version=f"fnaf-jax {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"fnaf_jax.commands.{name}").register(subparsers)
    return parser


def main(argv=None) -> int:
    from fnaf_jax import parallel

    # a multi-host job must join before anything touches a device (building the parser
    # imports modules that do)
    if parallel.maybe_initialize_distributed():
        import jax

        print(f"fnaf: process {jax.process_index()} of {jax.process_count()} ({jax.local_device_count()} "
              f"local of {jax.device_count()} devices)", file=sys.stderr)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse printed the usage error (status 2) or --help (0)
        return int(exc.code or 0)
    try:
        status = args.func(args)
    except FnafError as exc:
        print(f"fnaf {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"fnaf {args.command}: error: out of memory (try a smaller --batch-size or size)",
              file=sys.stderr)
        return 1
    except OSError as exc:  # the environment refused: disk full, permissions, read-only ...
        from fnaf_jax.fileio import describe_os_error

        print(f"fnaf {args.command}: error: {describe_os_error(exc, exc.filename or 'a file')}",
              file=sys.stderr)
        return 1
    except RuntimeError as exc:  # XLA reports device out-of-memory as a RuntimeError subclass
        if "RESOURCE_EXHAUSTED" not in str(exc):
            raise
        print(f"fnaf {args.command}: error: out of accelerator memory (try a smaller --batch-size, "
              "or --max-images-per-call for attacks)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"fnaf {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
