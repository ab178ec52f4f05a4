"""`fedbeat bench personalize`: the patient-adaptable protocol, global model against each wearer's personal one.

Each wearer's beats of the first ``labelled_s`` seconds are the labels a clinician gives the
watch; everything after is scored, for the global model and the personal model on the same
beats. Personalisation runs exactly as on the watch (edge_runtime.personalization through
the TFLite train signature), and both models' calls pass the watch's AF gate
(edge_runtime.rhythm). Selection scores candidate recipes on validation people of the
training side, each with the global model of a run that never saw them; the report reads DS2.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from datasets.beat_table import BeatTable
from edge_runtime.aami import CLASS_NAMES
from edge_runtime.beats import rr_model_input
from edge_runtime.interpreter import TrainableModel
from edge_runtime.local_data import LocalData
from edge_runtime.manifest import Manifest
from edge_runtime.personalization import KEEP_RULES, UNSEEN_CLASSES, PersonalizationError, PersonalizationRecipe, combined_classes, personalize
from edge_runtime.rhythm import without_s_in_fibrillation
from simulation.beat_data import fibrillation_beats
from simulation.metrics import classification_report

LABELLED_S = 300.0
ECTOPIC = ("S", "V")
HARM = {"f1_drop": 0.05, "min_beats": 10, "false_alarms_per_hour": 5.0}
"""Acceptance: no wearer's S or V F1 (with >= min_beats such beats) drops more than f1_drop, and no
wearer without such beats gains more than false_alarms_per_hour false S or V calls."""


@dataclasses.dataclass(frozen=True)
class WearerOutcome:
    """One wearer's scored beats (after the labelled minutes) under both models."""

    name: str
    labels: np.ndarray
    global_predictions: np.ndarray
    personal_predictions: np.ndarray
    scored_hours: float
    personalization: dict


def wearer_rows(table: BeatTable, index: int) -> np.ndarray:
    """One person's rows of ``table`` in time order."""
    rows = np.flatnonzero(table.patient == index)
    return rows[np.argsort(table.time_s[rows], kind="stable")]


def wearer_split(table: BeatTable, index: int, labelled_s: float) -> tuple[LocalData, LocalData, float]:
    """(labelled first minutes, scored remainder, scored hours) of one person, in time order."""
    rows = wearer_rows(table, index)
    data = LocalData(table.windows[rows], rr_model_input(table.rr[rows]), table.labels[rows].astype(np.int32))
    labelled = table.time_s[rows] < labelled_s
    later_times = table.time_s[rows][~labelled]
    hours = float(later_times.max() - labelled_s) / 3600.0 if later_times.size else 0.0
    return data.rows(labelled), data.rows(~labelled), hours


def personalise_wearers(export: Path, table: BeatTable, recipe: PersonalizationRecipe, *, labelled_s: float = LABELLED_S) -> list[WearerOutcome]:
    """Every person of ``table``: personalise on the labelled minutes, predict the rest with both models."""
    manifest = Manifest.read(export / "manifest.json")
    model = TrainableModel(export / "model_train.tflite")
    global_weights = model.get_weights()
    base_class_weights = np.array(manifest.class_weights, np.float32)
    af_like = fibrillation_beats(table)
    outcomes = []
    for index, name in enumerate(table.patients):
        labelled, later, hours = wearer_split(table, index, labelled_s)
        if not len(later):
            continue  # a recording no longer than the labelled minutes: nothing to score
        fibrillation = af_like[wearer_rows(table, index)][len(labelled):]
        model.set_weights(global_weights)
        global_probabilities = model.probabilities(later.beat, later.log_rr)
        global_calls = without_s_in_fibrillation(global_probabilities.argmax(axis=1), fibrillation)
        try:
            result = personalize(model, global_weights, labelled, base_class_weights=base_class_weights, layout=manifest.layout, recipe=recipe)
        except PersonalizationError as error:  # the watch keeps the global model and says why
            outcomes.append(WearerOutcome(name, later.label, global_calls, global_calls, hours, {"kept": "global", "reason": str(error)}))
            continue
        model.set_weights(result.weights)
        personal = combined_classes(global_probabilities, model.probabilities(later.beat, later.log_rr), result.personal_classes, result.unseen_thresholds)
        outcomes.append(WearerOutcome(name, later.label, global_calls, without_s_in_fibrillation(personal, fibrillation), hours, result.as_dict()))
    return outcomes


def _scores(labels: np.ndarray, predictions: np.ndarray) -> dict:
    per_class = classification_report(labels, predictions)["per_class"]
    return {c: {k: per_class[c][k] for k in ("support", "sensitivity", "ppv", "f1")} for c in ECTOPIC}


def _false_calls(labels: np.ndarray, predictions: np.ndarray, name: str) -> int:
    c = CLASS_NAMES.index(name)
    return int(np.sum((predictions == c) & (labels != c)))


