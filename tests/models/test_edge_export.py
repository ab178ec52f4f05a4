"""Export for devices: builtin ops only, the TFLite train step equals Keras's, int8 agrees with fp32."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf
from tflite_runtime.interpreter import Interpreter

from datasets.loading import load_split
from edge_runtime.interpreter import Int8Classifier, TrainableModel
from edge_runtime.manifest import Manifest
from edge_runtime.identity import update_key
from edge_runtime.payload import decode_update
from models.beat_classifier import WeightedCrossEntropy, build_beat_classifier, class_weights
from models.export import export_for_devices
from simulation.beat_data import model_inputs
from tests.conftest import device


@pytest.mark.parametrize("name", ["model_train.tflite", "model_int8.tflite"])
def test_every_op_is_a_builtin(exported, name):
    _, out, _ = exported
    interpreter = Interpreter(model_path=str(out / name))
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert ops and not {op for op in ops if op.startswith("Flex") or op == "CUSTOM"}, ops


def test_train_step_matches_keras_gradient_tape(exported):
    # Prepare: same weights, same batch, SGD with momentum over two steps
    model, out, train = exported
    keras_model = tf.keras.models.clone_model(model)
    keras_model.set_weights(model.get_weights())
    device = TrainableModel(out / "model_train.tflite")
    beat, log_rr = model_inputs(train, slice(0, 48))
    label = train.labels[:48].astype(np.int32)
    weights = class_weights(train.labels)
    optimizer = tf.keras.optimizers.SGD(0.1, momentum=0.9)
    loss_fn = WeightedCrossEntropy(weights)
    for step in range(2):
        # Execute
        device_loss = device.train_step(beat, log_rr, label, weights[label], learning_rate=0.1, momentum=0.9)
        with tf.GradientTape() as tape:
            keras_loss = loss_fn(label, keras_model((beat, log_rr)))
        optimizer.apply_gradients(zip(tape.gradient(keras_loss, keras_model.trainable_weights), keras_model.trainable_weights))
        # Assert
        assert device_loss == pytest.approx(float(keras_loss), abs=1e-5)
    expected = np.concatenate([w.numpy().ravel() for w in keras_model.trainable_weights])
    np.testing.assert_allclose(device.get_weights(), expected, atol=1e-5)


def test_weights_round_trip_and_dynamic_batch(exported):
    _, out, train = exported
    device = TrainableModel(out / "model_train.tflite")
    original = device.get_weights()
    device.set_weights(original * 0.5)
    np.testing.assert_array_equal(device.get_weights(), original * 0.5)
    for batch in (1, 7, 64):
        beat, log_rr = model_inputs(train, slice(0, batch))
        assert device.probabilities(beat, log_rr).shape == (batch, 5)


def test_manifest_describes_the_exported_model(exported):
    model, out, _ = exported
    manifest = Manifest.read(out / "manifest.json")
    assert manifest.parameters == model.count_params() == TrainableModel(out / "model_train.tflite").get_weights().size
    assert manifest.class_names == ("N", "S", "V", "F", "Q")
    # The int8 file really holds int8 weights (a silent float fallback would keep float32 kernels)
    from tflite_runtime.interpreter import Interpreter

    details = Interpreter(model_path=str(out / "model_int8.tflite")).get_tensor_details()
    kernels = [d for d in details if len(d["shape"]) >= 2 and np.prod(d["shape"]) >= 64 and d["name"].count("/") >= 1]
    quantized = sum(int(np.prod(d["shape"])) for d in kernels if d["dtype"] == np.int8)
    floating = sum(int(np.prod(d["shape"])) for d in kernels if d["dtype"] == np.float32)
    assert quantized >= 0.9 * manifest.parameters and floating < 0.05 * manifest.parameters


def test_int8_agrees_with_fp32_on_test_beats(exported):
    model, out, train = exported
    beat, log_rr = model_inputs(train, slice(0, 1500))
    fp32 = model.predict((beat, log_rr), verbose=0).argmax(axis=1)
    int8 = Int8Classifier(out / "model_int8.tflite").logits(beat, log_rr).argmax(axis=1)
    assert np.mean(fp32 == int8) >= 0.98


def test_device_selftest_trains_without_tensorflow(exported):
    _, out, _ = exported
    result = device("selftest", "--model", str(out / "model_train.tflite"), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["tensorflow_imported"] is False and report["weights_roundtrip_exact"] is True
    assert report["steps"] >= 4 and report["loss_last"] < report["loss_first"]


def test_device_trains_on_a_strip_and_the_server_accepts_its_payload(exported, synthetic_dir, tmp_path):
    # Prepare: one labelled 60 s strip of a synthetic subject, as a device would hold it
    import wfdb

    from edge_runtime.aami import classes_of

    _, out, _ = exported
    record, annotation = wfdb.rdrecord(str(synthetic_dir / "syn001"), sampto=360 * 60), wfdb.rdann(str(synthetic_dir / "syn001"), "atr", sampto=360 * 60)
    labels = classes_of(annotation.symbol)
    np.savez(tmp_path / "local.npz", signal=record.p_signal[:, 0], fs=360.0, r_samples=annotation.sample, labels=labels)
    # Execute
    result = device("train", "--model", str(out), "--data", str(tmp_path / "local.npz"), "--codec", "rotated1bit",
                    "--state-dir", str(tmp_path / "state"), "--out", str(tmp_path / "update.bin"), "--round", "3", "--token", "watch-7")
    # Assert
    assert result.returncode == 0, result.stderr
    manifest = Manifest.read(out / "manifest.json")
    payload, update = decode_update(
        (tmp_path / "update.bin").read_bytes(), key=update_key("watch-7"), layout_hash=manifest.layout_hash, length=manifest.parameters, max_norm=100.0,
    )
    assert payload.round_id == 3 and np.linalg.norm(update) > 0
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["residual.npz"]  # what the next run reads back


def test_device_cli_bad_input_is_one_line(exported, tmp_path):
    _, out, _ = exported
    np.save(tmp_path / "strip.npy", np.zeros((10, 2)))
    result = device("infer", "--model", str(out), "--ecg", str(tmp_path / "strip.npy"), "--fs", "250")
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0
    assert "need a finite 1-D signal" in result.stderr


@pytest.mark.slow
def test_int8_agrees_with_fp32_on_real_ds2_beats(mitdb, tmp_path):
    # Prepare: a model trained one epoch on pooled MIT-BIH DS1, exported with DS1 calibration beats
    train, test = load_split(mitdb, "DS1"), load_split(mitdb, "DS2")
    beat, log_rr = model_inputs(train)
    weights = class_weights(train.labels)
    model = build_beat_classifier(seed=0)
    model.compile(optimizer=tf.keras.optimizers.SGD(0.02), loss=WeightedCrossEntropy(weights))
    model.fit((beat, log_rr), train.labels.astype(np.int32), batch_size=32, epochs=1, verbose=0)
    export_for_devices(model, tmp_path, beats=beat, log_rr=log_rr, class_weights=weights)
    # Execute: every fourth DS2 beat (12k beats, all 22 test patients)
    test_beat, test_rr = model_inputs(test, slice(0, None, 4))
    fp32 = model.predict((test_beat, test_rr), batch_size=4096, verbose=0).argmax(axis=1)
    int8 = Int8Classifier(tmp_path / "model_int8.tflite").logits(test_beat, test_rr).argmax(axis=1)
    # Assert
    assert np.mean(fp32 == int8) >= 0.98


def test_device_infers_a_real_wfdb_record(exported, mitdb):
    _, out, _ = exported
    result = device("infer", "--model", str(out), "--record", str(mitdb / "100"))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)["summary"]
    assert abs(summary["beats_detected"] - 2273) <= 5  # record 100 has 2,273 annotated beats
    assert 70 <= summary["heart_rate_bpm"] <= 80
    assert summary["beats_classified"] == sum(summary["counts"].values()) >= 2260
