"""`python -m edge_runtime personalize` on a real MIT-BIH wearer: the personal model helps that wearer,
round-trips through `infer`, never replaces the previous one when it fails, and never reaches a
federated update."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from datasets.records import read_record
from edge_runtime.aami import CLASS_NAMES, classes_of
from edge_runtime.interpreter import TrainableModel
from edge_runtime.local_data import LocalData
from edge_runtime.local_training import LocalTrainingConfig, train_locally
from edge_runtime.manifest import Manifest
from edge_runtime.personal_model import PERSONAL_FILE, PersonalClassifier
from edge_runtime.personalization import PersonalizationRecipe, combined_classes, personalize, unseen_thresholds
from edge_runtime.strip import classify_strip
from tests.conftest import device

LABELLED_S = 300.0


def labelled_strip(mitdb: Path, record: str, start_s: float, stop_s: float, path: Path) -> Path:
    """What a clinician hands the watch: the raw strip with its annotated beats (time order)."""
    ecg = read_record(mitdb / record)
    lo, hi = int(start_s * ecg.fs_hz), int(stop_s * ecg.fs_hz)
    classes = classes_of(ecg.ann_symbols)
    keep = (classes >= 0) & (ecg.ann_samples >= lo) & (ecg.ann_samples < hi)
    np.savez(path, signal=ecg.signal[lo:hi], fs=ecg.fs_hz, r_samples=ecg.ann_samples[keep] - lo, labels=classes[keep])
    return path


def errors(model: TrainableModel, weights: np.ndarray, data: LocalData) -> int:
    model.set_weights(weights)
    return int(np.sum(model.probabilities(data.beat, data.log_rr).argmax(axis=1) != data.label))


@pytest.fixture(scope="module")
def wearer(exported, mitdb, tmp_path_factory):
    """Record 232 (sinus bradycardia with runs of S beats): its first 5 minutes labelled, the next 10 to test on."""
    tmp = tmp_path_factory.mktemp("wearer")
    manifest = Manifest.read(exported[1] / "manifest.json")
    first = labelled_strip(mitdb, "232", 0.0, LABELLED_S, tmp / "first.npz")
    later = labelled_strip(mitdb, "232", LABELLED_S, 3 * LABELLED_S, tmp / "later.npz")
    return first, LocalData.load(first, manifest.beat_spec), LocalData.load(later, manifest.beat_spec), manifest


def test_personal_model_helps_its_wearer_and_round_trips_through_infer(exported, wearer, mitdb, tmp_path):
    _, export, _ = exported
    first, _, later, manifest = wearer
    run = device("personalize", "--model", str(export), "--data", str(first), "--out", str(tmp_path / "personal"), "--json")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["kept"] == "personal" and report["epochs"] >= 1 and report["held_back_errors_personal"] <= report["held_back_errors_global"]
    personal = tmp_path / "personal"
    assert personal.is_symlink()
    record = json.loads((personal / PERSONAL_FILE).read_text())
    assert record["base_model_version"] == manifest.model_version and record["data"]["beats"] == report["beats"] > 250
    assert record["recipe"]["learning_rate"] == PersonalizationRecipe().learning_rate
    # on beats after the labelled minutes, the wearer's own model makes fewer mistakes than the global one
    model = TrainableModel(export / "model_train.tflite")
    global_weights = model.get_weights()
    personal_weights = np.load(personal / "weights.npy")
    assert errors(model, personal_weights, later) < errors(model, global_weights, later)
    # infer --model personal/ classifies with the personal weights, as with an export
    strip = read_record(mitdb / "232").signal[int(400 * 360) : int(430 * 360)]
    np.save(tmp_path / "strip.npy", strip)
    inferred = device("infer", "--model", str(personal), "--ecg", str(tmp_path / "strip.npy"), "--fs", "360")
    assert inferred.returncode == 0, inferred.stderr
    beats = json.loads(inferred.stdout)["beats"]
    assert len(beats) >= 15 and {b["class"] for b in beats} <= {"N", "S", "V", "F", "Q"}
    expected = classify_strip(strip, 360.0, manifest.beat_spec, PersonalClassifier(personal))
    assert [b["class"] for b in beats] == [CLASS_NAMES[c] for c in expected.classes]
    global_beats = json.loads(device("infer", "--model", str(export), "--ecg", str(tmp_path / "strip.npy"), "--fs", "360").stdout)["beats"]
    assert [b["class"] for b in global_beats] != [b["class"] for b in beats]  # the global model misreads this wearer's S runs


def test_a_failed_personalisation_leaves_the_previous_personal_model(exported, wearer, mitdb, tmp_path):
    _, export, _ = exported
    first = wearer[0]
    out = tmp_path / "personal"
    assert device("personalize", "--model", str(export), "--data", str(first), "--out", str(out)).returncode == 0
    target, record = out.resolve(), (out / PERSONAL_FILE).read_text()
    short = labelled_strip(mitdb, "232", 0.0, 30.0, tmp_path / "short.npz")
    wrong_shape = tmp_path / "wrong_shape.npz"
    np.savez(wrong_shape, beat=np.zeros((100, 50, 1), np.float32), log_rr=np.zeros((100, 8), np.float32), label=np.zeros(100, np.int32))
    with np.load(first) as data:
        bad_labels = tmp_path / "bad_labels.npz"
        np.savez(bad_labels, **{**dict(data), "labels": np.full(len(data["labels"]), 7)})
    huge = tmp_path / "huge.npz"  # finite beats that drive SGD to non-finite weights
    np.savez(huge, beat=wearer[1].beat * np.float32(1e30), log_rr=wearer[1].log_rr * np.float32(1e30), label=wearer[1].label)
    cases = ((short, (), "personalisation needs at least"), (wrong_shape, (), "the model takes"), (bad_labels, (), "class indices"),
             (huge, ("--moving-layers", "all", "--learning-rate", "1"), "non-finite weights"))
    for data, flags, message in cases:
        run = device("personalize", "--model", str(export), "--data", str(data), "--out", str(out), *flags)
        assert run.returncode == 2 and message in run.stderr and "Traceback" not in run.stderr
        assert out.resolve() == target and (out / PERSONAL_FILE).read_text() == record
    refused = device("personalize", "--model", str(out), "--data", str(first), "--out", str(tmp_path / "again"))
    assert refused.returncode == 2 and "is a personal model" in refused.stderr
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".personal.") and p != target]
    assert leftovers == []


def test_a_crash_while_writing_leaves_the_previous_model(exported, wearer, tmp_path, monkeypatch):
    from edge_runtime import personal_model

    _, export, _ = exported
    first, data, _, manifest = wearer
    out = tmp_path / "personal"
    model = TrainableModel(export / "model_train.tflite")
    result = personalize(model, model.get_weights(), data, base_class_weights=np.array(manifest.class_weights, np.float32), layout=manifest.layout)
    personal_model.write_personal_model(out, export, data, PersonalizationRecipe(), result)
    before = (out / "weights.npy").read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(personal_model.np, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        personal_model.write_personal_model(out, export, data, PersonalizationRecipe(learning_rate=0.1), result)
    assert (out / "weights.npy").read_bytes() == before
    assert len([p for p in tmp_path.iterdir() if p.name.startswith(".personal.")]) == 1  # only the live target


def test_fine_tuning_that_hurts_the_held_back_beats_keeps_the_global_model(exported, wearer):
    _, export, _ = exported
    _, data, _, manifest = wearer
    model = TrainableModel(export / "model_train.tflite")
    global_weights = model.get_weights()
    recipe = PersonalizationRecipe(max_epochs=4, learning_rate=0.2)
    cut = int(round(len(data) * (1 - recipe.held_back_fraction)))
    mislabelled = LocalData(data.beat, data.log_rr, np.concatenate([np.full(cut, 2, np.int32), data.label[cut:]]))  # all "V" before the held-back slice
    result = personalize(model, global_weights, mislabelled, base_class_weights=np.array(manifest.class_weights, np.float32), layout=manifest.layout, recipe=recipe)
    assert result.kept == "global" and np.array_equal(result.weights, global_weights)


def test_only_the_chosen_layers_move(exported, wearer):
    _, export, _ = exported
    _, data, _, manifest = wearer
    model = TrainableModel(export / "model_train.tflite")
    global_weights = model.get_weights()
    result = personalize(model, global_weights, data, base_class_weights=np.array(manifest.class_weights, np.float32), layout=manifest.layout,
                         recipe=PersonalizationRecipe(moving_layers="dense", max_epochs=2))
    sizes = [int(np.prod(shape)) for _, shape in manifest.layout]
    parts = np.split(model.get_weights() if result.kept == "global" else result.weights, np.cumsum(sizes)[:-1])
    start = np.split(global_weights, np.cumsum(sizes)[:-1])
    moved = {name: not np.array_equal(p, s) for (name, _), p, s in zip(manifest.layout, parts, start)}
    assert not any(moved[name] for name in moved if name.startswith("conv"))
    assert any(moved[name] for name in moved if name.startswith(("hidden", "logits")))


def test_federated_updates_start_from_the_global_model_not_the_personal_one(exported, wearer, tmp_path):
    """The watch's interpreter that personalised is the one that trains for the federation:
    the update must equal a fresh device's, and `train` refuses a personal model directory."""
    _, export, _ = exported
    first, data, _, manifest = wearer
    model = TrainableModel(export / "model_train.tflite")
    global_weights = model.get_weights()
    result = personalize(model, global_weights, data, base_class_weights=np.array(manifest.class_weights, np.float32), layout=manifest.layout)
    assert result.kept == "personal" and not np.array_equal(result.weights, global_weights)
    config = LocalTrainingConfig(epochs=1, learning_rate=0.1, momentum=0.9)
    kwargs = dict(beat=data.beat, log_rr=data.log_rr, label=data.label, class_weights=np.array(manifest.class_weights, np.float32), config=config)
    after_personal, _ = train_locally(model, global_weights, **kwargs)
    fresh, _ = train_locally(TrainableModel(export / "model_train.tflite"), global_weights, **kwargs)
    assert np.array_equal(after_personal, fresh)
    out = tmp_path / "personal"
    assert device("personalize", "--model", str(export), "--data", str(first), "--out", str(out)).returncode == 0
    refused = device("train", "--model", str(out), "--data", str(first), "--token", "t", "--out", str(tmp_path / "p.bin"), "--state-dir", str(tmp_path))
    assert refused.returncode == 2 and "is a personal model" in refused.stderr and not (tmp_path / "p.bin").exists()


