"""The `fedbeat` command line: one console script, one subcommand per job.

Bad input (a corrupted record, an invalid flag value) ends in one line on stderr and exit
code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys

from edge_runtime.closed_pipe import silence_stdout

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before any TensorFlow import: keep the terminal readable
if platform.machine() in ("x86_64", "AMD64"):
    # TF turns oneDNN on by itself only on CPUs with AVX-512 VNNI/AMX, but it runs on every x86-64
    # CPU when asked, and fedbeat's rounds are faster with it (simulation speed in the README).
    # An explicit TF_ENABLE_ONEDNN_OPTS=0 (CI's default-kernel pass) is respected.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from datasets.cli import add_data_commands
from datasets.records import RecordFormatError
from simulation.commands import add_bench_command, add_export_command, add_simulate_command
from simulation.config import ConfigError
from simulation.coordinator.command import add_serve_command
from simulation.loopback import LoopbackShimError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedbeat", description="Federated learning for wearable ECG.")
    commands = parser.add_subparsers(dest="command", required=True)
    add_data_commands(commands)
    add_simulate_command(commands)
    add_export_command(commands)
    add_bench_command(commands)
    add_serve_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (RecordFormatError, ConfigError, LoopbackShimError) as error:
        print(f"fedbeat: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `fedbeat ... | head`
        silence_stdout()
        return 0


if __name__ == "__main__":
    sys.exit(main())
