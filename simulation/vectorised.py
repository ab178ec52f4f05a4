"""Client-vectorised federated training, composed from TFF's learning templates.

A TFF client here is a *shard* of K watches (``simulation/shards.py``). Its client work
runs every watch's local SGD at once: the global weights are tiled to [K, ...], each step
gathers one batch per watch and takes one gradient step per watch through
``models.stacked_classifier`` (batched matmuls), exactly the per-watch math of
``build_weighted_fed_avg`` (plain SGD, loss averaged over the batch, update = initial -
trained, weight = examples seen), except that an update that is not finite or whose norm
exceeds ``max_update_norm`` is dropped (weight 0), as the coordinator refuses it from a real
device (``accepted_updates``; TFF's plain FedAvg, kept as the reference this path is checked
against, has no such bound). The shard reports the
weighted mean of its watches' updates and their total weight, so TFF's weighted mean over
shards equals the weighted mean over watches.

Compression applies per watch inside the shard (``client_roundtrip``, the codec the device
runs), so the server sees what it would have decoded from each watch. The rest is TFF's:
``build_broadcast_process``, ``MeanFactory``, ``build_apply_optimizer_finalizer`` and
``compose_learning_process``.

    next: <state@SERVER, {shard*}@CLIENTS> -> <state@SERVER, metrics@SERVER>
"""
from __future__ import annotations

import collections

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from edge_runtime.payload import MAX_UPDATE_NORM
from models.stacked_classifier import stacked_logits
from simulation.compression import client_roundtrip, round_counter
from simulation.shards import shard_element_spec


def _train_shard(element: dict, initial: list[tf.Tensor], *, names: list[str], loss_weights: tf.Tensor, learning_rate: float, proximal_strength: float):
    """Local SGD of K watches: (trained [K, ...] per weight, examples seen float32[K], loss sum)."""
    k = tf.shape(element["label"])[0]
    start = [tf.tile(w[None], tf.concat([[k], tf.ones([len(w.shape)], tf.int32)], axis=0)) for w in initial]
    steps = tf.shape(element["order"])[1]

    def step(s, loss_sum, *weights):
        # Each watch's valid positions are a prefix of its batch, so the step only needs as many
        # positions as its fullest watch: a 40-beat watch's second batch holds 8 beats, not 32.
        width = tf.cast(tf.reduce_max(tf.reduce_sum(element["valid"][:, s], axis=1)), tf.int32)
        index, valid = element["order"][:, s, :width], element["valid"][:, s, :width]
        beat = tf.gather(element["beat"], index, batch_dims=1)
        log_rr = tf.gather(element["log_rr"], index, batch_dims=1)
        label = tf.gather(element["label"], index, batch_dims=1)
        with tf.GradientTape() as tape:
            tape.watch(weights)
            logits = stacked_logits(dict(zip(names, weights)), beat, log_rr)
            per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=label, logits=logits)
            per_example *= tf.gather(loss_weights, label) * valid
            per_watch = tf.reduce_sum(per_example, axis=1) / tf.maximum(tf.reduce_sum(valid, axis=1), 1.0)
            total = tf.reduce_sum(per_watch)
        gradients = tape.gradient(total, weights)
        # A watch whose batches ran out takes no step: the data gradient is already 0 there, and
        # the proximal term must be too, else a watch's update depends on its shard mates.
        stepping = tf.cast(tf.reduce_sum(valid, axis=1) > 0, tf.float32)
        updated = []
        for w, g, w0 in zip(weights, gradients, start):
            if proximal_strength:
                g = g + proximal_strength * (w - w0) * tf.reshape(stepping, [-1] + [1] * (len(w.shape) - 1))
            updated.append(w - learning_rate * g)
        return (s + 1, loss_sum + tf.reduce_sum(per_example), *updated)

    _, loss_sum, *trained = tf.while_loop(lambda s, *_: s < steps, step, (tf.constant(0), tf.constant(0.0), *start))
    examples = tf.reduce_sum(element["valid"], axis=[1, 2])
    return start, trained, examples, loss_sum


def accepted_updates(flat: tf.Tensor, examples: tf.Tensor, max_norm: float) -> tuple[tf.Tensor, tf.Tensor]:
    """(updates float32[K, P], weights float32[K]) with every non-finite update, or one of norm
    above ``max_norm``, zeroed and given weight 0. One exploding watch would otherwise carry the
    global model with it (a 16-person FedAvg run went to 1e22 and never came back)."""
    finite = tf.reduce_all(tf.math.is_finite(flat), axis=1)
    safe = tf.where(finite[:, None], flat, 0.0)
    accepted = finite & (tf.norm(safe, axis=1) <= max_norm)
    return tf.where(accepted[:, None], safe, 0.0), tf.where(accepted, examples, 0.0)