def test_a_class_the_labelled_minutes_lack_is_called_where_and_only_where_the_global_model_calls_it():
    eye = np.eye(5, dtype=np.float32)
    global_calls, personal_calls = eye[[1, 0, 2, 0]], eye[[0, 0, 0, 1]]  # global: S N V N; personal: N N N S
    learned = ("N", "V")  # the wearer's first minutes held N and V beats only
    # the global S call stands; the personal S call on the last beat (global N) is not the
    # personal model's to make: its best learned class (N) stands instead
    assert combined_classes(global_calls, personal_calls, learned).tolist() == [1, 0, 0, 0]


def test_personalisation_never_adds_a_call_of_a_class_the_wearer_never_showed():
    rng = np.random.default_rng(0)
    global_probabilities, personal_probabilities = rng.dirichlet(np.ones(5), 500), rng.dirichlet(np.ones(5), 500)
    learned = ("N", "S")
    calls = combined_classes(global_probabilities, personal_probabilities, learned)
    global_calls = global_probabilities.argmax(axis=1)
    for c in (2, 3, 4):  # V, F, Q: never in the labelled minutes
        assert np.array_equal(calls == c, global_calls == c)
    assert np.any(personal_probabilities.argmax(axis=1) != calls)  # the personal model's own argmax differs: the rule bites


