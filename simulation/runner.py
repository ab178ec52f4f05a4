"""`fedbeat simulate`: federated training across simulated watches, evaluated on unseen patients.

Round loop: plan the round (invitations, dropout, stragglers, deadline), run the TFF
learning process on the reporters' data, checkpoint the full process state, evaluate on
DS2 every ``eval_every`` rounds, and log one JSON line per round to ``metrics.jsonl``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
from tqdm import tqdm

from datasets.beat_table import BeatTable
from datasets.loading import load_people, load_split
from datasets.partition import ClientPopulation, partition, population_summary
from edge_runtime.codecs import encode
from edge_runtime.payload import Payload, pack
from models.beat_classifier import WeightedCrossEntropy, build_beat_classifier, class_weights
from models.edge_trainable import weight_layout
from simulation.accounting import ACCOUNTANT, dp_epsilon, noise_for_epsilon
from simulation.algorithms import build_fedadam, build_fedavg, server_optimizer
from simulation.availability import AvailabilityModel
from simulation.beat_data import calls, data_directory, model_inputs, public_reference
from simulation.compression import CompressedMeanFactory
from simulation.config import ConfigError, SimulationConfig
from simulation.privacy import noise_to_signal, private_aggregator, secure_mean_aggregator
from simulation.privacy_config import PrivacyConfig
from simulation.kernels import platform_summary
from simulation.metrics import classification_report, per_record_report
from simulation.model_release import ReleasedModel
from simulation.plots import plot_confusion, plot_rounds
from simulation.resources import peak_rss_mb, rss_mb
from simulation.shards import local_orders, shard_datasets
from simulation.tff_runtime import LocalTffRuntime
from simulation.vectorised import build_vectorised_process

CHECKPOINT = "checkpoint.npz"


def server_class_weights(config: SimulationConfig, train: BeatTable) -> np.ndarray:
    """Loss weights from the pooled training labels, or under DP from public data: pooled labels
    are client data a real server never sees, and un-noised they would leave through the summary."""
    labels = public_reference().labels if config.differential_privacy else train.labels
    return class_weights(labels, power=config.class_weight_power)


def client_dataset(table: BeatTable, beats: np.ndarray, order: np.ndarray, *, batch_size: int) -> tf.data.Dataset:
    """A watch's local batches (plain path): its beats in ``order`` (see ``shards.local_orders``)."""
    index = beats[order]
    beat, log_rr = model_inputs(table, index)
    return tf.data.Dataset.from_tensor_slices(((beat, log_rr), table.labels[index].astype(np.int32))).batch(batch_size)


def model_sha256(weights: list[np.ndarray]) -> str:
    digest = hashlib.sha256()
    for array in weights:
        digest.update(np.ascontiguousarray(array, dtype=np.float32).tobytes())
    return digest.hexdigest()


def evaluate(model: tf.keras.Model, table: BeatTable, weights: np.ndarray) -> dict:
    """Clinical metrics (pooled and per person) and the class-weighted loss on ``table``."""
    logits = model.predict(model_inputs(table), batch_size=4096, verbose=0)
    loss = WeightedCrossEntropy(weights)(table.labels.astype(np.int32), logits)
    predictions = calls(table, logits)
    report = classification_report(table.labels, predictions)
    return {"loss": float(loss), **report, "per_record": per_record_report(table.labels, predictions, table.patient, table.patients)}


@dataclasses.dataclass
class FederatedData:
    """``test`` is DS2, or in tuning mode (``validation_fold``) a fold of the training people."""

    train: BeatTable
    test: BeatTable
    population: ClientPopulation
    audit: dict
    evaluated_on: str


def validation_people(table: BeatTable, *, folds: int, seed: int) -> list[tuple[str, ...]]:
    """The people of ``table`` dealt into ``folds`` folds, S-richest first in turn, so each fold holds S beats."""
    rng = np.random.default_rng([seed, 0xF01D])
    s_beats = np.bincount(table.patient[table.labels == 1], minlength=len(table.patients))
    order = np.lexsort((rng.random(len(table.patients)), -s_beats))
    return [tuple(table.patients[i] for i in sorted(order[k::folds])) for k in range(folds)]


