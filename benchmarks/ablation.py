"""Which input and loss choices help, measured on validation people only (DS2 is never opened).

Each variant trains the beat classifier centrally (a cheap proxy: 2 epochs, seconds per fold) on
DS1 minus one fold of DS1 people plus the svdb people, and scores the held-out fold as whole
people; all 5 folds, so each change is judged on every DS1 person once. One change at a time
against the variant above it. The federated runs (benchmarks/selection.py, mitdb_reference.py)
then confirm the chosen configuration.

Usage: python benchmarks/ablation.py [--data-dir DIR] [--svdb DIR] [--nstdb DIR] [--epochs 2] [--only NAME ...] [--all-people SEEDS]
Writes benchmarks/results/ablation.json (per variant, per fold and mean +- std of S/V F1, macro-F1, and S F1 and
macro-F1 with the watch's AF gate after the model: S_f1_gated);
with --all-people, ablation_all_people.json (svdb people in the folds too, pooled, per seed).
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import tensorflow as tf
import wfdb

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from datasets.af_surrogate import SurrogateConfig, surrogate_af  # noqa: E402
from datasets.beat_table import BeatTable, extract_beats  # noqa: E402
from datasets.loading import load_people, load_split  # noqa: E402
from datasets.noise_stress import mix_noise  # noqa: E402
from datasets.records import EcgRecord, read_record  # noqa: E402
from edge_runtime.aami import classes_of  # noqa: E402
from edge_runtime.filters import bandpass_resample  # noqa: E402
from datasets.splits import default_mitdb_dir, shared_database_dir  # noqa: E402
from edge_runtime.beats import RR_FEATURE_NAMES, BeatSpec, rr_model_input  # noqa: E402
from models.beat_classifier import WeightedCrossEntropy, build_beat_classifier, class_weights  # noqa: E402
from edge_runtime.rhythm import without_s_in_fibrillation  # noqa: E402
from simulation.beat_data import fibrillation_beats, irregularity_by_person  # noqa: E402
from simulation.metrics import classification_report  # noqa: E402
from simulation.runner import validation_people  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
FOLDS = 5


@dataclasses.dataclass(frozen=True)
class Variant:
    """One configuration: how beats are cut, which channels the model sees, who trains, the loss."""

    spec: BeatSpec = BeatSpec()
    template_channel: bool = True
    extra_people: bool = True
    class_weight_power: float = 0.5
    noise_copies: bool = False  # each training person also as a noisy recording (nstdb em/ma/bw at 6-18 dB)
    rr_ratios_only: bool = False  # the model sees RR ratios only, not the intervals in seconds
    focal_gamma: float = 0.0  # > 0: focal loss (Lin et al. 2017) instead of the weighted cross entropy
    width: int = 1  # models.beat_classifier's width multiplier (2: ~37k parameters, still under 50k)
    irregularity_input: bool = False  # the RR irregularity around the beat (edge_runtime.rhythm) in place of local_rr_s
    af_surrogate: SurrogateConfig | None = None  # each training person also in atrial fibrillation or flutter (datasets.af_surrogate), beats N


RECORD_BASELINE = BeatSpec(rr_average_beats=100)  # the previous RR baseline: +-100 beats of a 30-minute record
VARIANTS = {
    "beat only, record-long RR baseline (previous model)": Variant(spec=RECORD_BASELINE, template_channel=False),
    "+ wearer-template channel": Variant(spec=RECORD_BASELINE),
    "+ strip-sized RR baseline (+-15 beats; chosen)": Variant(),
    "chosen, without svdb people": Variant(extra_people=False),
    "chosen, class weights power 1 (full inverse frequency)": Variant(class_weight_power=1.0),
    "chosen + nstdb noise copies of training people": Variant(noise_copies=True),
    "chosen, RR ratios only (no intervals in seconds)": Variant(rr_ratios_only=True),
    "chosen, focal loss (gamma 2)": Variant(focal_gamma=2.0),
    "chosen, twice as wide (~37k parameters)": Variant(width=2),
    "chosen + AF/flutter surrogates of training people": Variant(af_surrogate=SurrogateConfig()),
    "chosen + AF/flutter surrogates, 2 minutes a person": Variant(af_surrogate=SurrogateConfig(minutes=2.0)),
    "chosen + AF surrogates (no flutter)": Variant(af_surrogate=SurrogateConfig(flutter_share=0.0)),
    "chosen + RR-irregularity input": Variant(irregularity_input=True),
    "chosen + RR-irregularity input + AF/flutter surrogates": Variant(irregularity_input=True, af_surrogate=SurrogateConfig()),
}
NOISY = "+noise"
SURROGATE = "+af"
SNR_RANGE_DB = (6.0, 18.0)
Alteration = Callable[[EcgRecord, np.random.Generator], "EcgRecord | None"]


def altered_people(directory: Path, names: list[str], spec: BeatSpec, alter: Alteration, suffix: str, *, seed: int, prefix: str = "") -> BeatTable:
    """Each record's person once more as ``alter`` makes them (one generator, seeded once, through the
    list), as the person ``<prefix><name><suffix>``; a record ``alter`` cannot use is left out."""
    rng = np.random.default_rng(seed)
    tables = []
    for name in names:
        altered = alter(read_record(directory / name), rng)
        if altered is not None:
            tables.append(dataclasses.replace(extract_beats(altered, spec), patients=(f"{prefix}{name}{suffix}",)))
    return BeatTable.concatenate(tables)


def nstdb_noise(nstdb: Path) -> Alteration:
    """The record with one of nstdb's em/ma/bw noises throughout at an SNR drawn from SNR_RANGE_DB
    (nst's scale): the same beats, as a moving wearer records them."""
    noises = {n: wfdb.rdrecord(str(nstdb / n), channels=[0]).p_signal[:, 0] for n in ("em", "ma", "bw")}

    def add_noise(record: EcgRecord, rng: np.random.Generator) -> EcgRecord:
        noise = noises[rng.choice(sorted(noises))]
        noise = bandpass_resample(noise, 360.0, record.fs_hz, band_hz=(0.0, 0.45 * record.fs_hz)) if record.fs_hz != 360.0 else noise
        noise = np.roll(noise, int(rng.integers(noise.size)))
        beats = record.ann_samples[classes_of(record.ann_symbols) >= 0]
        return dataclasses.replace(record, signal=mix_noise(record.signal, beats, record.fs_hz, noise, float(rng.uniform(*SNR_RANGE_DB))))

    return add_noise


def inputs(table: BeatTable, variant: Variant) -> tuple[np.ndarray, np.ndarray]:
    """Model inputs; a feature left out is zeros, which is the model without it."""
    beat = table.windows.copy()
    if not variant.template_channel:
        beat[..., 1] = 0.0
    log_rr = rr_model_input(table.rr)
    if variant.rr_ratios_only:
        log_rr[:, [i for i, name in enumerate(RR_FEATURE_NAMES) if name.endswith("_s")]] = 0.0
    if variant.irregularity_input:
        log_rr[:, RR_FEATURE_NAMES.index("local_rr_s")] = np.log(np.maximum(irregularity_by_person(table), 1e-2))
    return beat, log_rr


def train_and_predict(train: BeatTable, test: BeatTable, variant: Variant, *, epochs: int, seed: int) -> np.ndarray:
    """Train centrally on ``train`` and return the predicted class of each ``test`` beat."""
    labels = train.labels.astype(np.int32)
    tf.keras.utils.set_random_seed(seed)
    model = build_beat_classifier(variant.spec, seed=seed, width=variant.width)
    model.compile(tf.keras.optimizers.SGD(0.05, momentum=0.9), loss(variant, labels))
    model.fit(inputs(train, variant), labels, batch_size=64, epochs=epochs, shuffle=True, verbose=0)
    return model.predict(inputs(test, variant), batch_size=4096, verbose=0).argmax(axis=1)


def loss(variant: Variant, labels: np.ndarray) -> tf.keras.losses.Loss:
    """The chosen weighted cross entropy, or the focal loss of a variant that names one."""
    weights = class_weights(labels, power=variant.class_weight_power)
    return FocalCrossEntropy(weights, variant.focal_gamma) if variant.focal_gamma else WeightedCrossEntropy(weights)


class FocalCrossEntropy(WeightedCrossEntropy):
    """Lin et al. 2017: the weighted cross entropy scaled by (1 - p_true) ** gamma, so beats the
    model already gets right (most N beats) count less than the hard ones."""

    def __init__(self, weights: np.ndarray, gamma: float):
        super().__init__(weights, name="focal_cross_entropy")
        self.gamma = gamma

    def call(self, y_true: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        labels = tf.cast(tf.reshape(y_true, [-1]), tf.int32)
        p_true = tf.gather(tf.nn.softmax(logits), labels, batch_dims=1)
        return super().call(y_true, logits) * tf.pow(1.0 - p_true, self.gamma)


def with_copies(train: BeatTable, copies: BeatTable | None) -> BeatTable:
    """``train`` plus the altered copies (noisy, AF surrogate: ``<person><suffix>``) of its people only."""
    if copies is None:
        return train
    return BeatTable.concatenate([train, copies.of_patients({p for p in copies.patients if p.rsplit("+", 1)[0] in train.patients})])


def run_fold(ds1: BeatTable, extra: BeatTable | None, copies: BeatTable | None, held_out: tuple[str, ...], variant: Variant, *, epochs: int, seed: int) -> dict:
    test = ds1.of_patients(held_out)
    train = ds1.of_patients(set(ds1.patients) - set(held_out))
    if variant.extra_people and extra is not None:
        train = BeatTable.concatenate([train, extra])
    train = with_copies(train, copies)
    predictions = train_and_predict(train, test, variant, epochs=epochs, seed=seed)
    report = classification_report(test.labels, predictions)
    per_class = report["per_class"]
    gated = classification_report(test.labels, without_s_in_fibrillation(predictions, fibrillation_beats(test)))
    return {
        "S_f1": per_class["S"]["f1"], "S_sensitivity": per_class["S"]["sensitivity"], "S_ppv": per_class["S"]["ppv"],
        "V_f1": per_class["V"]["f1"], "macro_f1": report["macro_f1"], "S_support": per_class["S"]["support"], "people": list(held_out),
        "S_f1_gated": gated["per_class"]["S"]["f1"], "S_ppv_gated": gated["per_class"]["S"]["ppv"], "macro_f1_gated": gated["macro_f1"],
    }


def pooled_over_all_people(people: BeatTable, copies: BeatTable | None, variant: Variant, *, epochs: int, seed: int) -> dict:
    """DS1 and svdb people dealt together into folds; every person is predicted once by the model
    that did not see them, and the predictions are scored pooled (overall, DS1 people, svdb
    people). 81 people and ~10,000 S beats instead of 4-5 people a fold: a change must show here
    beyond the seed-to-seed spread to count."""
    predictions = np.zeros(len(people), np.int64)
    for held_out in validation_people(people, folds=FOLDS, seed=seed):
        mine = np.isin(people.patient, [people.patients.index(p) for p in held_out])
        train = with_copies(people.of_patients(set(people.patients) - set(held_out)), copies)
        predictions[mine] = train_and_predict(train, people.of_patients(held_out), variant, epochs=epochs, seed=seed)
    extra = np.array(["/" in name for name in people.patients])[people.patient]  # load_people names them <database>/<record>
    gated = without_s_in_fibrillation(predictions, fibrillation_beats(people))
    result = {}
    for group, mask in (("all", np.ones(len(people), bool)), ("DS1 people", ~extra), ("svdb people", extra)):
        report = classification_report(people.labels[mask], predictions[mask])
        result[group] = {"macro_f1": report["macro_f1"], **{f"{c}_{k}": report["per_class"][c][k] for c in ("S", "V") for k in ("f1", "sensitivity", "ppv", "support")}}
        report = classification_report(people.labels[mask], gated[mask])
        result[group].update({"S_f1_gated": report["per_class"]["S"]["f1"], "macro_f1_gated": report["macro_f1"]})
    return result


def altered_copies(variant: Variant, args: argparse.Namespace, ds1: BeatTable, extra: BeatTable | None) -> BeatTable | None:
    """The noisy or AF-surrogate copies of every person a variant asks for (training folds pick theirs)."""
    if not (variant.noise_copies or variant.af_surrogate):
        return None
    people = [(Path(args.data_dir), list(ds1.patients), "", args.seed)]
    if extra is not None:
        people.append((Path(args.svdb), [p.split("/", 1)[1] for p in extra.patients], "svdb/", args.seed + 1))
    if variant.noise_copies:
        alter, suffix = nstdb_noise(Path(args.nstdb)), NOISY
    else:
        alter, suffix = functools.partial(surrogate_af, config=variant.af_surrogate), SURROGATE
    return BeatTable.concatenate([altered_people(d, names, variant.spec, alter, suffix, seed=seed, prefix=prefix) for d, names, prefix, seed in people])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=default_mitdb_dir())
    parser.add_argument("--svdb", default=shared_database_dir("svdb"))
    parser.add_argument("--nstdb", default=shared_database_dir("nstdb"))
    parser.add_argument("--only", action="append", help="run only the variant with this name (others keep their results); repeatable")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--all-people", metavar="SEEDS", help="fold DS1 and svdb people together and score pooled, once per seed "
                        "(comma-separated, e.g. 0,1), into ablation_all_people.json")
    args = parser.parse_args()
    if args.data_dir is None:
        parser.error("MIT-BIH not found: pass --data-dir or set FEDBEAT_DATA")
    if args.all_people and args.svdb is None:
        parser.error("--all-people needs the svdb people: pass --svdb")
    path = RESULTS / ("ablation_all_people.json" if args.all_people else "ablation.json")
    results = json.loads(path.read_text())["variants"] if path.is_file() else {}
    loaded: dict[BeatSpec, tuple[BeatTable, BeatTable | None]] = {}  # variants sharing a beat spec share its tables
    for name, variant in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        if variant.noise_copies and (args.nstdb is None or args.all_people):
            print(f"{name}: skipped, {'nstdb not found' if args.nstdb is None else 'not run with --all-people'}", file=sys.stderr)
            continue
        if variant.spec not in loaded:  # DS1 only: DS2 is not read here
            loaded[variant.spec] = (load_split(args.data_dir, "DS1", spec=variant.spec), load_people(args.svdb, spec=variant.spec) if args.svdb else None)
        ds1, extra = loaded[variant.spec]
        started = time.perf_counter()
        copies = altered_copies(variant, args, ds1, extra)
        if args.all_people:
            people = BeatTable.concatenate([ds1, extra] if variant.extra_people else [ds1])
            seeds = {seed: pooled_over_all_people(people, copies, variant, epochs=args.epochs, seed=int(seed)) for seed in args.all_people.split(",")}
            results[name] = {"variant": dataclasses.asdict(variant), "seeds": seeds}
            for seed, groups in seeds.items():
                print(f"{name}, seed {seed}: " + "; ".join(f"{g} S F1 {r['S_f1']:.3f} (gated {r['S_f1_gated']:.3f}) V F1 {r['V_f1']:.3f} macro {r['macro_f1']:.3f}" for g, r in groups.items()), flush=True)
            continue
        folds = validation_people(ds1, folds=FOLDS, seed=args.seed)
        runs = {str(k): run_fold(ds1, extra, copies, folds[k], variant, epochs=args.epochs, seed=args.seed) for k in range(FOLDS)}
        summary = {key: {"mean": float(np.mean([r[key] for r in runs.values()])), "std": float(np.std([r[key] for r in runs.values()]))}
                   for key in ("S_f1", "V_f1", "macro_f1", "S_f1_gated", "macro_f1_gated")}
        results[name] = {"variant": dataclasses.asdict(variant), "folds": runs, **summary}
        print(f"{name}: S F1 {summary['S_f1']['mean']:.3f}±{summary['S_f1']['std']:.3f}  V F1 {summary['V_f1']['mean']:.3f}  "
              f"macro {summary['macro_f1']['mean']:.3f}  with the AF gate: S F1 {summary['S_f1_gated']['mean']:.3f} macro {summary['macro_f1_gated']['mean']:.3f}  ({time.perf_counter() - started:.0f} s)", flush=True)
    RESULTS.mkdir(exist_ok=True)
    protocol = pooled_over_all_people.__doc__ if args.all_people else __doc__.split("\n\n")[1]
    path.write_text(json.dumps({"protocol": protocol, "epochs": args.epochs, "variants": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