def test_a_calibrated_unseen_class_keeps_only_global_calls_above_its_false_calls_on_the_labelled_minutes():
    eye = np.eye(5, dtype=np.float32)
    global_probabilities = np.array([[0.3, 0.7, 0, 0, 0], [0.05, 0.95, 0, 0, 0], [0.2, 0.1, 0.7, 0, 0]], np.float32)  # S, S, V
    personal_probabilities = np.array([[0.4, 0.5, 0.1, 0, 0], [0.9, 0.1, 0, 0, 0], [0.1, 0.1, 0.8, 0, 0]], np.float32)
    learned = ("N", "V")
    assert combined_classes(global_probabilities, personal_probabilities, learned).tolist() == [1, 1, 2]
    # the labelled N/V beats held a global S call at 0.8: S at 0.7 is doubted and falls to the personal model's best
    # learned class (N, although the personal model's own argmax is S); S at 0.95 stands
    assert combined_classes(global_probabilities, personal_probabilities, learned, {"S": 0.8}).tolist() == [0, 1, 2]
    assert combined_classes(eye[[1]], eye[[1]], learned, {"S": 1.0}).tolist() == [0]


def test_only_a_systematic_false_call_of_an_unseen_class_raises_its_threshold():
    normal = np.tile(np.array([[0.9, 0.1, 0, 0, 0]], np.float32), (100, 1))
    one_odd_beat = normal.copy()
    one_odd_beat[0] = [0.2, 0.8, 0, 0, 0]  # 1 % of the labelled beats called S: an outlier, no threshold
    assert unseen_thresholds(one_odd_beat, ("S", "F")) == {}
    biased = normal.copy()
    biased[:6] = [0.4, 0.6, 0, 0, 0]
    biased[6] = [0.3, 0.7, 0, 0, 0]  # 7 % called S: S calls must beat 0.7
    assert unseen_thresholds(biased, ("S", "F")) == {"S": pytest.approx(0.7)}


