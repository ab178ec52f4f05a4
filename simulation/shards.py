"""A round's reporting watches as shards: one TFF client trains K watches at once.

Both client paths draw each watch's local example order here, from one generator in
reporter order, so the plain per-watch path and the vectorised path see the same batches
and produce the same model (``tests/simulation/test_vectorised.py``).

A shard is one ``tf.data`` element (TFF's composer wants client data as sequences) holding
the watches' own beats once, padded to the largest watch, plus each watch's batch
schedule as local indices:

    beat float32[K, N, window, channels], log_rr float32[K, N, 8], label int32[K, N],
    order int32[K, S, B] (positions into the watch's N beats), valid float32[K, S, B]

``valid`` is 0 on padding: a watch with fewer steps than the longest one simply stops.
"""
from __future__ import annotations

import collections

import numpy as np
import tensorflow as tf

from datasets.beat_table import BeatTable
from edge_runtime.beats import RR_FEATURE_NAMES, rr_model_input


def local_orders(sizes: np.ndarray, *, epochs: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Per watch, ``epochs`` concatenated shuffles of positions 0..n-1 (the batches it trains on)."""
    return [np.concatenate([rng.permutation(int(n)) for _ in range(epochs)]) for n in sizes]


def shard_element_spec(beat_shape: tuple[int, int]) -> collections.OrderedDict[str, tf.TensorSpec]:
    return collections.OrderedDict({
        "beat": tf.TensorSpec([None, None, *beat_shape], tf.float32),
        "log_rr": tf.TensorSpec([None, None, len(RR_FEATURE_NAMES)], tf.float32),
        "label": tf.TensorSpec([None, None], tf.int32),
        "order": tf.TensorSpec([None, None, None], tf.int32),
        "valid": tf.TensorSpec([None, None, None], tf.float32),
    })


def build_shard(table: BeatTable, beats: list[np.ndarray], orders: list[np.ndarray], *, batch_size: int) -> dict[str, np.ndarray]:
    """One shard element from K watches' beat indices (into ``table``) and local orders."""
    k = len(beats)
    n = max(len(b) for b in beats)
    steps = max(-(-len(o) // batch_size) for o in orders)
    element = {
        "beat": np.zeros((k, n, *table.windows.shape[1:]), np.float32),
        "log_rr": np.zeros((k, n, len(RR_FEATURE_NAMES)), np.float32),
        "label": np.zeros((k, n), np.int32),
        "order": np.zeros((k, steps * batch_size), np.int32),
        "valid": np.zeros((k, steps * batch_size), np.float32),
    }
    for i, (index, order) in enumerate(zip(beats, orders)):
        size = len(index)
        element["beat"][i, :size] = table.windows[index]
        element["log_rr"][i, :size] = rr_model_input(table.rr[index])
        element["label"][i, :size] = table.labels[index]
        element["order"][i, : len(order)] = order
        element["valid"][i, : len(order)] = 1.0
    element["order"] = element["order"].reshape(k, steps, batch_size)
    element["valid"] = element["valid"].reshape(k, steps, batch_size)
    return element


def shard_datasets(table: BeatTable, beats: list[np.ndarray], orders: list[np.ndarray], *, batch_size: int, shard_size: int) -> list[tf.data.Dataset]:
    """Watches grouped by size into ceil(count / shard_size) shards of near-equal count.

    The grouping depends on the watches alone (not on how many TFF workers run them), so
    a run's model is the same on one worker or several.
    """
    shards = -(-len(beats) // shard_size)
    by_size = np.argsort([len(b) for b in beats], kind="stable")
    groups = np.array_split(by_size, shards)
    return [
        tf.data.Dataset.from_tensors(collections.OrderedDict(build_shard(table, [beats[i] for i in group], [orders[i] for i in group], batch_size=batch_size)))
        for group in groups
    ]
