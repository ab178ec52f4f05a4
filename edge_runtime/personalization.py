"""Fine-tune the federated model on one wearer's labelled first minutes, through the `train` signature.

The patient-adaptable protocol (de Chazal and Reilly 2006; AAMI EC57's patient-specific
evaluation): a clinician labels the first minutes of the wearer's recording, the model adapts
to them, and it is used on everything after. The labelled beats are split in time: the
earlier part trains, the last ``held_back_fraction`` (beats the fine-tuning never sees) picks
the epoch and decides whether the personal model is kept at all. When fine-tuning makes more
mistakes on the held-back beats than the global model, the wearer keeps the global model.
A class the labelled minutes never showed (a wearer whose S runs start at minute 20) is called
only where the global model calls it: fine-tuning on minutes without it only teaches the model
that it is rare, and must neither hide the global model's calls of it nor add its own.
With ``unseen_classes="calibrated"``, when the global model called that class on at least
``BIASED_SHARE`` of the labelled beats (all of them something else: a bias for this wearer, such
as AF beats read as S, not one odd beat), its call must also be more confident than any of those;
it can also hide a wearer's real S beats (validation wearer svdb/812), so the default, chosen on
validation people (benchmarks/personalization.py select), is "global".
"""
from __future__ import annotations

import dataclasses

import numpy as np

from edge_runtime.aami import CLASS_NAMES
from edge_runtime.interpreter import TrainableModel
from edge_runtime.local_data import LocalData

MOVING_LAYERS: dict[str, tuple[str, ...] | None] = {
    "all": None,
    "dense": ("rr_dense", "hidden", "logits"),  # the convolutional features stay the federation's
    "logits": ("logits",),
}
"""Which layers fine-tuning may change (None: every layer), by the manifest's weight names."""

BIASED_SHARE = 0.05
"""Share of a wearer's labelled beats falsely called a class that shows the global model is biased for them."""

MIN_BEATS = 60
"""Fewer labelled beats than a minute of rhythm is not enough to adapt to, nor to check the result on."""


UNSEEN_CLASSES = {
    "global": "a class the labelled minutes lack is called where, and only where, the global model calls it",
    "calibrated": f"as global, but where the global model called it on >= {BIASED_SHARE:.0%} of the labelled beats, only above its highest probability of it there",
    "personal": "no exception: the personal model decides every beat",
    "calibrated S": "an absent S as calibrated (S runs often start after the labelled minutes); any other absent class as personal",
}
DECIDED_BY_PERSONAL: dict[str, tuple[str, ...]] = {
    "global": (), "calibrated": (), "personal": CLASS_NAMES, "calibrated S": tuple(c for c in CLASS_NAMES if c != "S"),
}
"""Per ``unseen_classes`` rule, the classes the personal model calls even when the labelled minutes lack them."""
CALIBRATED = ("calibrated", "calibrated S")

KEEP_RULES = {
    "no worse": "the personal model is kept when it misclassifies no more held-back beats than the global model",
    "fewer errors": "only when it misclassifies fewer: a wearer the global model already reads without error keeps it",
}


class PersonalizationError(ValueError):
    """The wearer's data or the fine-tuned weights cannot make a personal model."""


@dataclasses.dataclass(frozen=True)
class PersonalizationRecipe:
    """How a watch fine-tunes; the defaults are the recipe chosen on validation people
    (benchmarks/results/personalization_selection_all_people.json)."""

    max_epochs: int = 30
    learning_rate: float = 0.01
    batch_size: int = 32
    moving_layers: str = "logits"
    class_weight_power: float = 0.5  # the wearer's own class frequencies, to this power, weigh the loss
    held_back_fraction: float = 0.2
    patience: int = 3
    unseen_classes: str = "global"  # a class absent from the labelled minutes: see UNSEEN_CLASSES
    keep: str = "no worse"  # when the personal model replaces the global one: see KEEP_RULES
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise ValueError(f"max_epochs, batch_size and patience must be >= 1, got {self.max_epochs}, {self.batch_size}, {self.patience}")
        if not (0 < self.learning_rate <= 1 and np.isfinite(self.learning_rate)):
            raise ValueError(f"learning_rate must be in (0, 1], got {self.learning_rate}")
        if self.moving_layers not in MOVING_LAYERS:
            raise ValueError(f"moving_layers must be one of {', '.join(MOVING_LAYERS)}, got {self.moving_layers!r}")
        if not 0.05 <= self.held_back_fraction <= 0.5:
            raise ValueError(f"held_back_fraction must be in [0.05, 0.5], got {self.held_back_fraction}")
        if self.unseen_classes not in UNSEEN_CLASSES:
            raise ValueError(f"unseen_classes must be one of {', '.join(UNSEEN_CLASSES)}, got {self.unseen_classes!r}")
        if self.keep not in KEEP_RULES:
            raise ValueError(f"keep must be one of {', '.join(KEEP_RULES)}, got {self.keep!r}")
        if self.class_weight_power < 0:
            raise ValueError(f"class_weight_power must be >= 0, got {self.class_weight_power}")