def test_calibrated_s_lets_the_personal_model_decide_every_absent_class_but_s(exported, wearer):
    _, export, _ = exported
    _, first, _, manifest = wearer
    normal_only = first.rows(first.label == CLASS_NAMES.index("N"))  # a wearer whose labelled minutes hold no ectopic beat
    model = TrainableModel(export / "model_train.tflite")
    global_weights = model.get_weights()
    base = dict(base_class_weights=np.array(manifest.class_weights, np.float32), layout=manifest.layout)
    per_class = personalize(model, global_weights, normal_only, recipe=PersonalizationRecipe(max_epochs=2, unseen_classes="calibrated S"), **base)
    assert per_class.personal_classes == ("N", "V", "F", "Q") and set(per_class.unseen_thresholds) <= {"S"}
    calibrated = personalize(model, global_weights, normal_only, recipe=PersonalizationRecipe(max_epochs=2, unseen_classes="calibrated"), **base)
    assert calibrated.personal_classes == ("N",) and set(calibrated.unseen_thresholds) <= {"S", "V", "F"}


def test_kept_on_fewer_errors_the_held_back_beats_must_show_a_gain(exported, wearer):
    _, export, _ = exported
    _, first, _, manifest = wearer
    model = TrainableModel(export / "model_train.tflite")
    global_weights = model.get_weights()
    base = dict(base_class_weights=np.array(manifest.class_weights, np.float32), layout=manifest.layout)
    outcomes = []
    for data in (first, first.rows(first.label == CLASS_NAMES.index("N"))):
        lenient = personalize(model, global_weights, data, recipe=PersonalizationRecipe(max_epochs=3), **base)
        strict = personalize(model, global_weights, data, recipe=PersonalizationRecipe(max_epochs=3, keep="fewer errors"), **base)
        assert (strict.held_back_errors_global, strict.held_back_errors_personal) == (lenient.held_back_errors_global, lenient.held_back_errors_personal)
        assert (strict.kept == "personal") == (strict.epochs > 0 and strict.held_back_errors_personal < strict.held_back_errors_global)
        assert strict.kept == "personal" or np.array_equal(strict.weights, global_weights)
        outcomes.append((lenient.kept, strict.kept))
    assert ("personal", "global") in outcomes  # a tie on the held-back beats: only the lenient rule switches


def test_personalize_keep_flag_reaches_the_recipe_and_the_record(exported, wearer, tmp_path):
    _, export, _ = exported
    _, first, _, _ = wearer
    normal_only = first.rows(first.label == CLASS_NAMES.index("N"))
    np.savez(tmp_path / "normal.npz", beat=normal_only.beat, log_rr=normal_only.log_rr, label=normal_only.label)
    runs = {keep: device("personalize", "--model", str(export), "--data", str(tmp_path / "normal.npz"), "--out", str(tmp_path / keep.replace(" ", "_")),
                         "--epochs", "3", "--keep", keep, "--json") for keep in ("no worse", "fewer errors")}
    assert all(run.returncode == 0 for run in runs.values()), [run.stderr for run in runs.values()]
    reports = {keep: json.loads(run.stdout) for keep, run in runs.items()}
    assert reports["no worse"]["held_back_errors_personal"] == reports["fewer errors"]["held_back_errors_personal"] == reports["fewer errors"]["held_back_errors_global"] == 0
    assert (reports["no worse"]["kept"], reports["fewer errors"]["kept"]) == ("personal", "global")  # a 0/0 tie proves nothing
    assert json.loads((tmp_path / "fewer_errors" / PERSONAL_FILE).read_text())["recipe"]["keep"] == "fewer errors"
    bad = device("personalize", "--model", str(export), "--data", str(tmp_path / "normal.npz"), "--out", str(tmp_path / "x"), "--keep", "sometimes")
    assert bad.returncode == 2 and "--keep" in bad.stderr