def build_shard_client_work(
    weights_type, *, names: list[str], loss_weights: np.ndarray, learning_rate: float, proximal_strength: float = 0.0,
    codec: str | None = None, beat_shape: tuple[int, int], max_update_norm: float = MAX_UPDATE_NORM,
) -> tff.learning.templates.ClientWorkProcess:
    """Client work over shards. State: the round counter (int64@SERVER), which seeds codecs."""
    element_type = tff.types.tensorflow_to_type(shard_element_spec(beat_shape))
    data_type = tff.SequenceType(element_type)
    constant_loss_weights = np.asarray(loss_weights, np.float32)

    @tff.tensorflow.computation(tf.int64, weights_type, data_type)
    def train(round_index, model_weights, dataset):
        initial = list(model_weights.trainable)
        zeros = tuple(tf.zeros_like(w) for w in initial)

        def add_shard(accumulated, element):
            weighted_sum, weight_sum, loss_sum, example_sum = accumulated
            start, trained, examples, loss = _train_shard(
                element, initial, names=names, loss_weights=tf.constant(constant_loss_weights),
                learning_rate=learning_rate, proximal_strength=proximal_strength,
            )
            k = tf.shape(examples)[0]
            flat = tf.concat([tf.reshape(w0 - w, [k, int(np.prod(w0.shape[1:]))]) for w0, w in zip(start, trained)], axis=1)
            flat, weight = accepted_updates(flat, examples, max_update_norm)
            if codec is not None:
                flat = tf.map_fn(lambda row: client_roundtrip(codec, row, round_index), flat)
            summed = tf.reduce_sum(flat * weight[:, None], axis=0)
            parts = tf.split(summed, [int(np.prod(w.shape)) for w in initial])
            weighted_sum = tuple(a + tf.reshape(p, w.shape) for a, p, w in zip(weighted_sum, parts, initial))
            return weighted_sum, weight_sum + tf.reduce_sum(weight), loss_sum + loss, example_sum + tf.reduce_sum(examples)

        weighted_sum, weight_sum, loss_sum, example_sum = dataset.reduce(
            (zeros, tf.constant(0.0), tf.constant(0.0), tf.constant(0.0)), add_shard
        )
        update = [tf.math.divide_no_nan(s, weight_sum) for s in weighted_sum]
        result = tff.learning.templates.ClientResult(update=update, update_weight=weight_sum)
        return result, collections.OrderedDict(loss_sum=loss_sum, examples=example_sum)

    first_round, increment = round_counter()

    @tff.tensorflow.computation(collections.OrderedDict(loss_sum=tf.float32, examples=tf.float32))
    def mean_loss(totals):
        return collections.OrderedDict(loss=tf.math.divide_no_nan(totals["loss_sum"], totals["examples"]))

    @tff.federated_computation
    def initialize():
        return tff.federated_eval(first_round, tff.SERVER)

    @tff.federated_computation(
        initialize.type_signature.result,
        tff.FederatedType(weights_type, tff.CLIENTS),
        tff.FederatedType(data_type, tff.CLIENTS),
    )
    def next_fn(state, model_weights, shards):
        result, totals = tff.federated_map(train, (tff.federated_broadcast(state), model_weights, shards))
        train_metrics = tff.federated_map(mean_loss, tff.federated_sum(totals))
        measurements = tff.federated_zip(collections.OrderedDict(train=train_metrics))
        return tff.templates.MeasuredProcessOutput(tff.federated_map(increment, state), result, measurements)

    return tff.learning.templates.ClientWorkProcess(initialize, next_fn)


def build_vectorised_process(
    *, initial_weights: list[np.ndarray], names: list[str], loss_weights: np.ndarray, client_learning_rate: float,
    server_optimizer: tff.learning.optimizers.Optimizer, proximal_strength: float = 0.0, codec: str | None = None, beat_shape: tuple[int, int],
    aggregator: tff.aggregators.WeightedAggregationFactory | None = None, max_update_norm: float = MAX_UPDATE_NORM,
) -> tff.learning.templates.LearningProcess:
    """FedAvg / FedProx / FedAdam (by ``server_optimizer`` and ``proximal_strength``) over shards.

    ``aggregator`` replaces the float64 weighted mean (DP, secure aggregation: shards of one watch).
    """

    @tff.tensorflow.computation
    def initial_model_weights():
        return tff.learning.models.ModelWeights(trainable=[tf.constant(w) for w in initial_weights], non_trainable=[])

    weights_type = initial_model_weights.type_signature.result
    client_work = build_shard_client_work(
        weights_type, names=names, loss_weights=loss_weights, learning_rate=client_learning_rate,
        proximal_strength=proximal_strength, codec=codec, beat_shape=beat_shape, max_update_norm=max_update_norm,
    )
    return tff.learning.templates.compose_learning_process(
        initial_model_weights,
        tff.learning.templates.build_broadcast_process(weights_type),
        client_work,
        (aggregator or Float64MeanFactory()).create(weights_type.trainable, tff.TensorType(np.float32)),
        tff.learning.templates.build_apply_optimizer_finalizer(server_optimizer, weights_type),
    )


class Float64MeanFactory(tff.aggregators.WeightedAggregationFactory):
    """Weighted mean accumulated in float64, result cast back to the values' float32.

    Summation order then does not show in the float32 result, so one worker and several
    (TFF's mergeable context adds partial sums per worker) give the same model bit for bit.
    """

    def create(self, value_type, weight_type) -> tff.templates.AggregationProcess:
        wide_value = tff.types.tensorflow_to_type(tf.nest.map_structure(lambda t: tf.TensorSpec(t.shape, tf.float64), tff.types.type_to_tf_tensor_specs(value_type)))
        inner = tff.aggregators.MeanFactory().create(wide_value, tff.TensorType(np.float64))

        @tff.tensorflow.computation(value_type, weight_type)
        def widen(value, weight):
            return tf.nest.map_structure(lambda t: tf.cast(t, tf.float64), value), tf.cast(weight, tf.float64)

        @tff.tensorflow.computation(wide_value)
        def narrow(value):
            return tf.nest.map_structure(lambda t: tf.cast(t, tf.float32), value)

        @tff.federated_computation(inner.initialize.type_signature.result, tff.FederatedType(value_type, tff.CLIENTS), tff.FederatedType(weight_type, tff.CLIENTS))
        def next_fn(state, value, weight):
            wide, wide_weight = tff.federated_map(widen, (value, weight))
            output = inner.next(state, wide, wide_weight)
            return tff.templates.MeasuredProcessOutput(output.state, tff.federated_map(narrow, output.result), output.measurements)

        return tff.templates.AggregationProcess(inner.initialize, next_fn)