def harms(outcome: WearerOutcome) -> list[str]:
    """Where personalisation hurt this wearer beyond the acceptance bounds (empty: it did not)."""
    found = []
    before, after = _scores(outcome.labels, outcome.global_predictions), _scores(outcome.labels, outcome.personal_predictions)
    for c in ECTOPIC:
        support = before[c]["support"]
        if support >= HARM["min_beats"] and after[c]["f1"] < before[c]["f1"] - HARM["f1_drop"]:
            found.append(f"{c} F1 {before[c]['f1']:.2f} -> {after[c]['f1']:.2f}")
        if support == 0 and outcome.scored_hours > 0:
            extra = _false_calls(outcome.labels, outcome.personal_predictions, c) - _false_calls(outcome.labels, outcome.global_predictions, c)
            if extra / outcome.scored_hours > HARM["false_alarms_per_hour"]:
                found.append(f"{extra / outcome.scored_hours:.1f} more false {c} calls per hour")
    return found


def summarise(outcomes: list[WearerOutcome]) -> dict:
    """Pooled and per-wearer S/V Se, +P, F1 for both models, and every harm found."""
    labels = np.concatenate([o.labels for o in outcomes])
    pooled = {kind: _scores(labels, np.concatenate([getattr(o, f"{kind}_predictions") for o in outcomes])) for kind in ("global", "personal")}
    per_wearer = {
        o.name: {"global": _scores(o.labels, o.global_predictions), "personal": _scores(o.labels, o.personal_predictions),
                 "scored_hours": round(o.scored_hours, 3), "personalization": o.personalization, "harms": harms(o)}
        for o in outcomes
    }
    return {"pooled": pooled, "per_wearer": per_wearer, "harmed_wearers": sorted(n for n, row in per_wearer.items() if row["harms"]),
            "kept_personal": sum(o.personalization.get("kept") == "personal" for o in outcomes), "wearers": len(outcomes)}


def selection_score(summary: dict) -> tuple[int, float]:
    """Fewest harmed wearers first, then the mean of pooled S and V F1."""
    personal = summary["pooled"]["personal"]
    return (-len(summary["harmed_wearers"]), float(np.mean([personal[c]["f1"] for c in ECTOPIC])))


def recipe_grid() -> dict[str, PersonalizationRecipe]:
    """The candidates selection compares: step size, which layers move, whether classes the
    labelled minutes lack keep the global call (always, above a calibrated threshold, never, or per
    class), when the personal model replaces the global one, and (for the plain recipes) how much
    of the labelled minutes is held back to judge it. Rare classes weigh by the wearer's inverse
    frequency to the power 0.5: power 1 had the lower pooled S and V F1 in all 27 pairs of stop
    33's selection, so it is no longer scored."""
    grid = {}
    for keep, unseen, learning_rate, moving in itertools.product(KEEP_RULES, UNSEEN_CLASSES, (0.01, 0.03, 0.1), ("all", "dense", "logits")):
        name = f"lr {learning_rate}, {moving} layers, class weight power 0.5, unseen classes {unseen}" + (", kept on fewer held-back errors" if keep == "fewer errors" else "")
        grid[name] = PersonalizationRecipe(max_epochs=30, learning_rate=learning_rate, moving_layers=moving, class_weight_power=0.5, unseen_classes=unseen, keep=keep)
    for held_back, learning_rate, moving in itertools.product((0.3, 0.4), (0.01, 0.03, 0.1), ("all", "logits")):
        grid[f"lr {learning_rate}, {moving} layers, class weight power 0.5, unseen classes global, held back {held_back}"] = PersonalizationRecipe(
            max_epochs=30, learning_rate=learning_rate, moving_layers=moving, class_weight_power=0.5, unseen_classes="global", held_back_fraction=held_back)
    return grid


def device_cost(export: Path, data: LocalData, python: str) -> dict:
    """Seconds and peak RSS of one `python -m edge_runtime personalize` in ``python`` (the device-only venv)."""
    repo = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "labelled.npz"
        np.savez(path, beat=data.beat, log_rr=data.log_rr, label=data.label)
        run = subprocess.run([python, "-m", "edge_runtime", "personalize", "--model", str(export), "--data", str(path), "--out", f"{scratch}/personal", "--json"],
                             capture_output=True, text=True, cwd=repo, timeout=600, check=False)
    if run.returncode != 0:
        raise RuntimeError(f"device personalisation failed: {run.stderr[-2000:]}")
    report = json.loads(run.stdout)
    return {"python": python, "beats": report["beats"], "seconds": report["seconds"], "peak_rss_mb": report["peak_rss_mb"], "kept": report["kept"]}