@dataclasses.dataclass(frozen=True)
class Personalization:
    """The outcome: the weights the wearer gets and why (``kept`` is "personal" or "global");
    ``personal_classes``: the classes the personal model may call (the others keep the global call);
    ``unseen_thresholds``: per class outside them, the probability a global call must exceed to stand."""

    weights: np.ndarray
    personal_classes: tuple[str, ...]
    unseen_thresholds: dict[str, float]
    kept: str
    epochs: int
    fit_beats: int
    held_back_beats: int
    held_back_errors_global: int
    held_back_errors_personal: int

    def as_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "weights"}


def moving_mask(layout: tuple[tuple[str, tuple[int, ...]], ...], moving_layers: str) -> np.ndarray | None:
    """bool[P] over the flat weights, True where fine-tuning may change a weight (None: all)."""
    layers = MOVING_LAYERS[moving_layers]
    if layers is None:
        return None
    parts = [np.full(int(np.prod(shape)), name.split("/")[0] in layers) for name, shape in layout]
    return np.concatenate(parts)


def wearer_class_weights(label: np.ndarray, base_weights: np.ndarray, power: float) -> np.ndarray:
    """Inverse frequency of the wearer's own classes to ``power``, mean 1 over the wearer's beats;
    classes the federation does not train (base weight 0) stay 0."""
    counts = np.bincount(label, minlength=base_weights.size).astype(np.float64)
    weights = np.where((counts > 0) & (base_weights > 0), (counts.sum() / np.maximum(counts, 1)) ** power, 0.0)
    mean = float((weights * counts).sum() / max(counts.sum(), 1))
    return (weights / mean if mean > 0 else weights).astype(np.float32)


def combined_classes(
    global_probabilities: np.ndarray, personal_probabilities: np.ndarray, personal_classes: tuple[str, ...], unseen_thresholds: dict[str, float] | None = None
) -> np.ndarray:
    """The personal model's best class among ``personal_classes`` (names), except where the global
    model calls a class outside them: there the global call stands, unless its probability is at or
    below that class's ``unseen_thresholds`` entry. So a class outside ``personal_classes`` is called
    only where the global model calls it: fine-tuning cannot add alarms of a class the wearer never showed."""
    global_calls = global_probabilities.argmax(axis=1)
    personal = np.isin(CLASS_NAMES, personal_classes)
    personal_calls = np.where(personal, personal_probabilities, -np.inf).argmax(axis=1)
    doubted = np.zeros(global_calls.shape, bool)
    for name, threshold in (unseen_thresholds or {}).items():
        c = CLASS_NAMES.index(name)
        doubted |= (global_calls == c) & (global_probabilities[:, c] <= threshold)
    return np.where(personal[global_calls] | doubted, personal_calls, global_calls)


def unseen_thresholds(global_probabilities: np.ndarray, classes: tuple[str, ...]) -> dict[str, float]:
    """Per class of ``classes`` the global model calls on >= BIASED_SHARE of these beats (known not
    to be of it), its highest probability of that class on them."""
    calls = global_probabilities.argmax(axis=1)
    return {name: float(global_probabilities[:, c].max()) for name in classes
            if np.mean(calls == (c := CLASS_NAMES.index(name))) >= BIASED_SHARE}


def count_errors(predicted: np.ndarray, label: np.ndarray, trained: np.ndarray) -> int:
    """Misclassified beats among classes the model is trained on (``trained``: bool per class)."""
    return int(np.sum((predicted != label) & trained[label]))


def held_back_loss(probabilities: np.ndarray, label: np.ndarray, class_weights: np.ndarray) -> float:
    """Weighted cross-entropy of the held-back beats' predicted probabilities: the early-stopping criterion."""
    picked = np.clip(probabilities[np.arange(label.size), label], 1e-7, 1.0)
    weight = class_weights[label]
    return float(np.sum(-np.log(picked) * weight) / max(float(weight.sum()), 1e-12))


