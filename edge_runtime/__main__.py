"""`python -m edge_runtime {infer,train,personalize,join,selftest}`: the device side, numpy + tflite-runtime (+ grpcio to join).

Bad input ends in one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

from edge_runtime.aami import CLASS_NAMES
from edge_runtime.closed_pipe import silence_stdout
from edge_runtime.codecs import CODECS
from edge_runtime.identity import update_key
from edge_runtime.interpreter import TrainableModel
from edge_runtime.local_data import LocalData
from edge_runtime.local_training import LocalTrainingConfig, load_feedback, save_weights, train_locally
from edge_runtime.manifest import Manifest
from edge_runtime.payload import Payload, PayloadError, pack
from edge_runtime.personal_model import load_classifier, require_global, write_personal_model
from edge_runtime.personalization import KEEP_RULES, UNSEEN_CLASSES, PersonalizationRecipe, personalize
from edge_runtime.signal_input import check_sampling_rate, choose_lead, readable_record
from edge_runtime.strip import classify_strip, rhythm_summary

SAMPLE_BEATS = Path(__file__).resolve().parent / "sample_beats.npz"


class DeviceInputError(ValueError):
    """A file or flag given to the device CLI that cannot be used."""


def read_strip(args: argparse.Namespace) -> tuple[np.ndarray, float]:
    """(signal float[n] mV, fs) from --ecg strip.npy with --fs, or a WFDB --record (needs wfdb)."""
    if args.ecg:
        if args.fs is None:
            raise DeviceInputError("--ecg needs --fs (the strip's sampling rate in Hz)")
        fs = check_sampling_rate(args.fs, "--fs")
        signal = np.load(args.ecg)
        if signal.ndim != 1 or not np.all(np.isfinite(signal)):
            raise DeviceInputError(f"{args.ecg}: need a finite 1-D signal, got shape {signal.shape}")
        return signal.astype(np.float64), fs
    if args.fs is not None:
        raise DeviceInputError("--fs is for --ecg; a --record's header gives its rate")
    try:
        import wfdb  # optional on devices: only for reading WFDB files
    except ImportError as error:
        raise DeviceInputError("--record needs the optional wfdb package; use --ecg strip.npy --fs HZ") from error
    with readable_record(args.record) as path:
        header = wfdb.rdheader(path)
        channel = choose_lead(list(header.sig_name), args.lead, args.record)
        record = wfdb.rdrecord(path, channels=[channel])
    signal = record.p_signal[:, 0]
    if not np.all(np.isfinite(signal)):
        raise DeviceInputError(f"{args.record}: lead {header.sig_name[channel]} holds invalid (NaN) samples")
    return signal, check_sampling_rate(float(record.fs), args.record)


def run_infer(args: argparse.Namespace) -> dict:
    """Quality first: beats get classes, and the strip a heart rate and burdens, only inside usable stretches."""
    manifest = Manifest.read(Path(args.model) / "manifest.json")
    signal, fs = read_strip(args)
    strip = classify_strip(signal, fs, manifest.beat_spec, load_classifier(args.model))
    quality = strip.quality
    result = {"quality": quality.as_dict(), "unreadable": quality.unreadable, "summary": None, "beats": []}
    if quality.unreadable:
        return result
    result["summary"] = rhythm_summary(strip.r_samples[quality.usable_beats(strip.r_samples, fs)], fs, strip.classes, strip.af_like)
    result["beats"] = [{"r_sample": int(strip.r_samples[i]), "class": CLASS_NAMES[c]} for i, c in zip(strip.classified, strip.classes)]
    return result


def run_train(args: argparse.Namespace) -> dict:
    """Local epochs on the device's labelled strip, then a compressed update payload."""
    require_global(args.model, "federated training")
    model_dir = Path(args.model)
    manifest = Manifest.read(model_dir / "manifest.json")
    model = TrainableModel(model_dir / "model_train.tflite")
    data = LocalData.load(args.data, manifest.beat_spec)
    global_weights = np.load(args.global_weights).astype(np.float32) if args.global_weights else model.get_weights()
    if global_weights.size != manifest.parameters:
        raise DeviceInputError(f"{args.global_weights}: {global_weights.size} weights, the model has {manifest.parameters}")
    config = LocalTrainingConfig(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate, seed=args.seed)
    update, losses = train_locally(
        model, global_weights, beat=data.beat, log_rr=data.log_rr, label=data.label,
        class_weights=np.array(manifest.class_weights, np.float32), config=config,
    )
    state = Path(args.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    feedback = load_feedback(state / "residual.npz", update.size, manifest.layout_hash)
    body = feedback.encode(args.codec, update, args.seed)
    save_weights(state / "residual.npz", feedback.residual, manifest.layout_hash)
    payload = pack(Payload(args.codec, args.round, manifest.model_version, manifest.layout_hash, args.seed, update.size, body), update_key(args.token))
    Path(args.out).write_bytes(payload)
    return {"beats": len(data), "steps": len(losses), "loss_first": losses[0], "loss_last": losses[-1], "payload_bytes": len(payload), "codec": args.codec}


def run_personalize(args: argparse.Namespace) -> dict:
    """Fine-tune the global export on the wearer's labelled first minutes; write the personal model
    only when everything succeeded (the previous one stays otherwise)."""
    started = time.perf_counter()
    require_global(args.model, "personalisation")
    model_dir = Path(args.model)
    manifest = Manifest.read(model_dir / "manifest.json")
    if tuple(manifest.class_names) != CLASS_NAMES:
        raise DeviceInputError(f"{model_dir}: classes {manifest.class_names}, this runtime labels beats {CLASS_NAMES}")
    model = TrainableModel(model_dir / "model_train.tflite")
    global_weights = model.get_weights()
    if global_weights.size != manifest.parameters:
        raise DeviceInputError(f"{model_dir}: model_train.tflite has {global_weights.size} weights, its manifest's layout {manifest.parameters}")
    data = LocalData.load(args.data, manifest.beat_spec)
    given = {"max_epochs": args.epochs, "learning_rate": args.learning_rate, "moving_layers": args.moving_layers, "unseen_classes": args.unseen_classes,
             "keep": args.keep}
    recipe = PersonalizationRecipe(**{name: value for name, value in given.items() if value is not None})
    result = personalize(model, global_weights, data, base_class_weights=np.array(manifest.class_weights, np.float32), layout=manifest.layout, recipe=recipe)
    record = write_personal_model(args.out, model_dir, data, recipe, result)
    return {"out": str(args.out), **record["outcome"], "base_model_version": record["base_model_version"], "beats": len(data),
            "seconds": round(time.perf_counter() - started, 2), "peak_rss_mb": peak_rss_mb()}


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, not getrusage: after fork + exec Linux
    reports the parent's peak in ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run_selftest(args: argparse.Namespace) -> dict:
    """A few SGD steps on the shipped sample beats, and an exact weights round trip."""
    model = TrainableModel(args.model)
    sample = np.load(SAMPLE_BEATS)
    start = model.get_weights()
    config = LocalTrainingConfig(epochs=args.epochs, batch_size=32, learning_rate=0.05)
    _, losses = train_locally(
        model, start, beat=sample["beat"], log_rr=sample["log_rr"], label=sample["label"],
        class_weights=np.ones(len(CLASS_NAMES), np.float32), config=config,
    )
    trained = model.get_weights()
    model.set_weights(start)
    roundtrip = bool(np.array_equal(model.get_weights(), start)) and not np.array_equal(trained, start)
    per_epoch = len(losses) // args.epochs
    return {
        "tensorflow_imported": any(name.split(".")[0] in ("tensorflow", "keras") for name in sys.modules),
        "steps": len(losses),
        "loss_first": float(np.mean(losses[:per_epoch])),  # epoch means: single batches are too noisy to compare
        "loss_last": float(np.mean(losses[-per_epoch:])),
        "weights_roundtrip_exact": roundtrip,
        "peak_rss_mb": peak_rss_mb(),
    }


def run_join(args: argparse.Namespace) -> dict:
    from edge_runtime.join import main_join  # grpcio is needed for this command only

    return main_join(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m edge_runtime", description="fedbeat on the device: numpy + tflite-runtime.")
    commands = parser.add_subparsers(dest="command", required=True)
    infer = commands.add_parser("infer", help="classify the beats of a raw single-lead ECG strip")
    infer.add_argument("--model", required=True, help="directory written by `fedbeat export`")
    source = infer.add_mutually_exclusive_group(required=True)
    source.add_argument("--ecg", help="strip as a 1-D .npy in mV")
    source.add_argument("--record", help="WFDB record path without extension (needs wfdb)")
    infer.add_argument("--fs", type=float, help="sampling rate of --ecg in Hz (100-5000)")
    infer.add_argument("--lead", help="channel of --record (default: MLII, else the first ECG channel)")
    infer.set_defaults(handler=run_infer)
    train = commands.add_parser("train", help="local epochs on labelled strips, then a compressed update payload")
    train.add_argument("--model", required=True)
    train.add_argument("--data", required=True, help=".npz with signal (mV), fs, r_samples and AAMI labels")
    train.add_argument("--global-weights", help=".npy flat float32 weights from the server (default: the model's)")
    train.add_argument("--epochs", type=int, default=3)
    train.add_argument("--batch-size", type=int, default=32)
    train.add_argument("--learning-rate", type=float, default=0.2)
    train.add_argument("--codec", choices=sorted(CODECS), default="rotated1bit")
    train.add_argument("--round", type=int, default=0)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--token", required=True, help="this device's token: the payload is signed with the key derived from it")
    train.add_argument("--state-dir", default="fedbeat_state", help="the error-feedback residual persists here")
    train.add_argument("--out", required=True, help="payload file to write")
    train.set_defaults(handler=run_train)
    personal = commands.add_parser("personalize", help="fine-tune the global model on the wearer's labelled first minutes")
    personal.add_argument("--model", required=True, help="the global export (a `fedbeat export` directory)")
    personal.add_argument("--data", required=True, help=".npz of the wearer's labelled beats (beat, log_rr, label) or strip (signal, fs, r_samples, labels), in time order")
    personal.add_argument("--out", required=True, help="personal model directory (a link switched atomically); use it as `infer --model OUT`")
    personal.add_argument("--epochs", type=int, help=f"most epochs (default {PersonalizationRecipe.max_epochs}; the held-back beats pick fewer)")
    personal.add_argument("--learning-rate", type=float, help=f"default {PersonalizationRecipe.learning_rate}")
    personal.add_argument("--moving-layers", choices=["all", "dense", "logits"], help=f"which layers change (default {PersonalizationRecipe.moving_layers})")
    personal.add_argument("--unseen-classes", choices=list(UNSEEN_CLASSES),
                          help=f"a class the labelled minutes lack: {'; '.join(f'{k}: {v}' for k, v in UNSEEN_CLASSES.items())} (default {PersonalizationRecipe.unseen_classes})")
    personal.add_argument("--keep", choices=list(KEEP_RULES),
                          help=f"when the personal model replaces the global one: {'; '.join(f'{k}: {v}' for k, v in KEEP_RULES.items())} (default {PersonalizationRecipe.keep})")
    personal.add_argument("--json", action="store_true", help="(output is always one JSON line)")
    personal.set_defaults(handler=run_personalize)
    join = commands.add_parser("join", help="take part in federated rounds of a `fedbeat serve` coordinator (needs grpcio)")
    join.add_argument("--server", required=True, metavar="HOST:PORT")
    join.add_argument("--token", required=True, help="this device's token, issued by the coordinator's operator")
    join.add_argument("--data", required=True, help=".npz of labelled beats (beat, log_rr, label) or a strip (signal, fs, r_samples, labels)")
    join.add_argument("--tls-ca", help="the coordinator's PEM certificate (or its CA): the only one this device trusts")
    join.add_argument("--insecure", action="store_true", help="plaintext, for a coordinator on loopback in tests")
    join.add_argument("--state-dir", help="where the downloaded model is kept (default: a temporary directory)")
    join.add_argument("--max-rounds", type=int, help="stop after this many uploads (default: until the coordinator is done)")
    join.set_defaults(handler=run_join)
    selftest = commands.add_parser("selftest", help="train a few steps on built-in sample beats")
    selftest.add_argument("--model", required=True, help="model_train.tflite")
    selftest.add_argument("--epochs", type=int, default=2)
    selftest.add_argument("--json", action="store_true")
    selftest.set_defaults(handler=run_selftest)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = args.handler(args)
    except (DeviceInputError, PayloadError, OSError, ValueError, RuntimeError) as error:
        print(f"edge_runtime: error: {error}", file=sys.stderr)
        return 2
    try:
        print(json.dumps(result), flush=True)
    except BrokenPipeError:
        silence_stdout()
        return 0
    return 0 if args.command != "selftest" or (result["weights_roundtrip_exact"] and not result["tensorflow_imported"]) else 1


if __name__ == "__main__":
    sys.exit(main())
