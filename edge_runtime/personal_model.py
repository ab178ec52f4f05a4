"""The personal model directory: the export's train model and manifest, the wearer's weights, and why.

DIR/manifest.json        the base (global) model's manifest, unchanged
DIR/model_train.tflite   the base model's train model, unchanged (float inference with the personal weights)
DIR/weights.npy          float32[P], the manifest's weight layout
DIR/personal.json        base model version and hash, data size, recipe, held-back outcome, weights hash

``DIR`` is a symbolic link to a versioned sibling directory, switched with one atomic rename:
a crash or a refused personalisation leaves the previous personal model as it was.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from edge_runtime.aami import class_counts
from edge_runtime.interpreter import Int8Classifier, TrainableModel
from edge_runtime.local_data import LocalData
from edge_runtime.manifest import Manifest
from edge_runtime.personalization import Personalization, PersonalizationRecipe, combined_classes

PERSONAL_FILE = "personal.json"
WEIGHTS_FILE = "weights.npy"
BASE_FILES = ("manifest.json", "model_train.tflite")


class PersonalModelError(ValueError):
    """A personal model directory that is missing, altered, or not where a global export belongs."""


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def sha256_weights(weights: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(weights, np.float32).tobytes()).hexdigest()


def is_personal(model_dir: Path | str) -> bool:
    return (Path(model_dir) / PERSONAL_FILE).is_file()


def require_global(model_dir: Path | str, what: str) -> None:
    """Federated training and personalisation start from the coordinator's global model only."""
    if is_personal(model_dir):
        raise PersonalModelError(f"{model_dir} is a personal model; {what} starts from the global export (`fedbeat export` or the coordinator's model)")


def write_personal_model(out: Path | str, base_dir: Path | str, data: LocalData, recipe: PersonalizationRecipe, result: Personalization) -> dict:
    """Write the directory beside ``out`` under a temporary name, then point ``out`` at it atomically."""
    out, base_dir = Path(out), Path(base_dir)
    if out.exists() and not out.is_symlink():
        raise PersonalModelError(f"{out} exists and is not a personal model written by `personalize`; choose another --out")
    if not np.all(np.isfinite(result.weights)):
        raise PersonalModelError("the personal weights are not finite; nothing written")
    manifest = Manifest.read(base_dir / "manifest.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    weights = np.ascontiguousarray(result.weights, np.float32)
    record = {
        "format": 1,
        "base_model_version": manifest.model_version,
        "base_model_train_sha256": sha256_file(base_dir / "model_train.tflite"),
        "data": {"beats": len(data), "per_class": class_counts(data.label)},
        "recipe": dataclasses.asdict(recipe),
        "outcome": result.as_dict(),
        "weights_sha256": sha256_weights(weights),
    }
    target = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.{record['weights_sha256'][:12]}."))
    try:
        for name in BASE_FILES:
            shutil.copyfile(base_dir / name, target / name)
        np.save(target / WEIGHTS_FILE, weights)
        (target / PERSONAL_FILE).write_text(json.dumps(record, indent=2) + "\n")
        link = out.parent / f".{out.name}.link-{os.getpid()}"
        link.unlink(missing_ok=True)
        link.symlink_to(target.name)
        previous = out.resolve() if out.is_symlink() else None
        os.replace(link, out)  # the one step that switches models
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    if previous is not None and previous != target and previous.parent == out.parent.resolve():
        shutil.rmtree(previous, ignore_errors=True)
    return record


class PersonalClassifier:
    """The personal weights in the float train model beside the global ones, with Int8Classifier's
    ``classes`` interface: the personal call for the classes it learned, the global call otherwise."""

    def __init__(self, model_dir: Path | str):
        model_dir = Path(model_dir)
        record = json.loads((model_dir / PERSONAL_FILE).read_text())
        manifest = Manifest.read(model_dir / "manifest.json")
        if sha256_file(model_dir / "model_train.tflite") != record["base_model_train_sha256"]:
            raise PersonalModelError(f"{model_dir}/model_train.tflite is not the model the personal weights were trained for")
        weights = np.load(model_dir / WEIGHTS_FILE)
        if weights.dtype != np.float32 or weights.size != manifest.parameters or sha256_weights(weights) != record["weights_sha256"]:
            raise PersonalModelError(f"{model_dir}/{WEIGHTS_FILE} does not match {PERSONAL_FILE}")
        self.record = record
        self._global = TrainableModel(model_dir / "model_train.tflite")
        self._personal = TrainableModel(model_dir / "model_train.tflite")
        self._personal.set_weights(weights)
        self._personal_classes = tuple(record["outcome"]["personal_classes"])
        self._unseen_thresholds = record["outcome"].get("unseen_thresholds", {})

    def classes(self, beat: np.ndarray, log_rr: np.ndarray) -> np.ndarray:
        """int64[B] class indices."""
        calls = combined_classes(self._global.probabilities(beat, log_rr), self._personal.probabilities(beat, log_rr), self._personal_classes)
        return calls.astype(np.int64)


def load_classifier(model_dir: Path | str) -> Int8Classifier | PersonalClassifier:
    """What ``infer`` classifies with: the int8 model of an export, or a personal model's weights."""
    model_dir = Path(model_dir)
    return PersonalClassifier(model_dir) if is_personal(model_dir) else Int8Classifier(model_dir / "model_int8.tflite")
