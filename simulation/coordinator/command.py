"""`fedbeat serve --config FILE.toml`: flags and the one line per round on stderr."""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from simulation.coordinator.config import load_coordinator_config


def add_serve_command(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser("serve", help="coordinator for real devices joining federated rounds over gRPC")
    serve.add_argument("--config", type=Path, required=True, help="TOML of CoordinatorConfig fields (simulation/coordinator/config.py)")
    serve.set_defaults(handler=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    config = load_coordinator_config(args.config)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from simulation.coordinator.server import serve  # TensorFlow loads only for this command

    print(json.dumps(serve(config)))
    return 0
