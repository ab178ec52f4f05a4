"""AAMI EC57 beat-classification metrics, numpy only.

Accuracy is dominated by N (~90 % of beats), so the numbers that matter are per-class
sensitivity (recall) and positive predictive value (precision), and macro-F1 over the
four classes with enough test beats (N, S, V, F; Q has 7 beats in DS2), counting only
those present in the test set (the synthetic generator makes no F beats).
"""
from __future__ import annotations

import numpy as np

from edge_runtime.aami import CLASS_NAMES, NUM_CLASSES

MACRO_CLASSES = ("N", "S", "V", "F")


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """int64[5, 5], rows true class, columns predicted class."""
    index = np.asarray(labels, np.int64) * NUM_CLASSES + np.asarray(predictions, np.int64)
    return np.bincount(index, minlength=NUM_CLASSES**2).reshape(NUM_CLASSES, NUM_CLASSES)


def classification_report(labels: np.ndarray, predictions: np.ndarray) -> dict:
    """{"accuracy", "macro_f1", "per_class": {name: {sensitivity, ppv, f1, support}}, "confusion"}."""
    matrix = confusion_matrix(labels, predictions)
    true_positive = np.diag(matrix).astype(np.float64)
    support, predicted = matrix.sum(axis=1), matrix.sum(axis=0)
    sensitivity = np.divide(true_positive, support, out=np.zeros(NUM_CLASSES), where=support > 0)
    ppv = np.divide(true_positive, predicted, out=np.zeros(NUM_CLASSES), where=predicted > 0)
    f1 = np.divide(2 * sensitivity * ppv, sensitivity + ppv, out=np.zeros(NUM_CLASSES), where=(sensitivity + ppv) > 0)
    per_class = {
        name: {"sensitivity": float(sensitivity[i]), "ppv": float(ppv[i]), "f1": float(f1[i]), "support": int(support[i])}
        for i, name in enumerate(CLASS_NAMES)
    }
    return {
        "accuracy": float(true_positive.sum() / max(matrix.sum(), 1)),
        "macro_f1": float(np.mean([per_class[n]["f1"] for n in MACRO_CLASSES if per_class[n]["support"] > 0] or [0.0])),
        "per_class": per_class,
        "confusion": matrix.tolist(),
    }


def per_record_report(labels: np.ndarray, predictions: np.ndarray, patient: np.ndarray, names: tuple[str, ...]) -> dict:
    """{person: {"S"|"V": {support, sensitivity, ppv, called}}}: where the errors are, person by
    person (one DS2 record holds most S beats; a pooled number hides who is missed). ``called``
    (beats called that class) makes the counts poolable over any group of people."""
    report = {}
    for index, name in enumerate(names):
        mine = patient == index
        mine_report = classification_report(labels[mine], predictions[mine])
        rows, called = mine_report["per_class"], np.sum(mine_report["confusion"], axis=0)
        report[name] = {c: {**{k: rows[c][k] for k in ("support", "sensitivity", "ppv")}, "called": int(called[CLASS_NAMES.index(c)])} for c in ("S", "V")}
    return report


def pooled_f1(per_record: dict, people: list[str], name: str) -> float:
    """F1 of class ``name`` pooled over ``people``'s beats, from ``per_record_report``'s counts."""
    rows = [per_record[p][name] for p in people]
    true_positive = sum(round(r["sensitivity"] * r["support"]) for r in rows)
    support, called = sum(r["support"] for r in rows), sum(r["called"] for r in rows)
    return 2 * true_positive / (support + called) if support + called else 0.0


def format_report(report: dict) -> str:
    """A short table of the report for the terminal."""
    lines = [f"{'class':<6}{'support':>9}{'Se':>8}{'+P':>8}{'F1':>8}"]
    for name, row in report["per_class"].items():
        lines.append(f"{name:<6}{row['support']:>9,}{row['sensitivity']:>8.3f}{row['ppv']:>8.3f}{row['f1']:>8.3f}")
    lines.append(f"accuracy {report['accuracy']:.3f}   macro-F1 (N,S,V,F) {report['macro_f1']:.3f}")
    return "\n".join(lines)