def training_side(directory: str | Path, extra_data_dirs: tuple[str, ...] | list[str]) -> tuple[BeatTable, BeatTable]:
    """(DS1, every training-side person: DS1, then each record of ``extra_data_dirs`` as one more
    person); DS2 is not opened."""
    ds1 = load_split(directory, "DS1")
    return ds1, BeatTable.concatenate([ds1, *(load_people(extra) for extra in extra_data_dirs)])


def validation_fold_people(ds1: BeatTable, train: BeatTable, *, population: str, folds: int, seed: int) -> list[tuple[str, ...]]:
    """The validation folds of ``population``: "ds1" deals the DS1 people (the population DS2
    resembles), "all" every training-side person."""
    return validation_people(train if population == "all" else ds1, folds=folds, seed=seed)


def prepare_data(config: SimulationConfig) -> FederatedData:
    """Training people (DS1 plus every record of ``extra_data_dirs`` as one more person), dealt into
    watches, and who to evaluate on. In tuning mode (``validation_fold``) that is a fold of the DS1
    people, the population DS2 resembles (``validation_population="all"``: of every training-side
    person), and DS2 is never opened; else DS2."""
    directory = data_directory(config)
    ds1, train = training_side(directory, config.extra_data_dirs)
    if config.validation_fold is not None:
        held_out = validation_fold_people(ds1, train, population=config.validation_population, folds=config.validation_folds, seed=config.seed)[config.validation_fold]
        test = train.of_patients(held_out)
        train = train.of_patients(set(train.patients) - set(held_out))
        extra = len(set(held_out) - set(ds1.patients))
        evaluated_on = f"validation fold {config.validation_fold} of {config.validation_folds} ({len(held_out) - extra} DS1 people" + (f", {extra} extra-database people)" if extra else ")")
    else:
        test = load_split(directory, "DS2")
        evaluated_on = "DS2 (test people, never seen in training)"
    partition_config = config.partition_config()
    if config.differential_privacy:  # the privacy unit: one watch per training patient
        patients = len(np.unique(train.patient))
        if config.clients_per_round > patients:
            raise ConfigError(f"with differential privacy each of the {patients} training patients is one client; clients_per_round {config.clients_per_round} is more")
        partition_config = dataclasses.replace(partition_config, clients=patients)
    population = partition(train, partition_config)
    audit = population_summary(population, train, test.patients)
    if audit["test_patients_in_train"]:
        raise ValueError(f"{audit['test_patients_in_train']} evaluation people leaked into training clients")
    return FederatedData(train=train, test=test, population=population, audit=audit, evaluated_on=evaluated_on)


def resolve_privacy(config: SimulationConfig, population: int) -> PrivacyConfig | None:
    """The DP settings with the noise multiplier fixed (from --dp-target-epsilon over the planned rounds if asked)."""
    if not config.differential_privacy:
        return None
    noise = config.dp_noise_multiplier
    if noise is None:
        noise = noise_for_epsilon(
            config.dp_target_epsilon, sampling_rate=config.sampling_rate(population), rounds=config.rounds, delta=config.dp_target_delta,
        )
    return config.privacy_config(noise)


def update_aggregator(config: SimulationConfig, privacy: PrivacyConfig | None):
    """DP (clip, secure or plain sum, noise), secure mean, or None for the path's default mean."""
    if privacy is not None:
        return private_aggregator(privacy, config.clients_per_round)
    if config.secure_aggregation:
        return secure_mean_aggregator()
    return None


