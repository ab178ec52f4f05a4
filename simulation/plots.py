"""PNG plots of a run: metrics over rounds, and the DS2 confusion matrix."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from edge_runtime.aami import CLASS_NAMES  # noqa: E402


def plot_rounds(metrics_jsonl: Path, out_png: Path) -> None:
    """Train loss and reports per round; DS2 macro-F1 and per-class F1 at each evaluation."""
    rows = [json.loads(line) for line in metrics_jsonl.read_text().splitlines() if line]
    fig, (top, middle, bottom) = plt.subplots(3, 1, figsize=(7, 8), sharex=True)
    trained = [r for r in rows if "train_loss" in r]
    top.plot([r["round"] for r in trained], [r["train_loss"] for r in trained], label="train loss (clients)")
    evaluated = [r for r in rows if "eval" in r]
    top.plot([r["round"] for r in evaluated], [r["eval"]["loss"] for r in evaluated], "o-", label="DS2 loss")
    top.set_ylabel("loss")
    top.legend()
    for name in ("N", "S", "V", "F"):
        middle.plot([r["round"] for r in evaluated], [r["eval"]["f1"][name] for r in evaluated], "o-", label=f"F1 {name}")
    middle.plot([r["round"] for r in evaluated], [r["eval"]["macro_f1"] for r in evaluated], "k--", label="macro-F1")
    middle.set_ylabel("DS2 F1")
    middle.set_ylim(0, 1)
    middle.legend(ncol=5, fontsize=8)
    rounds = [r["round"] for r in rows]
    bottom.bar(rounds, [r["reported"] for r in rows], label="reported")
    bottom.bar(rounds, [r["dropped"] for r in rows], bottom=[r["reported"] for r in rows], label="dropped")
    bottom.bar(rounds, [r["late"] for r in rows], bottom=[r["reported"] + r["dropped"] for r in rows], label="late")
    abandoned = [r["round"] for r in rows if r["abandoned"]]
    bottom.plot(abandoned, [0] * len(abandoned), "rx", label="abandoned")
    bottom.set_xlabel("round")
    bottom.set_ylabel("clients")
    bottom.legend(ncol=4, fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    plt.close(fig)


def plot_confusion(confusion: list[list[int]], out_png: Path, title: str) -> None:
    """Row-normalised confusion matrix (sensitivity on the diagonal) with counts."""
    matrix = np.asarray(confusion, dtype=np.float64)
    normalised = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, f"{int(matrix[i, j])}", ha="center", va="center", color="white" if normalised[i, j] > 0.5 else "black", fontsize=8)
    ax.set_xticks(range(len(CLASS_NAMES)), CLASS_NAMES)
    ax.set_yticks(range(len(CLASS_NAMES)), CLASS_NAMES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
