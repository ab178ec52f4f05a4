"""The beat classifier re-expressed with TFLite builtin ops only, forward and backward.

Stock ``tflite-runtime`` has no Flex delegate, so the Keras train step (FlexReluGrad,
Conv2DBackpropFilter, MaxPoolGrad) cannot run on a device. Here every op of inference and
of one SGD-with-momentum step is a TFLite builtin: Conv1D is im2col (``tf.gather`` with a
constant index) and a matmul; its input gradient gathers the zero-padded output gradient
and multiplies by the flipped kernel; ReLU's gradient is a mask multiply; max-pool is a
reshape + ``reduce_max`` with an ``argmax``/``one_hot`` mask for the gradient; weights
and momentum are resource variables. The weights are those of
``models.beat_classifier.build_beat_classifier`` in ``LAYOUT`` order.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from edge_runtime.aami import NUM_CLASSES
from edge_runtime.beats import RR_FEATURE_NAMES, BeatSpec

CONVOLUTIONS = (("conv1", 7), ("conv2", 5), ("conv3", 5))


def weight_layout(model: tf.keras.Model) -> list[tuple[str, tuple[int, ...]]]:
    """[(name, shape)] of the trainable weights, the order of every flat weight vector."""
    return [(w.name.split(":")[0], tuple(int(d) for d in w.shape)) for w in model.trainable_weights]


def _frame_index(length: int, kernel: int) -> np.ndarray:
    """index[l, j] = l + j: the padded positions under kernel tap j at output l."""
    return np.arange(length)[:, None] + np.arange(kernel)[None, :]


def _im2col(x: tf.Tensor, kernel: int) -> tf.Tensor:
    """x [B, L, C] -> frames [B * L, kernel * C] for a 'same', stride-1 convolution."""
    pad = (kernel - 1) // 2
    length, channels = x.shape[1], x.shape[2]
    padded = tf.pad(x, [[0, 0], [pad, pad], [0, 0]])
    frames = tf.gather(padded, tf.constant(_frame_index(length, kernel), tf.int32), axis=1)
    return tf.reshape(frames, [-1, kernel * channels])


class EdgeTrainableClassifier(tf.Module):
    """Signatures ``infer``, ``train``, ``get_weights`` and ``set_weights`` over resource variables."""

    def __init__(self, model: tf.keras.Model, spec: BeatSpec = BeatSpec()):
        super().__init__(name="edge_classifier")
        self.spec = spec
        self.layout = weight_layout(model)
        self.weights = {name: tf.Variable(value, name=name.replace("/", "_")) for (name, _), value in zip(self.layout, model.get_weights())}
        self.velocity = {name: tf.Variable(tf.zeros(shape), name=name.replace("/", "_") + "_v") for name, shape in self.layout}
        self.sizes = [int(np.prod(shape)) for _, shape in self.layout]

    def _forward(self, beat: tf.Tensor, log_rr: tf.Tensor) -> tuple[tf.Tensor, dict]:
        w = {name: v.read_value() for name, v in self.weights.items()}
        cache: dict = {"w": w}
        x = beat
        for i, (name, kernel) in enumerate(CONVOLUTIONS):
            frames = _im2col(x, kernel)
            cols = kernel * x.shape[2]
            z = tf.reshape(tf.matmul(frames, tf.reshape(w[f"{name}/kernel"], [cols, -1])) + w[f"{name}/bias"], [-1, x.shape[1], w[f"{name}/bias"].shape[0]])
            a = tf.nn.relu(z)
            cache[name] = (x, frames, a)
            if i < len(CONVOLUTIONS) - 1:
                pairs = tf.reshape(a, [-1, a.shape[1] // 2, 2, a.shape[2]])
                cache[name + "_pool"] = pairs
                x = tf.reduce_max(pairs, axis=2)
            else:
                x = a
        pooled = tf.reduce_mean(x, axis=1)
        rr = tf.nn.relu(tf.matmul(log_rr, w["rr_dense/kernel"]) + w["rr_dense/bias"])
        joined = tf.concat([pooled, rr], axis=1)
        hidden = tf.nn.relu(tf.matmul(joined, w["hidden/kernel"]) + w["hidden/bias"])
        logits = tf.matmul(hidden, w["logits/kernel"]) + w["logits/bias"]
        cache.update(log_rr=log_rr, rr=rr, joined=joined, hidden=hidden)
        return logits, cache

    def _gradients(self, logits: tf.Tensor, cache: dict, label: tf.Tensor, weight: tf.Tensor) -> tuple[tf.Tensor, dict]:
        w = cache["w"]
        batch = tf.cast(tf.shape(logits)[0], tf.float32)
        onehot = tf.one_hot(label, NUM_CLASSES)
        log_probs = tf.nn.log_softmax(logits)
        loss = tf.reduce_sum(-tf.reduce_sum(onehot * log_probs, axis=1) * weight) / batch
        d_logits = (tf.exp(log_probs) - onehot) * weight[:, None] / batch
        grads: dict = {}

        def dense(name: str, inputs: tf.Tensor, d_out: tf.Tensor) -> tf.Tensor:
            grads[f"{name}/kernel"] = tf.matmul(inputs, d_out, transpose_a=True)
            grads[f"{name}/bias"] = tf.reduce_sum(d_out, axis=0)
            return tf.matmul(d_out, w[f"{name}/kernel"], transpose_b=True)

        d_hidden = dense("logits", cache["hidden"], d_logits) * tf.cast(cache["hidden"] > 0, tf.float32)
        d_joined = dense("hidden", cache["joined"], d_hidden)
        channels = w["conv3/bias"].shape[0]
        d_pooled, d_rr = d_joined[:, :channels], d_joined[:, channels:]
        dense("rr_dense", cache["log_rr"], d_rr * tf.cast(cache["rr"] > 0, tf.float32))

        _, _, last = cache["conv3"]
        d_x = tf.tile(d_pooled[:, None, :] / last.shape[1], [1, last.shape[1], 1])
        for i in reversed(range(len(CONVOLUTIONS))):
            name, kernel = CONVOLUTIONS[i]
            x, frames, a = cache[name]
            if i < len(CONVOLUTIONS) - 1:  # through the max-pool that followed this convolution
                pairs = cache[name + "_pool"]
                mask = tf.one_hot(tf.argmax(pairs, axis=2), 2, axis=2)
                d_x = tf.reshape(mask * d_x[:, :, None, :], [-1, a.shape[1], a.shape[2]])
            d_z = d_x * tf.cast(a > 0, tf.float32)
            cout = a.shape[2]
            flat_dz = tf.reshape(d_z, [-1, cout])
            grads[f"{name}/kernel"] = tf.reshape(tf.matmul(frames, flat_dz, transpose_a=True), w[f"{name}/kernel"].shape)
            grads[f"{name}/bias"] = tf.reduce_sum(flat_dz, axis=0)
            if i > 0:
                flipped = tf.transpose(tf.reverse(w[f"{name}/kernel"], axis=[0]), [0, 2, 1])
                d_x = tf.reshape(tf.matmul(_im2col(d_z, kernel), tf.reshape(flipped, [kernel * cout, -1])), [-1, x.shape[1], x.shape[2]])
        return loss, grads

    def _input_signature(self) -> list[tf.TensorSpec]:
        return [
            tf.TensorSpec([None, *self.spec.beat_shape], tf.float32, name="beat"),
            tf.TensorSpec([None, len(RR_FEATURE_NAMES)], tf.float32, name="log_rr"),
        ]

    def signatures(self) -> dict:
        """The concrete functions to export, keyed by signature name."""
        beat_spec, rr_spec = self._input_signature()

        @tf.function(input_signature=[beat_spec, rr_spec])
        def infer(beat, log_rr):
            logits, _ = self._forward(beat, log_rr)
            return {"logits": logits, "probabilities": tf.nn.softmax(logits)}

        @tf.function(input_signature=[
            beat_spec, rr_spec, tf.TensorSpec([None], tf.int32, name="label"), tf.TensorSpec([None], tf.float32, name="weight"),
            tf.TensorSpec([], tf.float32, name="learning_rate"), tf.TensorSpec([], tf.float32, name="momentum"),
        ])
        def train(beat, log_rr, label, weight, learning_rate, momentum):
            logits, cache = self._forward(beat, log_rr)
            loss, grads = self._gradients(logits, cache, label, weight)
            for name, _ in self.layout:
                velocity = self.velocity[name].assign(momentum * self.velocity[name] + grads[name])
                self.weights[name].assign_sub(learning_rate * velocity)
            return {"loss": loss}

        @tf.function(input_signature=[])
        def get_weights():
            return {"weights": tf.concat([tf.reshape(self.weights[name], [-1]) for name, _ in self.layout], axis=0)}

        @tf.function(input_signature=[tf.TensorSpec([sum(self.sizes)], tf.float32, name="weights")])
        def set_weights(weights):
            for (name, shape), part in zip(self.layout, tf.split(weights, self.sizes)):
                self.weights[name].assign(tf.reshape(part, shape))
                self.velocity[name].assign(tf.zeros(shape))
            return {"ok": tf.constant(True)}

        return {"infer": infer, "train": train, "get_weights": get_weights, "set_weights": set_weights}


def convert_trainable(model: tf.keras.Model, saved_model_dir: str) -> bytes:
    """``model_train.tflite``: all four signatures, TFLITE_BUILTINS only (no Flex)."""
    module = EdgeTrainableClassifier(model)
    tf.saved_model.save(module, saved_model_dir, signatures=module.signatures())
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.experimental_enable_resource_variables = True
    return converter.convert()