def build_process(config: SimulationConfig, loss_weights: np.ndarray, table: BeatTable, privacy: PrivacyConfig | None = None) -> tff.learning.templates.LearningProcess:
    """The configured algorithm on the configured client path, starting from the seeded model."""
    server_lr = config.effective_server_learning_rate
    aggregator = update_aggregator(config, privacy)
    if config.client_path == "vectorised":
        keras_model = build_beat_classifier(seed=config.seed)
        return build_vectorised_process(
            initial_weights=keras_model.get_weights(), names=[name for name, _ in weight_layout(keras_model)],
            loss_weights=loss_weights, client_learning_rate=config.client_learning_rate,
            server_optimizer=server_optimizer(config.algorithm, server_lr, config.server_momentum),
            proximal_strength=config.proximal_strength if config.algorithm == "fedprox" else 0.0,
            codec=config.compression, beat_shape=table.windows.shape[1:], aggregator=aggregator, max_update_norm=config.max_update_norm,
        )
    example = client_dataset(table, np.arange(1), np.zeros(1, np.int64), batch_size=config.batch_size)

    def model_fn() -> tff.learning.models.VariableModel:
        return tff.learning.models.from_keras_model(
            build_beat_classifier(seed=config.seed),
            loss=WeightedCrossEntropy(loss_weights),
            input_spec=example.element_spec,
            metrics=[tf.keras.metrics.SparseCategoricalAccuracy()],
        )

    common = {
        "client_learning_rate": config.client_learning_rate,
        "server_learning_rate": server_lr,
        "model_aggregator": CompressedMeanFactory(config.compression, inner=aggregator) if config.compression else aggregator,
    }
    if config.algorithm == "fedadam":
        return build_fedadam(model_fn, **common)
    return build_fedavg(model_fn, server_momentum=config.server_momentum, **common)


def round_data(config: SimulationConfig, table: BeatTable, population: ClientPopulation, reporters: np.ndarray, round_index: int) -> list[tf.data.Dataset]:
    """The reporters' local data for this round: one dataset per watch, or per shard of watches."""
    beats = [population.client(c) for c in reporters]
    rng = np.random.default_rng([config.seed, round_index, 1])
    orders = local_orders(np.array([len(b) for b in beats]), epochs=config.local_epochs, rng=rng)
    if config.client_path == "vectorised":
        return shard_datasets(table, beats, orders, batch_size=config.batch_size, shard_size=config.effective_shard_size)
    return [client_dataset(table, b, o, batch_size=config.batch_size) for b, o in zip(beats, orders)]


def save_checkpoint(out: Path, round_index: int, state, released: list[np.ndarray]) -> None:
    """The process state and the released model's running average, replaced atomically."""
    partial = out / f".{CHECKPOINT}.{os.getpid()}.tmp.npz"
    arrays = {f"s{i}": np.asarray(a) for i, a in enumerate(tf.nest.flatten(state))}
    arrays.update({f"r{i}": a for i, a in enumerate(released)})
    np.savez(partial, round=np.int64(round_index), **arrays)
    os.replace(partial, out / CHECKPOINT)


def load_checkpoint(out: Path, template_state) -> tuple[int, object, list[np.ndarray]]:
    """(last completed round, state, released-model leaves) from ``out``; the template gives the structure."""
    with np.load(out / CHECKPOINT) as data:
        leaves = [data[f"s{i}"] for i in range(len(tf.nest.flatten(template_state)))]
        released = [data[f"r{i}"] for i in range(sum(k.startswith("r") and k[1:].isdigit() for k in data.files))]
        return int(data["round"]), tf.nest.pack_sequence_as(template_state, leaves), released