def plot_per_wearer(summary: dict, path: Path, title: str) -> None:
    """Per-wearer S and V F1, global (x) against personal (y): points below the diagonal are harm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 5))
    for axis, c in zip(axes, ECTOPIC):
        for name, row in summary["per_wearer"].items():
            if row["global"][c]["support"] >= HARM["min_beats"]:
                x, y = row["global"][c]["f1"], row["personal"][c]["f1"]
                axis.scatter(x, y, color="tab:red" if y < x - HARM["f1_drop"] else "tab:blue")
                axis.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        axis.plot([0, 1], [0, 1], color="grey", linewidth=0.8)
        axis.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), xlabel="global model F1", ylabel="personal model F1",
                 title=f"{c} beats (wearers with >= {HARM['min_beats']})")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def select_recipe(people: BeatTable, fold_exports: dict[int, Path], folds: list[tuple[str, ...]], *, scored: dict | None = None, progress=print) -> dict:
    """Every recipe of the grid on the people of each fold, with that fold's global model (which
    never saw them); the chosen recipe harms fewest wearers, then has the best pooled S and V F1.
    ``scored``: results of an earlier selection on the same folds and fold models, reused for the
    recipes it holds (a grid that grows scores only its new recipes)."""
    results = {}
    for name, recipe in recipe_grid().items():
        earlier = (scored or {}).get(name)
        if earlier is not None and PersonalizationRecipe(**earlier["recipe"]) == recipe:
            results[name] = {**earlier, "recipe": dataclasses.asdict(recipe)}
            continue
        outcomes = [o for k, export in fold_exports.items() for o in personalise_wearers(export, people.of_patients(folds[k]), recipe)]
        summary = summarise(outcomes)
        results[name] = {"recipe": dataclasses.asdict(recipe), "pooled": summary["pooled"], "harmed_wearers": summary["harmed_wearers"],
                         "kept_personal": summary["kept_personal"], "wearers": summary["wearers"], "per_wearer": summary["per_wearer"]}
        personal, harmed = summary["pooled"]["personal"], summary["harmed_wearers"]
        progress(f"{name}: S F1 {personal['S']['f1']:.3f}  V F1 {personal['V']['f1']:.3f}  harmed {len(harmed)} {harmed}")
    chosen = max(results, key=lambda n: selection_score(results[n]))
    return {"chosen": chosen, "recipes": results}


def report(export: Path, ds2: BeatTable, *, seeds: tuple[int, ...] = (0, 1, 2), device_python: str | None = None) -> dict:
    """DS2, read once: the default recipe (the one selection chose) for each seed; the seed-0 table
    per wearer; pooled F1 mean and spread over seeds; the device cost of one personalisation."""
    runs = {seed: summarise(personalise_wearers(export, ds2, dataclasses.replace(PersonalizationRecipe(), seed=seed))) for seed in seeds}
    first = runs[seeds[0]]
    spread = {kind: {c: {"mean": float(np.mean([r["pooled"][kind][c]["f1"] for r in runs.values()])),
                         "std": float(np.std([r["pooled"][kind][c]["f1"] for r in runs.values()]))} for c in ECTOPIC}
              for kind in ("global", "personal")}
    result = {"recipe": dataclasses.asdict(PersonalizationRecipe()), "labelled_s": LABELLED_S, "harm_bounds": HARM,
              "base_model_version": Manifest.read(export / "manifest.json").model_version, "seeds": list(seeds),
              "pooled_f1_over_seeds": spread, "harmed_wearers_per_seed": {str(s): r["harmed_wearers"] for s, r in runs.items()}, **first}
    if device_python:
        busiest = max(range(len(ds2.patients)), key=lambda i: int(np.sum((ds2.patient == i) & (ds2.time_s < LABELLED_S))))
        result["device_cost"] = {"wearer": ds2.patients[busiest], **device_cost(export, wearer_split(ds2, busiest, LABELLED_S)[0], device_python)}
    return result


def format_table(result: dict) -> str:
    """Markdown: per DS2 wearer with S or V beats after the labelled minutes, global -> personal."""
    lines = ["| record | kept | S beats | S F1 global | S F1 personal | V beats | V F1 global | V F1 personal |", "|---|---|---|---|---|---|---|---|"]
    for name, row in result["per_wearer"].items():
        g, p = row["global"], row["personal"]
        if g["S"]["support"] or g["V"]["support"]:
            lines.append(f"| {name} | {row['personalization'].get('kept')} | {g['S']['support']} | {g['S']['f1']:.2f} | {p['S']['f1']:.2f} | "
                         f"{g['V']['support']} | {g['V']['f1']:.2f} | {p['V']['f1']:.2f} |")
    pooled = result["pooled"]
    lines.append(f"| pooled | {result['kept_personal']}/{result['wearers']} personal | {pooled['global']['S']['support']} | {pooled['global']['S']['f1']:.3f} | "
                 f"{pooled['personal']['S']['f1']:.3f} | {pooled['global']['V']['support']} | {pooled['global']['V']['f1']:.3f} | {pooled['personal']['V']['f1']:.3f} |")
    return "\n".join(lines)
