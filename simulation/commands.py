"""`fedbeat simulate | centralized | export | bench`: flags, config file and what is printed.

TensorFlow is imported inside the handlers, so flag errors and `fedbeat data` stay fast.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from datasets.loading import load_split
from datasets.partition import SCHEMES
from datasets.splits import resolve_data_dir
from edge_runtime.codecs import CODECS
from simulation.config import ALGORITHMS, CLIENT_PATHS, DATASETS, VALIDATION_POPULATIONS, ConfigError, SimulationConfig, load_config
from simulation.metrics import format_report


def add_simulate_command(subparsers: argparse._SubParsersAction) -> None:
    simulate = subparsers.add_parser("simulate", help="federated training across simulated watches, tested on unseen patients")
    _add_run_arguments(simulate)
    simulate.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    simulate.set_defaults(handler=run_simulate)
    centralized = subparsers.add_parser("centralized", help="the same model and budget trained on pooled DS1: FL's reference")
    _add_run_arguments(centralized)
    centralized.set_defaults(handler=run_centralized_command)


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML file of SimulationConfig fields; flags override it")
    parser.add_argument("--dataset", choices=DATASETS)
    parser.add_argument("--data-dir", help="MIT-BIH directory for --dataset mitdb (default $FEDBEAT_DATA)")
    parser.add_argument("--extra-data-dir", dest="extra_data_dirs", action="append", metavar="DIR",
                        help="a further WFDB database (e.g. svdb) whose records join training as more people (repeatable)")
    parser.add_argument("--validation-fold", type=int, metavar="K",
                        help="tuning mode: evaluate on fold K of the training people (DS2 is never opened)")
    parser.add_argument("--validation-folds", type=int, metavar="N", help="people folds of the training side (default 5)")
    parser.add_argument("--validation-population", choices=VALIDATION_POPULATIONS,
                        help="whom the folds deal: ds1 (default; the DS1 people, whom DS2 resembles) or all (DS1 and the extra databases' people)")
    parser.add_argument("--clients", type=int, help="simulated watches in the population")
    parser.add_argument("--client-learning-rate", type=float, metavar="LR", help="local SGD learning rate on each watch (default 0.2)")
    parser.add_argument("--local-epochs", type=int, metavar="E", help="passes over its own beats each watch makes per round (default 3)")
    parser.add_argument("--server-learning-rate", type=float, metavar="LR", help="step of the server optimizer on the mean update (default 1.0; FedAdam 0.01)")
    parser.add_argument("--server-momentum", type=float, metavar="B", help="FedAvgM (Hsu et al. 2019): heavy-ball momentum of the server step (default 0 = FedAvg)")
    parser.add_argument("--release-decay", type=float, metavar="D", help="release a moving average of the rounds' global models, avg = D avg + (1 - D) latest (default 0: the last round's)")
    parser.add_argument("--class-weight-power", type=float, metavar="P", help="loss weight of a class = (1 / frequency)^P (default 0.5; 0 = unweighted)")
    parser.add_argument("--clients-per-round", type=int, help="reports the server waits for each round")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--dropout", type=float, help="probability a selected watch drops out")
    parser.add_argument("--partition", choices=SCHEMES)
    parser.add_argument("--algorithm", choices=ALGORITHMS)
    parser.add_argument("--compression", choices=sorted(CODECS), help="codec every client update passes through (as on devices)")
    parser.add_argument("--client-path", choices=CLIENT_PATHS, help="vectorised (default: K watches per TFF client in one computation) or plain (one TFF client per watch)")
    parser.add_argument("--shard-size", type=int, help="watches trained together per TFF client on the vectorised path (default 100)")
    parser.add_argument("--workers", type=int, help="local TFF worker processes to split clients across (default 1)")
    parser.add_argument("--worker", dest="worker_addresses", action="append", metavar="HOST:PORT", help="a running TFF worker_binary to use (repeatable; see README: private network only)")
    parser.add_argument("--dp-noise-multiplier", type=float, metavar="Z", help="user-level DP-FedAvg: Gaussian noise std = Z x clip (one watch per patient)")
    parser.add_argument("--dp-target-epsilon", type=float, metavar="E", help="pick the noise multiplier that spends E over --rounds")
    parser.add_argument("--dp-clip", metavar="adaptive|NORM", help="L2 clip of each update: adaptive (default, tracks the --dp-clip-quantile of update norms, 0.9 unless set) or a fixed norm")
    parser.add_argument("--dp-clip-quantile", type=float, metavar="Q", help="adaptive clip tracks this quantile of update norms (default 0.9)")
    parser.add_argument("--dp-target-delta", type=float, metavar="D", help="delta of the reported (epsilon, delta) (default 1e-5)")
    parser.add_argument("--secure-aggregation", action="store_true", default=None, help="sum updates with TFF's secure sum (simulated protocol)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--out", help="run directory (metrics.jsonl, summary.json, model.keras, checkpoint)")
    parser.add_argument("--json", action="store_true", help="print the summary JSON instead of the table")


def _config(args: argparse.Namespace) -> SimulationConfig:
    overrides = {
        key: getattr(args, key)
        for key in (
            "dataset", "data_dir", "extra_data_dirs", "validation_fold", "validation_folds", "validation_population", "clients", "class_weight_power", "client_learning_rate", "local_epochs", "server_learning_rate", "server_momentum", "release_decay", "clients_per_round", "rounds", "dropout", "partition", "algorithm", "compression",
            "client_path", "shard_size", "workers", "worker_addresses", "dp_noise_multiplier", "dp_target_epsilon", "dp_clip", "dp_clip_quantile",
            "dp_target_delta", "secure_aggregation", "seed", "out",
        )
    }
    config = load_config(args.config, overrides)
    if config.dataset == "mitdb":
        resolve_data_dir(config.data_dir)  # an unreadable data dir fails before TensorFlow loads
    return config


def run_centralized_command(args: argparse.Namespace) -> int:
    config = _config(args)
    from simulation.centralized import run_centralized  # TensorFlow loads only for this command

    summary = run_centralized(config, progress=not args.json)
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"\ncentralized on pooled DS1 ({summary['examples_seen']:,} examples, the budget of {config.rounds} FL rounds)")
    print(f"{summary['evaluated_on']}:\n{format_report(summary['test'])}")
    return 0


def run_simulate(args: argparse.Namespace) -> int:
    config = _config(args)
    from simulation.runner import run_simulation  # TensorFlow loads only for this command

    summary = run_simulation(config, resume=args.resume, progress=not args.json)
    if args.json:
        print(json.dumps(summary))
        return 0
    rounds = summary["rounds"]
    print(
        f"\n{config.algorithm} on {config.dataset}: {rounds['applied']} rounds applied, {rounds['abandoned']} abandoned; "
        f"{rounds['reported']} reports, {rounds['dropped']} dropouts, {rounds['late']} late of {rounds['invited']} invitations"
    )
    print(f"{summary['evaluated_on']}:\n{format_report(summary['test'])}")
    if summary["privacy"]:
        p = summary["privacy"]
        print(f"privacy: ({p['epsilon']:.2f}, {p['delta']:g})-DP per patient after {p['rounds']} rounds, z={p['noise_multiplier']:.3f}, q={p['sampling_rate']:.3g}")
    print(f"model_sha256 {summary['model_sha256']}  ->  {config.out}")
    return 0


def add_export_command(subparsers: argparse._SubParsersAction) -> None:
    export = subparsers.add_parser("export", help="TFLite models and manifest for devices, from a trained model.keras")
    export.add_argument("--model", type=Path, required=True, help="OUT/model.keras of a simulate run")
    export.add_argument("--out", type=Path, required=True, help="directory for model_train.tflite, model_int8.tflite, manifest.json")
    export.add_argument("--dataset", choices=DATASETS, default="synthetic", help="where the int8 calibration beats come from (DS1)")
    export.add_argument("--data-dir", help="MIT-BIH directory for --dataset mitdb")
    export.set_defaults(handler=run_export)


def run_export(args: argparse.Namespace) -> int:
    if not args.model.is_file():
        raise ConfigError(f"{args.model}: no such model file")
    config = load_config(None, {"dataset": args.dataset, "data_dir": args.data_dir})
    from models.beat_classifier import WeightedCrossEntropy, class_weights
    from models.export import export_for_devices
    from simulation.beat_data import data_directory, model_inputs

    import tensorflow as tf

    model = tf.keras.models.load_model(args.model, custom_objects={"WeightedCrossEntropy": WeightedCrossEntropy}, compile=False)
    train = load_split(data_directory(config), "DS1")
    beat, log_rr = model_inputs(train)
    manifest = export_for_devices(model, args.out, beats=beat, log_rr=log_rr, class_weights=class_weights(train.labels, power=config.class_weight_power))
    sizes = {name: (args.out / name).stat().st_size for name in manifest["files"]}
    print(json.dumps({"out": str(args.out), "model_version": manifest["model_version"], "bytes": sizes}))
    return 0


def add_bench_command(subparsers: argparse._SubParsersAction) -> None:
    bench = subparsers.add_parser("bench", help="benchmarks")
    targets = bench.add_subparsers(dest="bench_target", required=True, metavar="{edge,sim,detect,personalize}")
    sim = targets.add_parser("sim", help="simulated-round examples/s vs centralized Keras, memory across rounds")
    sim.add_argument("--quick", action="store_true", help="200 clients per round, 12 rounds, no sweeps (CI)")
    sim.add_argument("--json", action="store_true")
    sim.set_defaults(handler=run_bench_sim)
    edge = targets.add_parser("edge", help="on-device train step vs TF, int8 inference, model sizes, codecs on a real update")
    edge.add_argument("--dataset", choices=DATASETS, default="synthetic")
    edge.add_argument("--data-dir", help="MIT-BIH directory for --dataset mitdb")
    edge.add_argument("--json", action="store_true")
    edge.set_defaults(handler=run_bench_edge)
    detect = targets.add_parser("detect", help="R-peak detector Se/+P on MIT-BIH leads 1 and 2, svdb, the nst noise protocol; XQRS beside")
    detect.add_argument("--data-dir", help="MIT-BIH directory (default $FEDBEAT_DATA or ../shared/data/mitdb)")
    detect.add_argument("--svdb", help="svdb directory (default ../shared/data/svdb if present)")
    detect.add_argument("--nstdb", help="nstdb directory (default ../shared/data/nstdb if present)")
    detect.add_argument("--quick", action="store_true", help="4 records per database, no XQRS")
    detect.add_argument("--json", action="store_true")
    detect.set_defaults(handler=run_bench_detect)
    personal = targets.add_parser("personalize", help="each DS2 wearer's personal model (first 5 min labelled) vs the global model on the rest")
    personal.add_argument("--model", type=Path, required=True, help="the global model's export (`fedbeat export` of a simulate run)")
    personal.add_argument("--data-dir", help="MIT-BIH directory (default $FEDBEAT_DATA or ../shared/data/mitdb)")
    personal.add_argument("--seeds", default="0", help="personalisation seeds, comma-separated")
    personal.add_argument("--device-python", help="python of a numpy + tflite-runtime venv: also measure one personalisation there")
    personal.add_argument("--json", action="store_true")
    personal.set_defaults(handler=run_bench_personalize)


def _print_scalars(result: dict, as_json: bool, *, nested: str) -> bool:
    """Print the whole result as JSON (True: done) or its scalar fields as a table (False)."""
    if as_json:
        print(json.dumps(result))
        return True
    for key, value in result.items():
        if key != nested and not isinstance(value, list):
            print(f"{key:<24}{value}")
    return False


def run_bench_sim(args: argparse.Namespace) -> int:
    from simulation.speed_benchmark import SpeedBenchmarkConfig, benchmark_simulation

    result = benchmark_simulation(SpeedBenchmarkConfig.quick() if args.quick else SpeedBenchmarkConfig(), progress=not args.json)
    if _print_scalars(result, args.json, nested="sweep"):
        return 0
    for row in result.get("sweep", []):
        print("sweep " + "  ".join(f"{k}={v}" for k, v in row.items()))
    return 0


def run_bench_detect(args: argparse.Namespace) -> int:
    from datasets.detection_benchmark import DetectionBenchmarkConfig, benchmark_detection
    from datasets.splits import default_mitdb_dir, resolve_data_dir, shared_database_dir

    mitdb = resolve_data_dir(args.data_dir or default_mitdb_dir())
    svdb, nstdb = (Path(a) if a else shared_database_dir(name) for a, name in ((args.svdb, "svdb"), (args.nstdb, "nstdb")))
    make = DetectionBenchmarkConfig.quick if args.quick else DetectionBenchmarkConfig
    result = benchmark_detection(make(mitdb=mitdb, svdb=svdb, nstdb=nstdb), progress=not args.json)
    if args.json:
        print(json.dumps(result))
        return 0
    for row, entry in result["rows"].items():
        cells = "  ".join(f"{name} Se {entry[name]['se']:6.2f} +P {entry[name]['ppv']:6.2f}" for name in ("fedbeat", "xqrs") if name in entry)
        print(f"{row:<28}{cells}")
    return 0


def run_bench_personalize(args: argparse.Namespace) -> int:
    from datasets.splits import default_mitdb_dir
    from models.personalization_benchmark import format_table, report

    if not (args.model / "manifest.json").is_file():
        raise ConfigError(f"--model {args.model}: not a `fedbeat export` directory (no manifest.json)")
    ds2 = load_split(resolve_data_dir(args.data_dir or default_mitdb_dir()), "DS2", progress=False)
    result = report(args.model, ds2, seeds=tuple(int(s) for s in args.seeds.split(",")), device_python=args.device_python)
    print(json.dumps(result) if args.json else format_table(result))
    return 0


def run_bench_edge(args: argparse.Namespace) -> int:
    config = load_config(None, {"dataset": args.dataset, "data_dir": args.data_dir})
    from models.edge_benchmark import benchmark_edge
    from simulation.beat_data import data_directory

    result = benchmark_edge(load_split(data_directory(config), "DS1", progress=False))
    if _print_scalars(result, args.json, nested="codecs"):
        return 0
    for name, row in result["codecs"].items():
        print(f"codec {name:<18}{row['bytes']:>7} bytes  {row['ratio_vs_fp32']:>6}x  nmse {row['nmse']:.3g}")
    return 0