def run_simulation(config: SimulationConfig, *, resume: bool = False, progress: bool = True) -> dict:
    """Run ``config.rounds`` rounds; write metrics.jsonl, summary.json and model weights to config.out."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    run_started = time.perf_counter()
    data = prepare_data(config)
    loss_weights = server_class_weights(config, data.train)
    tf.keras.utils.set_random_seed(config.seed)
    availability = AvailabilityModel(config.sampled_availability(len(data.population)), client_sizes=data.population.sizes(), seed=config.seed)
    privacy = resolve_privacy(config, len(data.population))
    sampling_rate = config.sampling_rate(len(data.population))
    if privacy is not None:
        ratio = noise_to_signal(privacy.noise_multiplier, config.clients_per_round, build_beat_classifier(seed=config.seed).count_params())
        if ratio > 1:
            print(
                f"warning: DP noise on the mean update is ~{ratio:.1f}x the largest possible signal (z={privacy.noise_multiplier:.2f}, "
                f"{config.clients_per_round} clients per round): the model will barely learn; use more clients per round",
                file=sys.stderr,
            )
    totals = {"applied": 0, "abandoned": 0, "invited": 0, "reported": 0, "dropped": 0, "late": 0, "surplus": 0}

    with LocalTffRuntime(workers=config.workers, remote=config.worker_addresses, log_path=out / "tff_worker.log") as runtime:
        process = build_process(config, loss_weights, data.train, privacy)
        state = process.initialize()
        # Built after the process: tracing model_fn in TFF's graph invalidates earlier Keras models.
        keras_model = build_beat_classifier(seed=config.seed)
        payload_bytes = upload_bytes(config.compression, keras_model.count_params())
        initial = tff.learning.models.ModelWeights.from_model(keras_model)
        state = process.set_model_weights(state, initial)
        release = ReleasedModel(config.release_decay, initial)
        start_round, metrics_mode = 0, "w"
        if resume and (out / CHECKPOINT).is_file():
            start_round, state, released = load_checkpoint(out, state)
            if released:
                release.restore(released)
            else:  # a checkpoint from before release averaging: the last round's model
                release.update(process.get_model_weights(state))
            metrics_mode = "a"
            _truncate_metrics(out / "metrics.jsonl", start_round)
            totals = _replay_totals(out / "metrics.jsonl", totals)
        evaluation = None
        with open(out / "metrics.jsonl", metrics_mode) as log:
            bar = tqdm(range(start_round + 1, config.rounds + 1), desc="rounds", unit="round", disable=not progress, initial=start_round, total=config.rounds)
            for round_index in bar:
                started = time.perf_counter()
                plan = availability.plan_round(round_index, epochs=config.local_epochs, payload_bytes=payload_bytes)
                record = {"round": round_index, **plan.counts()}
                _count_round(totals, record)
                if not plan.abandoned:
                    output = process.next(state, round_data(config, data.train, data.population, plan.reporters, round_index))
                    state = output.state
                    release.update(process.get_model_weights(state))
                    if privacy is None:  # un-noised client statistics are not released under DP
                        record["train_loss"] = float(output.metrics["client_work"]["train"]["loss"])
                if privacy is not None:
                    record["epsilon"] = dp_epsilon(
                        noise_multiplier=privacy.noise_multiplier, sampling_rate=sampling_rate, rounds=totals["applied"], delta=privacy.target_delta,
                    )
                    record["clip"] = _clip_measurement(output.metrics) if not plan.abandoned else None
                if round_index % config.eval_every == 0 or round_index == config.rounds:
                    release.released().assign_weights_to(keras_model)
                    evaluation = evaluate(keras_model, data.test, loss_weights)
                    record["eval"] = {k: evaluation[k] for k in ("loss", "accuracy", "macro_f1")}
                    record["eval"]["f1"] = {name: row["f1"] for name, row in evaluation["per_class"].items()}
                record["seconds"] = round(time.perf_counter() - started, 3)
                record["rss_mb"] = round(rss_mb(runtime.worker_pids), 1)
                log.write(json.dumps(record) + "\n")
                log.flush()
                save_checkpoint(out, round_index, state, release.leaves())  # after the log line: a kill between them replays the round
                bar.set_postfix(
                    loss=f"{record.get('train_loss', float('nan')):.3f}", rep=f"{plan.reporters.size}/{plan.invited.size}",
                    drop=plan.dropped, late=plan.late, s=f"{record['seconds']:.1f}",
                )
        peak_memory = peak_rss_mb(runtime.worker_pids)
        release.released().assign_weights_to(keras_model)
        if evaluation is None:
            evaluation = evaluate(keras_model, data.test, loss_weights)

    keras_model.save(out / "model.keras")
    summary = {
        "rounds_completed": totals["applied"] + totals["abandoned"],
        "rounds_abandoned": totals["abandoned"],
        "clients_total": len(data.population),
        "clients_per_round": config.clients_per_round,
        "dropout": config.dropout,
        "reports_dropped": totals["dropped"],
        "reports_late": totals["late"],
        "seconds": round(time.perf_counter() - run_started, 1),
        "peak_rss_mb": round(peak_memory, 1),
        "config": dataclasses.asdict(config),
        "population": data.audit,
        "rounds": totals,
        "class_weights": loss_weights.tolist(),
        "evaluated_on": data.evaluated_on,
        "test": evaluation,
        "model_sha256": model_sha256(keras_model.get_weights()),
        "secure_aggregation": config.secure_aggregation,
        "privacy": _privacy_summary(privacy, sampling_rate, totals["applied"], out / "metrics.jsonl"),
        "parameters": int(keras_model.count_params()),
        "platform": platform_summary(),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot_rounds(out / "metrics.jsonl", out / "rounds.png")
    plot_confusion(evaluation["confusion"], out / "confusion.png", f"{config.algorithm}, {data.evaluated_on.split(' (')[0]}")
    return summary


def upload_bytes(codec: str | None, parameters: int) -> int:
    """What one watch uploads per round (stragglers' upload time): the FBUP payload of its codec."""
    if codec is None:
        return 4 * parameters
    body = encode(codec, np.ones(parameters, np.float32), 0)
    return len(pack(Payload(codec, 0, "00" * 8, "00" * 8, 0, parameters, body), key=bytes(32)))


def _truncate_metrics(path: Path, last_round: int) -> None:
    """Drop metric lines written after the checkpoint a resumed run restarts from."""
    if path.is_file():
        lines = [line for line in path.read_text().splitlines() if line and json.loads(line)["round"] <= last_round]
        path.write_text("".join(line + "\n" for line in lines))


def _count_round(totals: dict, record: dict) -> None:
    """Add one round's metrics line to the run totals (live rounds and replayed ones alike)."""
    for key in ("invited", "reported", "dropped", "late", "surplus"):
        totals[key] += record[key]
    totals["abandoned" if record["abandoned"] else "applied"] += 1


def _replay_totals(path: Path, totals: dict) -> dict:
    totals = dict(totals)
    for line in path.read_text().splitlines() if path.is_file() else []:
        _count_round(totals, json.loads(line))
    return totals


def _clip_measurement(metrics) -> float | None:
    """The DP clip norm used this round (adaptive clipping moves it), from the aggregator's measurements."""
    found = [v for path, v in _leaves(metrics) if path.endswith("clip")]
    return float(found[0]) if found else None


def _leaves(tree, prefix: str = ""):
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _leaves(value, f"{prefix}/{key}")
    elif not isinstance(tree, (tuple, list)):
        yield prefix, tree


def _privacy_summary(privacy: PrivacyConfig | None, sampling_rate: float, rounds: int, metrics_path: Path) -> dict | None:
    if privacy is None:
        return None
    clips = [r["clip"] for r in map(json.loads, metrics_path.read_text().splitlines()) if r.get("clip") is not None]
    return {
        "epsilon": dp_epsilon(noise_multiplier=privacy.noise_multiplier, sampling_rate=sampling_rate, rounds=rounds, delta=privacy.target_delta),
        "delta": privacy.target_delta,
        "noise_multiplier": privacy.noise_multiplier,
        "sampling_rate": sampling_rate,
        "rounds": rounds,
        "accountant": ACCOUNTANT,
        "clip": privacy.clip if privacy.clip != "adaptive" else {"mode": "adaptive", "quantile": privacy.clip_quantile, "last": clips[-1] if clips else None},
        "unit": "patient (one watch per DS1 patient)",
    }
