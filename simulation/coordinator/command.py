"""`fedbeat serve --config FILE.toml` (one line per round on stderr) and `fedbeat enroll`."""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from simulation.coordinator.config import load_coordinator_config
from simulation.coordinator.enrollment import enroll


def add_serve_command(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser("serve", help="coordinator for real devices joining federated rounds over gRPC")
    serve.add_argument("--config", type=Path, required=True, help="TOML of CoordinatorConfig fields (simulation/coordinator/config.py)")
    serve.set_defaults(handler=run_serve)
    enrol = subparsers.add_parser("enroll", help="new device tokens (printed once) and their records in the coordinator's devices file")
    enrol.add_argument("--devices-file", type=Path, required=True, help="the devices_file of the coordinator config (created 0600)")
    enrol.add_argument("--count", type=int, default=1)
    enrol.set_defaults(handler=run_enroll)


def run_enroll(args: argparse.Namespace) -> int:
    for token in enroll(args.devices_file, args.count):
        print(token)
    return 0


def run_serve(args: argparse.Namespace) -> int:
    config = load_coordinator_config(args.config)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from simulation.coordinator.server import serve  # TensorFlow loads only for this command

    print(json.dumps(serve(config)))
    return 0
