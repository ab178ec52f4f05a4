"""AAMI EC57 metrics against a hand-counted confusion matrix."""
from __future__ import annotations

import numpy as np
import pytest

from simulation.metrics import classification_report, confusion_matrix, format_report, per_record_report, pooled_f1


def test_per_class_sensitivity_ppv_f1_by_hand():
    # Prepare: 6 N (1 called S), 3 S (2 right, 1 called N), 2 V (both right), 1 F called V
    labels = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 3])
    predicted = np.array([0, 0, 0, 0, 0, 1, 1, 1, 0, 2, 2, 2])
    # Execute
    report = classification_report(labels, predicted)
    # Assert
    n, s, v, f = (report["per_class"][k] for k in "NSVF")
    assert (n["sensitivity"], n["ppv"]) == pytest.approx((5 / 6, 5 / 6))
    assert (s["sensitivity"], s["ppv"]) == pytest.approx((2 / 3, 2 / 3))
    assert (v["sensitivity"], v["ppv"], v["f1"]) == pytest.approx((1.0, 2 / 3, 0.8))
    assert (f["sensitivity"], f["f1"], f["support"]) == (0.0, 0.0, 1)
    assert report["accuracy"] == pytest.approx(9 / 12)
    assert report["macro_f1"] == pytest.approx(np.mean([5 / 6, 2 / 3, 0.8, 0.0]))
    assert report["confusion"][3][2] == 1
    assert "macro-F1" in format_report(report)


def test_macro_f1_skips_classes_absent_from_the_test_set():
    report = classification_report(np.array([0, 0, 2]), np.array([0, 0, 2]))
    assert report["macro_f1"] == 1.0


def test_confusion_matrix_rows_are_true_classes():
    matrix = confusion_matrix(np.array([1, 1, 4]), np.array([0, 1, 4]))
    assert matrix.shape == (5, 5) and matrix[1, 0] == 1 and matrix[1, 1] == 1 and matrix[4, 4] == 1 and matrix.sum() == 3


def test_per_person_counts_pool_to_the_f1_of_the_joined_beats():
    # Prepare: person a has no S beat but two false S calls; person b 3 S beats, 2 found, and 1 more false S
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 0, 2])
    predicted = np.array([1, 1, 0, 1, 1, 0, 1, 0, 2])
    patient = np.array([0, 0, 0, 1, 1, 1, 1, 1, 1])
    # Execute
    report = per_record_report(labels, predicted, patient, ("a", "b"))
    # Assert: a's false calls count although its S sensitivity and +P are both 0
    assert report["a"]["S"] == {"support": 0, "sensitivity": 0.0, "ppv": 0.0, "called": 2}
    joined = classification_report(labels, predicted)["per_class"]["S"]["f1"]
    assert pooled_f1(report, ["a", "b"], "S") == pytest.approx(joined) == pytest.approx(2 * 2 / (3 + 5))
    assert pooled_f1(report, ["b"], "S") == pytest.approx(2 * 2 / (3 + 3))
    assert pooled_f1(report, ["a"], "V") == 0.0