def split_in_time(data: LocalData, held_back_fraction: float) -> tuple[LocalData, LocalData]:
    """(earlier beats to train on, the last ones to check on): beats are in recording order."""
    if len(data) < MIN_BEATS:
        raise PersonalizationError(f"{len(data)} labelled beats; personalisation needs at least {MIN_BEATS} (about a minute)")
    cut = int(round(len(data) * (1.0 - held_back_fraction)))
    return data.rows(slice(0, cut)), data.rows(slice(cut, None))


def personalize(
    model: TrainableModel,
    global_weights: np.ndarray,
    data: LocalData,
    *,
    base_class_weights: np.ndarray,
    layout: tuple[tuple[str, tuple[int, ...]], ...],
    recipe: PersonalizationRecipe = PersonalizationRecipe(),
) -> Personalization:
    """Fine-tune from ``global_weights``; the epoch with the lowest held-back loss wins, and it is
    kept only if it misclassifies no more held-back beats than the global model does (``keep="fewer
    errors"``: fewer)."""
    if np.any((data.label < 0) | (data.label >= base_class_weights.size)):
        raise PersonalizationError(f"labels must be class indices 0..{base_class_weights.size - 1}")
    fit, held = split_in_time(data, recipe.held_back_fraction)
    base_class_weights = np.asarray(base_class_weights, np.float32)
    weights = wearer_class_weights(data.label, base_class_weights, recipe.class_weight_power)
    trained = base_class_weights > 0
    if not trained[fit.label].any():
        raise PersonalizationError("none of the labelled beats is of a class the model is trained on")
    mask = moving_mask(layout, recipe.moving_layers)
    seen = np.bincount(data.label, minlength=trained.size) > 0
    personal_classes = tuple(name for name, on in zip(CLASS_NAMES, seen) if on or name in DECIDED_BY_PERSONAL[recipe.unseen_classes])
    model.set_weights(global_weights)
    unseen = tuple(name for name, t in zip(CLASS_NAMES, trained) if t and name not in personal_classes)
    thresholds = unseen_thresholds(model.probabilities(fit.beat, fit.log_rr), unseen) if recipe.unseen_classes in CALIBRATED else {}
    global_held = model.probabilities(held.beat, held.log_rr)
    global_errors = count_errors(global_held.argmax(axis=1), held.label, trained)
    best_loss, best_epoch, best, best_held = held_back_loss(global_held, held.label, weights), 0, np.asarray(global_weights, np.float32), global_held
    rng = np.random.default_rng(recipe.seed)
    beat_weight = weights[fit.label]
    for epoch in range(1, recipe.max_epochs + 1):
        order = rng.permutation(len(fit))
        for start in range(0, order.size, recipe.batch_size):
            batch = order[start : start + recipe.batch_size]
            model.train_step(fit.beat[batch], fit.log_rr[batch], fit.label[batch], beat_weight[batch], learning_rate=recipe.learning_rate)
            if mask is not None:
                model.set_weights(np.where(mask, model.get_weights(), global_weights))
        current = model.get_weights()
        current_held = model.probabilities(held.beat, held.log_rr)
        loss = held_back_loss(current_held, held.label, weights)
        if not (np.all(np.isfinite(current)) and np.isfinite(loss)):
            raise PersonalizationError(f"fine-tuning diverged at epoch {epoch} (non-finite weights or loss); lower the learning rate")
        if loss < best_loss:
            best_loss, best_epoch, best, best_held = loss, epoch, current, current_held
        elif epoch - best_epoch >= recipe.patience:
            break
    model.set_weights(best)
    personal_errors = count_errors(combined_classes(global_held, best_held, personal_classes, thresholds), held.label, trained)
    keep = best_epoch > 0 and (personal_errors < global_errors if recipe.keep == "fewer errors" else personal_errors <= global_errors)
    return Personalization(
        weights=best if keep else np.asarray(global_weights, np.float32), kept="personal" if keep else "global", epochs=best_epoch,
        personal_classes=personal_classes, unseen_thresholds=thresholds if keep else {},
        fit_beats=len(fit), held_back_beats=len(held), held_back_errors_global=global_errors, held_back_errors_personal=personal_errors,
    )
