"""The `fedbeat` command line: one console script, one subcommand per job.

Bad input (a corrupted record, an invalid flag value) ends in one line on stderr and exit
code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import sys

from datasets.cli import add_data_commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedbeat", description="Federated learning for wearable ECG.")
    commands = parser.add_subparsers(dest="command", required=True)
    add_data_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except ValueError as error:  # RecordFormatError and config validation errors
        print(f"fedbeat: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
